//! `cargo xtask bench [--quick] [--build]`: one table of figures, each measured in the same run
//! as its baseline (median of several runs, min–max), on real llama.cpp and the tiny model of
//! the e2e run. See BENCHMARKS.md for the figures, their targets and the last table.
//!
//! - `--quick`: fewer repetitions, a 256 MiB hash file, 3 of figure 9's models at 2 contexts (CI).
//! - `--build`: also figure 7, the cold builds (slow: tens of minutes on 2 cores).
//! - `--only 1,2`: only these figures (`--build --only 7`: the builds alone; `--only 9`: the
//!   memory estimate against the real CPU server, figure 9, alone).
//! - `PROVISION_BENCH_BIN=path`: measure that `provision` binary instead of building one.
//!
//! Exits non-zero when a measurement could not be made or an invariant broke (a warm apply
//! ran a step, digests differ, a handoff is missing); a missed target is reported in the
//! table, not as a failure, so a loaded machine does not fail the run.

mod bounded;
mod build;
mod fit;
mod fit_models;
mod harness;
mod planner;
mod ready;
mod scale;
mod sha;
mod stats;
mod table;
mod warm;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Result};

use crate::setup;
use harness::{free_ports, pools_config, Provision};
use stats::Samples;
use table::Row;

#[derive(Debug, Clone, Copy)]
struct Opts {
    quick: bool,
    build: bool,
    /// `--only 1,7`: these figures only.
    only: Option<u16>,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Opts> {
        let mut o = Opts {
            quick: false,
            build: false,
            only: None,
        };
        let mut args = args.iter();
        while let Some(a) = args.next() {
            match a.as_str() {
                "--quick" => o.quick = true,
                "--build" => o.build = true,
                "--only" => {
                    let list = args.next().map(String::as_str).unwrap_or_default();
                    let mut mask = 0u16;
                    for n in list.split(',') {
                        match n.trim().parse::<u16>() {
                            Ok(n @ 1..=9) => mask |= 1 << n,
                            _ => bail!("--only takes figure numbers 1-9, like `--only 1,2`"),
                        }
                    }
                    o.only = Some(mask);
                }
                other => {
                    bail!("unknown option `{other}`; usage: cargo xtask bench [--quick] [--build] [--only 1,2,…]")
                }
            }
        }
        Ok(o)
    }

    /// Is figure `n` to be measured?
    fn wants(&self, n: u16) -> bool {
        self.only.is_none_or(|m| m & (1 << n) != 0)
    }

    /// `full` repetitions, or `quick` with `--quick`.
    fn reps(&self, full: usize, quick: usize) -> usize {
        if self.quick {
            quick
        } else {
            full
        }
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "?".into());
    let gpu = if Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        "a GPU"
    } else {
        "no GPU"
    };
    format!("{cores} cores ({cpu}), {gpu}")
}

fn date() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Cargo's target directory.
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// Tools, the venv, the provision binary (release profile: what users run), llama.cpp source
/// and the tiny model (as the e2e run).
fn set_up(root: &Path) -> Result<Provision> {
    setup::ensure_build_tools()?;
    setup::ensure_apt(&[("strace", "strace")])?;
    let python = setup::ensure_venv(root)?;
    // `PROVISION_BENCH_BIN`: measure this binary instead of building one (to compare two
    // builds, e.g. main and a branch, run after run on the same machine).
    let bin = match std::env::var_os("PROVISION_BENCH_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            setup::run(
                Command::new(&cargo)
                    .args(["build", "-q", "--release", "-p", "provision-cli"])
                    .current_dir(root),
            )?;
            target_dir(root).join("release/provision")
        }
    };
    let fixtures = root.join(".fixtures");
    std::fs::create_dir_all(&fixtures)?;
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let persistent = std::env::var("XDG_CACHE_HOME").unwrap_or_else(|_| format!("{home}/.cache"));
    let repo = PathBuf::from(persistent).join("provision-fixtures/llama.cpp");
    setup::run(Command::new(root.join("fixtures/llamacpp/prepare-source.sh")).arg(&repo))?;
    let link = fixtures.join("llama.cpp");
    if std::fs::read_link(&link).ok() != Some(repo.clone()) {
        let _ = std::fs::remove_file(&link);
        let _ = std::fs::remove_dir_all(&link);
        std::os::unix::fs::symlink(&repo, &link)?;
    }
    let model = fixtures.join("tiny-llama.gguf");
    if !model.exists() {
        setup::run(
            Command::new(&python)
                .arg(root.join("fixtures/models/make_tiny_gguf.py"))
                .arg(&model),
        )?;
    }
    let work = root.join("target/bench");
    std::fs::create_dir_all(&work)?;
    Ok(Provision {
        root: root.to_path_buf(),
        work,
        bin,
    })
}

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let opts = Opts::parse(args)?;
    let started = Instant::now();
    eprintln!("== bench: set-up");
    let p = set_up(root)?;
    let load_before = loadavg();
    let mut rows = Vec::new();
    let mut configs: Vec<(PathBuf, String)> = Vec::new();
    let result = figures(&p, opts, &mut rows, &mut configs);
    // Whatever happened, leave nothing running.
    for (config, runtime) in &configs {
        if let Err(e) = p.down(config, runtime) {
            eprintln!("warning: down {}: {e:#}", config.display());
        }
    }
    result?;
    println!(
        "\n{} · {} · provision release build · load average {} before, {} after · {}{:.0} s\n",
        date(),
        machine(),
        load_before,
        loadavg(),
        if opts.quick { "--quick · " } else { "" },
        started.elapsed().as_secs_f64()
    );
    print!("{}", table::render(&rows));
    let missed = rows
        .iter()
        .filter(|r| r.verdict == table::Verdict::Missed)
        .count();
    println!(
        "\n{} targets met, {missed} missed",
        rows.iter()
            .filter(|r| r.verdict == table::Verdict::Met)
            .count()
    );
    Ok(())
}

fn figures(
    p: &Provision,
    opts: Opts,
    rows: &mut Vec<Row>,
    configs: &mut Vec<(PathBuf, String)>,
) -> Result<()> {
    let mut taken = BTreeSet::new();
    let e2e = p.e2e_text()?;
    let model = p.root.join(".fixtures/tiny-llama.gguf");

    let ready_cfg = p.variant(
        "ready.yaml",
        &pools_config(&e2e, 1, 2, &free_ports(2, &mut taken))?,
    )?;
    let ready_rt = "rt-ready".to_string();
    configs.push((ready_cfg.clone(), ready_rt.clone()));

    // 1. Ready-detect, two replicas per apply.
    if opts.wants(1) {
        eprintln!("== [1] ready-detect");
        let r = ready::measure(p, &ready_cfg, &ready_rt, opts.reps(6, 2))?;
        let base: Vec<String> = r
            .baselines
            .iter()
            .map(|(ms, s)| format!("{ms} ms poll: {}", s.show("ms", 0)))
            .collect();
        rows.push(
            Row::new(
                "1",
                format!(
                    "ready-detect: first /health 200 (1 ms poller, period {:.2} ms) → handoff file exists",
                    r.poll_period.median()
                ),
            )
            .value(r.latency.show("ms", 1))
            .baseline(base.join("; "))
            .target("≤ 25 ms median", r.latency.median() <= 25.0),
        );
    }

    // 2. Warm re-apply: servers are up from figure 1.
    if opts.wants(2) {
        eprintln!("== [2] warm re-apply");
        let w = warm::measure(p, &ready_cfg, &ready_rt, &model, opts.reps(10, 3))?;
        let parts: Vec<String> = w
            .naive_parts
            .iter()
            .map(|(what, s)| format!("{what} {:.0}", s.median()))
            .collect();
        rows.push(
            Row::new(
                "2",
                "warm re-apply, unchanged config, 2 healthy servers: wall",
            )
            .value(w.apply_ms.show("ms", 0))
            .baseline(format!(
                "naive re-run: {} ({} ms)",
                w.naive_ms.show("ms", 0),
                parts.join(", ")
            ))
            .target("≤ 150 ms", w.apply_ms.median() <= 150.0),
        );
        let model_size = std::fs::metadata(&model)?.len();
        match &w.traced {
            Some(t) => {
                let mut programs: BTreeMap<String, usize> = BTreeMap::new();
                for prog in &t.programs {
                    let name = Path::new(prog)
                        .file_name()
                        .map_or(prog.clone(), |n| n.to_string_lossy().into_owned());
                    *programs.entry(name).or_default() += 1;
                }
                let list: Vec<String> = programs
                    .iter()
                    .map(|(n, c)| {
                        if *c > 1 {
                            format!("{n} ×{c}")
                        } else {
                            n.clone()
                        }
                    })
                    .collect();
                rows.push(
                    Row::new("2", "warm re-apply: processes started (strace -f, execve)")
                        .value(if list.is_empty() {
                            "0".into()
                        } else {
                            format!("{}: {}", t.programs.len(), list.join(", "))
                        })
                        .baseline(
                            "naive re-run: git, cmake ×2, ninja, sha256sum and their children",
                        )
                        .target("0 besides probes (HTTP)", t.programs.is_empty()),
                );
                rows.push(
                    Row::new(
                        "2",
                        "warm re-apply: bytes of the model read (strace -y: read/pread/mmap on its fd)",
                    )
                    .value(format!("{} B (opened {}×)", t.model_bytes, t.model_opens))
                    .baseline(format!("naive re-run: sha256sum reads all {model_size} B"))
                    .target("0 B", t.model_bytes == 0),
                );
            }
            None => rows.push(
                Row::new("2", "warm re-apply: processes started, model bytes read").value(format!(
                    "not counted: {}",
                    w.untraced_why.as_deref().unwrap_or("?")
                )),
            ),
        }
        p.down(&ready_cfg, &ready_rt)?;
    }

    // 3 and 4. Time to all-ready by replicas and by pools sharing one build.
    if opts.wants(3) || opts.wants(4) {
        eprintln!("== [3, 4] time to all-ready: 1, 2, 4 replicas; 1 and 4 pools");
        let mut shapes = scale::shapes(p, &[(1, 1), (1, 2), (1, 4), (4, 1)], &mut taken)?;
        configs.extend(shapes.iter().map(|s| (s.config.clone(), s.runtime.clone())));
        scale::measure(p, &mut shapes, opts.reps(5, 2))?;
        let one = shapes[0].ms.clone();
        for s in &shapes[..3] {
            rows.push(
                Row::new(
                    "3",
                    format!(
                        "time to all-ready, {} replica(s) (apply wall, from stopped)",
                        s.replicas
                    ),
                )
                .value(s.ms.show("ms", 0)),
            );
        }
        let ratio = |s: &Samples| s.median() / one.median();
        let r4 = ratio(&shapes[2].ms);
        rows.push(
            Row::new("3", "all-ready: 4 replicas ÷ 1 replica (medians)")
                .value(format!("{r4:.2}×"))
                .baseline(format!(
                    "1 replica: {:.0} ms; the same servers started by hand (no provision): 4 ÷ 1 = {:.2}× ({:.0} ms ÷ {:.0} ms)",
                    one.median(),
                    shapes[2].bare_ms.median() / shapes[0].bare_ms.median(),
                    shapes[2].bare_ms.median(),
                    shapes[0].bare_ms.median()
                ))
                .target("≤ 1.3×", r4 <= 1.3),
        );
        let count = scale::count_builds(p, &shapes[3].config, &shapes[3].runtime, !opts.quick)?;
        let forced = count
            .forced
            .map_or("forced apply: not run (--quick)".to_string(), |(c, b)| {
                format!("forced apply ran {c} configure, {b} build")
            });
        let one_each = count.planned_configure == 1
            && count.planned_build == 1
            && count.forced.is_none_or(|f| f == (1, 1));
        rows.push(
            Row::new(
                "4",
                "4 pools, same source and flags: configure / build steps",
            )
            .value(format!(
                "planned {} / {}; {forced}",
                count.planned_configure, count.planned_build
            ))
            .baseline("4 / 4 without sharing")
            .target("exactly 1 / 1", one_each),
        );
        let p4 = ratio(&shapes[3].ms);
        rows.push(
            Row::new("4", "apply, 4 pools ÷ 1 pool, build excluded (medians)")
                .value(format!("{p4:.2}× ({})", shapes[3].ms.show("ms", 0)))
                .baseline(format!(
                    "1 pool: {}; the same servers started by hand: 4 ÷ 1 = {:.2}×",
                    one.show("ms", 0),
                    shapes[3].bare_ms.median() / shapes[0].bare_ms.median()
                ))
                .target("≤ 1.2×", p4 <= 1.2),
        );
    }

    // 5. The planner, in-process.
    if opts.wants(5) {
        eprintln!("== [5] plan: generated configs of 10 … 10,000 pools");
        // Release profile: 10,000 pools take about a second (42 s before the planner's
        // quadratic parts went, see BENCHMARKS.md), so --quick measures them once too.
        let all: &[usize] = &[10, 100, 1000, 10_000];
        let runner = planner::build_runner(&p.root)?;
        let sizes = planner::measure(&runner, &p.work, all, |n| match n {
            0..=100 => opts.reps(20, 5),
            101..=1000 => opts.reps(10, 3),
            _ => opts.reps(7, 3),
        })?;
        for s in &sizes {
            let mut row = Row::new(
                "5",
                format!(
                    "plan, {} pools ({} steps): time; peak heap",
                    s.pools, s.steps
                ),
            )
            .value(format!(
                "{}; {:.1} MiB",
                s.ms.show("ms", 1),
                s.peak_bytes.median() / (1 << 20) as f64
            ));
            if s.pools == 1000 {
                row = row.target("≤ 100 ms", s.ms.median() <= 100.0);
            }
            rows.push(row);
        }
        let growth = |f: &dyn Fn(&planner::Size) -> f64| -> (String, f64) {
            let g = planner::growth_vs_nlogn(&sizes, f);
            let worst = g.iter().map(|x| x.2).fold(0.0, f64::max);
            let shown: Vec<String> = g
                .iter()
                .map(|(a, b, r)| format!("{a}→{b} {r:.2}"))
                .collect();
            (shown.join(", "), worst)
        };
        let (t_shown, t_worst) = growth(&|s| s.ms.median());
        let (m_shown, m_worst) = growth(&|s| s.peak_bytes.median());
        rows.push(
            Row::new(
                "5",
                "plan growth per ×10 pools ÷ n log n growth: time; peak heap",
            )
            .value(format!("time {t_shown}; heap {m_shown}"))
            .baseline("n log n = 1.00")
            .target("≤ 1.00 each", t_worst <= 1.0 && m_worst <= 1.0),
        );
    }

    // 6. sha256.
    if opts.wants(6) {
        let bytes: u64 = if opts.quick { 256 << 20 } else { 1 << 30 };
        eprintln!("== [6] sha256 of {} MiB", bytes >> 20);
        let s = sha::measure(&p.work, bytes, opts.reps(5, 2))?;
        rows.push(
            Row::new(
                "6",
                format!(
                    "sha256 verify of a {} MiB file (page cache): throughput",
                    s.bytes >> 20
                ),
            )
            .value(s.provision_gbps.show("GB/s", 2))
            .baseline(format!("sha256sum: {}", s.sha256sum_gbps.show("GB/s", 2)))
            .target("≥ 1 GB/s", s.provision_gbps.median() >= 1.0),
        );
        rows.push(
            Row::new("6", "cached re-verify (digest cache, unchanged file)")
                .value(format!(
                    "{}; {} B of the file read (rchar +{} B: the cache file)",
                    s.cached_ms.show("ms", 2),
                    s.cached_bytes_read,
                    s.cached_rchar
                ))
                .baseline(format!(
                    "full verify: {:.0} ms",
                    s.bytes as f64 / s.provision_gbps.median() / 1e6
                ))
                .target(
                    "0 B read",
                    s.cached_bytes_read == 0 && s.cached_rchar < s.bytes / 1000,
                ),
        );
    }

    // 8. Bounded input: validate and plan of 1 MiB and 16 MiB configs.
    if opts.wants(8) {
        eprintln!("== [8] validate and plan: 1 MiB and 16 MiB configs");
        rows.extend(bounded::rows(&p.bin, &p.work, opts.reps(5, 2))?);
    }

    // 9. The memory estimate against the real CPU server's buffers.
    if opts.wants(9) {
        let models = fit_models::models(opts.quick);
        eprintln!(
            "== [9] estimate vs actual: {} generated models, real CPU llama-server",
            models.len()
        );
        let server = fit::server_binary(p, &ready_cfg, &ready_rt)?;
        let port = free_ports(1, &mut taken)[0];
        let cases = fit::measure(&server, &p.work.join("fit9"), &models, port)?;
        rows.extend(fit::rows(&cases));
    }

    // 7. Builds, on request.
    if opts.build && opts.wants(7) {
        eprintln!("== [7] builds (slow)");
        let b = build::measure(p, &ready_cfg, &ready_rt, &p.work.join("build7"))?;
        rows.push(
            Row::new(
                "7",
                "cold build, --target llama-server (empty ccache, -j cores)",
            )
            .value(format!(
                "{:.0} s wall, {:.0} s CPU, {} compilations (configure {:.0} s)",
                b.server.wall_s, b.server.cpu_s, b.server_compiles.0, b.configure_s
            ))
            .baseline(format!(
                "full cmake --build: {:.0} s wall, {:.0} s CPU, {} compilations",
                b.full.wall_s, b.full.cpu_s, b.full_compiles.0
            ))
            // CPU time, not wall: on 2 shared cores the wall time of a 4-minute build moves
            // with other engineers' load by more than the difference measured here.
            .target(
                format!(
                    "less CPU than full: {:.2}× (wall {:.2}×)",
                    b.server.cpu_s / b.full.cpu_s,
                    b.server.wall_s / b.full.wall_s
                ),
                b.server.cpu_s < b.full.cpu_s,
            ),
        );
        rows.push(
            Row::new("7", "llama-server rebuild, build dir wiped, ccache warm")
                .value(format!(
                    "{:.0} s wall, {:.0} s CPU ({} compilations, {} ccache hits)",
                    b.server_rewarm.wall_s,
                    b.server_rewarm.cpu_s,
                    b.rewarm_compiles.0,
                    b.rewarm_compiles.1
                ))
                .baseline(format!("cold: {:.0} s wall", b.server.wall_s))
                .target(
                    format!(
                        "faster than cold: {:.2}×",
                        b.server_rewarm.wall_s / b.server.wall_s
                    ),
                    b.server_rewarm.wall_s < b.server.wall_s,
                ),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Opts;

    fn parse(args: &[&str]) -> anyhow::Result<Opts> {
        Opts::parse(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn options() {
        let all = parse(&[]).unwrap();
        assert!(!all.quick && !all.build && (1..=9).all(|n| all.wants(n)));
        let some = parse(&["--quick", "--build", "--only", "2,7"]).unwrap();
        assert!(some.quick && some.build);
        assert_eq!(
            (1..=9).filter(|n| some.wants(*n)).collect::<Vec<_>>(),
            [2, 7]
        );
        assert_eq!(
            (1..=9)
                .filter(|n| parse(&["--only", "9"]).unwrap().wants(*n))
                .collect::<Vec<_>>(),
            [9]
        );
        assert!(parse(&["--only", "10"]).is_err());
        assert!(parse(&["--only"]).is_err());
        assert!(parse(&["--fast"]).is_err());
    }
}
