//! Figure 7 (`cargo xtask bench --build`, slow): the `llama-server`-only build provision runs
//! vs. a full `cmake --build` of the same source, both cold (fresh build dir, empty ccache of
//! their own), same flags; then the `llama-server` build again after wiping its build dir, with
//! its ccache warm.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{ensure, Context, Result};

use super::harness::{expand, steps, text, Provision};

pub struct Build {
    pub server_s: f64,
    pub full_s: f64,
    pub server_rewarm_s: f64,
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

fn run(c: &mut Command) -> Result<f64> {
    let shown = format!("{c:?}");
    let t = Instant::now();
    let out = c.output().with_context(|| format!("running {shown}"))?;
    ensure!(out.status.success(), "{shown} failed:\n{}", text(&out));
    Ok(t.elapsed().as_secs_f64())
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
    let configure_s = run(&mut cmake("server", "ccache-server"))?;
    let server_s = run(&mut build("server", "ccache-server", Some("llama-server")))?;
    let server_compiles = ccache_stats(&dir.join("ccache-server"));
    eprintln!("   [7] cold full build …");
    run(&mut cmake("full", "ccache-full"))?;
    let full_s = run(&mut build("full", "ccache-full", None))?;
    let full_compiles = ccache_stats(&dir.join("ccache-full"));
    eprintln!("   [7] llama-server again, build dir wiped, ccache warm …");
    std::fs::remove_dir_all(dir.join("server"))?;
    run(&mut cmake("server", "ccache-server"))?;
    let server_rewarm_s = run(&mut build("server", "ccache-server", Some("llama-server")))?;
    let rewarm_compiles = minus(ccache_stats(&dir.join("ccache-server")), server_compiles);
    let _ = std::fs::remove_dir_all(dir.join("full"));
    Ok(Build {
        server_s,
        full_s,
        server_rewarm_s,
        configure_s,
        server_compiles,
        full_compiles,
        rewarm_compiles,
    })
}
