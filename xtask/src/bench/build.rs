//! Figure 7 (`cargo xtask bench --build`, slow): the `llama-server`-only build provision runs
//! vs. a full `cmake --build` of the same source, both cold (fresh build dir, empty ccache of
//! their own), same flags; then the `llama-server` build again after wiping its build dir, with
//! its ccache warm.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{ensure, Context, Result};

use super::harness::{expand, steps, text, Provision};

/// Wall and CPU (user + system, of every process the build ran) seconds of one command.
#[derive(Clone, Copy)]
pub struct Took {
    pub wall_s: f64,
    pub cpu_s: f64,
}

pub struct Build {
    pub server: Took,
    pub full: Took,
    pub server_rewarm: Took,
    pub configure_s: f64,
    /// Compilations (ccache misses, hits) of each build.
    pub server_compiles: (u64, u64),
    pub full_compiles: (u64, u64),
    pub rewarm_compiles: (u64, u64),
}

/// (misses, hits) so far in a ccache dir (`ccache --print-stats`).
fn ccache_stats(dir: &Path) -> (u64, u64) {
    let out = Command::new("ccache")
        .arg("--print-stats")
        .env("CCACHE_DIR", dir)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let get = |key: &str| -> u64 {
        out.lines()
            .filter_map(|l| l.split_once('\t'))
            .filter(|(k, _)| *k == key)
            .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
            .sum()
    };
    (
        get("cache_miss"),
        get("direct_cache_hit") + get("preprocessed_cache_hit"),
    )
}

fn minus(a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
    (a.0.saturating_sub(b.0), a.1.saturating_sub(b.1))
}

/// User + system CPU seconds of this process's waited-for descendants so far.
fn children_cpu_s() -> f64 {
    // SAFETY: getrusage writes only into the zeroed struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    s(u.ru_utime) + s(u.ru_stime)
}

/// Run `c`; its wall time and the CPU time of every process it ran (compilers included: ninja
/// and cmake wait for them, so their times reach us through RUSAGE_CHILDREN). CPU time is what
/// a build on a machine shared with other builds can still compare: the wall time there moves
/// with the others' load.
fn run(c: &mut Command) -> Result<Took> {
    let shown = format!("{c:?}");
    let cpu = children_cpu_s();
    let t = Instant::now();
    let out = c.output().with_context(|| format!("running {shown}"))?;
    ensure!(out.status.success(), "{shown} failed:\n{}", text(&out));
    Ok(Took {
        wall_s: t.elapsed().as_secs_f64(),
        cpu_s: children_cpu_s() - cpu,
    })
}

pub fn measure(p: &Provision, config: &Path, runtime: &str, dir: &Path) -> Result<Build> {
    let plan = p.plan(config, runtime)?;
    let configure = steps(&plan, "cmake-configure")
        .next()
        .context("a cmake-configure step")?;
    let source = expand(
        &plan,
        configure["source_dir"].as_str().context("source_dir")?,
    );
    let defines: Vec<String> = configure["defines"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("-D{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let jobs = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .to_string();
    let cmake = |build: &str, ccache: &str| {
        let mut c = Command::new("cmake");
        c.env("CCACHE_DIR", dir.join(ccache))
            .env("CCACHE_BASEDIR", &source)
            .args(["-S", &source, "-B"])
            .arg(dir.join(build))
            .args(["-G", "Ninja"])
            .args(&defines)
            .args([
                "-DCMAKE_C_COMPILER_LAUNCHER=ccache",
                "-DCMAKE_CXX_COMPILER_LAUNCHER=ccache",
            ]);
        c
    };
    let build = |build: &str, ccache: &str, target: Option<&str>| {
        let mut c = Command::new("cmake");
        c.env("CCACHE_DIR", dir.join(ccache))
            .env("CCACHE_BASEDIR", &source)
            .arg("--build")
            .arg(dir.join(build))
            .args(["--parallel", &jobs]);
        if let Some(t) = target {
            c.args(["--target", t]);
        }
        c
    };
    eprintln!("   [7] cold llama-server-only build …");
    let configure_s = run(&mut cmake("server", "ccache-server"))?.wall_s;
    let server = run(&mut build("server", "ccache-server", Some("llama-server")))?;
    let server_compiles = ccache_stats(&dir.join("ccache-server"));
    eprintln!("   [7] cold full build …");
    run(&mut cmake("full", "ccache-full"))?;
    let full = run(&mut build("full", "ccache-full", None))?;
    let full_compiles = ccache_stats(&dir.join("ccache-full"));
    eprintln!("   [7] llama-server again, build dir wiped, ccache warm …");
    std::fs::remove_dir_all(dir.join("server"))?;
    run(&mut cmake("server", "ccache-server"))?;
    let server_rewarm = run(&mut build("server", "ccache-server", Some("llama-server")))?;
    let rewarm_compiles = minus(ccache_stats(&dir.join("ccache-server")), server_compiles);
    let _ = std::fs::remove_dir_all(dir.join("full"));
    Ok(Build {
        server,
        full,
        server_rewarm,
        configure_s,
        server_compiles,
        full_compiles,
        rewarm_compiles,
    })
}
