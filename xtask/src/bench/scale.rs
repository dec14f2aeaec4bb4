//! Figures 3 and 4: time to all-ready (the apply's wall clock, from stopped servers to every
//! handoff written) for 1, 2 and 4 replicas of one pool, and for 1 and 4 pools that share one
//! source and one set of CMake flags (one configure and one build, counted).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use super::harness::{events, expand, free_ports, health, pools_config, steps, Provision};
use super::stats::Samples;

pub struct Shape {
    pub pools: usize,
    pub replicas: usize,
    pub config: PathBuf,
    pub runtime: String,
    pub ms: Samples,
    /// The same servers started by hand (the plan's argv, no provision): time until every
    /// `/health` answers 200. What this machine needs for the servers alone.
    pub bare_ms: Samples,
}

/// Generate one config per shape, each on its own free ports and runtime dir.
pub fn shapes(
    p: &Provision,
    list: &[(usize, usize)],
    taken: &mut BTreeSet<u16>,
) -> Result<Vec<Shape>> {
    let e2e = p.e2e_text()?;
    list.iter()
        .map(|&(pools, replicas)| {
            let ports = free_ports(pools * replicas, taken);
            let name = format!("p{pools}x{replicas}");
            let config = p.variant(
                &format!("{name}.yaml"),
                &pools_config(&e2e, pools, replicas, &ports)?,
            )?;
            Ok(Shape {
                pools,
                replicas,
                config,
                runtime: format!("rt-{name}"),
                ms: Samples::default(),
                bare_ms: Samples::default(),
            })
        })
        .collect()
}

/// Milliseconds the configure and build steps took in an apply (`finished` events).
fn build_ms(out: &Output) -> f64 {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "finished")
        .filter(|e| {
            e["kind"]
                .as_str()
                .is_some_and(|k| k == "cmake-configure" || k == "cmake-build")
        })
        .filter_map(|e| e["duration_ms"].as_f64())
        .sum()
}

/// `runs` rounds; in each, every shape once from stopped servers (interleaved, so a change in
/// machine load hits every shape alike), build steps' time excluded, stopped again after.
pub fn measure(p: &Provision, shapes: &mut [Shape], runs: usize) -> Result<()> {
    // Warm-up, not counted: a new runtime dir clones, configures and builds (all fresh in the
    // cache, but its state file does not know that yet).
    for s in shapes.iter() {
        p.timed_apply(&s.config, &s.runtime, &[])?;
        p.down(&s.config, &s.runtime)?;
    }
    for _ in 0..runs {
        for s in shapes.iter_mut() {
            let (d, out) = p.timed_apply(&s.config, &s.runtime, &["--format", "json"])?;
            let handoffs = events(&out, "finished")
                .iter()
                .filter(|id| id.starts_with("handoff:"))
                .count();
            ensure!(
                handoffs == s.pools * s.replicas,
                "{}: {handoffs} handoffs written, expected {}",
                s.config.display(),
                s.pools * s.replicas
            );
            s.ms.push(d.as_secs_f64() * 1e3 - build_ms(&out));
            p.down(&s.config, &s.runtime)?;
            s.bare_ms.push(bare_start(&p.plan(&s.config, &s.runtime)?)?);
        }
    }
    Ok(())
}

/// Start every spawn step's server by hand with its planned argv; milliseconds until all answer
/// `/health` 200 (polled every 1 ms). Stopped after.
fn bare_start(plan: &Value) -> Result<f64> {
    let servers: Vec<(Vec<String>, u16)> = steps(plan, "spawn")
        .map(|s| {
            let argv: Vec<String> = s["argv"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|a| expand(plan, a))
                .collect();
            let port = argv
                .iter()
                .position(|a| a == "--port")
                .and_then(|i| argv.get(i + 1))
                .and_then(|p| p.parse().ok())
                .context("a fixed --port in the argv")?;
            Ok((argv, port))
        })
        .collect::<Result<_>>()?;
    let t = Instant::now();
    let mut children = Vec::new();
    for (argv, _) in &servers {
        children.push(
            Command::new(&argv[0])
                .args(&argv[1..])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {}", argv[0]))?,
        );
    }
    let mut ready = vec![false; servers.len()];
    let result = loop {
        for (i, (_, port)) in servers.iter().enumerate() {
            ready[i] = ready[i] || health(*port) == Some(200);
        }
        if ready.iter().all(|r| *r) {
            break Ok(t.elapsed().as_secs_f64() * 1e3);
        }
        if t.elapsed() > Duration::from_secs(60) {
            break Err(anyhow::anyhow!("servers started by hand not ready in 60 s"));
        }
        if let Some(i) = children
            .iter_mut()
            .position(|c| c.try_wait().ok().flatten().is_some())
        {
            break Err(anyhow::anyhow!("{:?} exited", servers[i].0));
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    result
}

/// Configure and build steps: in the plan, and started by a `--force`d apply (None: not run).
pub struct BuildCount {
    pub planned_configure: usize,
    pub planned_build: usize,
    pub forced: Option<(usize, usize)>,
}

pub fn count_builds(
    p: &Provision,
    config: &Path,
    runtime: &str,
    force: bool,
) -> Result<BuildCount> {
    let plan = p.plan(config, runtime)?;
    let mut c = BuildCount {
        planned_configure: steps(&plan, "cmake-configure").count(),
        planned_build: steps(&plan, "cmake-build").count(),
        forced: None,
    };
    if force {
        let (_, out) = p.timed_apply(config, runtime, &["--format", "json", "--force"])?;
        let started = events(&out, "started");
        let n = |k: &str| started.iter().filter(|s| s.starts_with(k)).count();
        c.forced = Some((n("cmake-configure:"), n("cmake-build:")));
        p.down(config, runtime)?;
    }
    Ok(c)
}
