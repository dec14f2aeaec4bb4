//! Figure 1: ready-detect latency. An independent poller asks every replica's `/health` every
//! 1 ms and watches its handoff file; the latency is the time from the first 200 it sees to the
//! handoff file existing. Baselines in the same runs: pollers with a fixed 750 ms interval (the
//! original provisioner) and 1 s (llama-swap, RamaLama), each started when the replica's pid
//! file appears (the moment such a provisioner would start polling), measured to their first
//! 200 (they would still have to write a handoff after that).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;

use super::harness::{expand, health, steps, Provision};
use super::stats::Samples;

/// How long one run may take before the watcher gives up.
const DEADLINE: Duration = Duration::from_secs(120);
pub const BASELINES_MS: [u64; 2] = [750, 1000];

struct Replica {
    port: u16,
    pid_file: PathBuf,
    handoff: PathBuf,
}

#[derive(Debug, Default, Clone)]
struct Seen {
    spawned: Option<Instant>,
    ready: Option<Instant>,
    handoff: Option<Instant>,
}

pub struct ReadyDetect {
    /// Ready (first 200 at 1 ms) → handoff file exists, ms.
    pub latency: Samples,
    /// First 200 seen by the 1 ms poller → first 200 seen by each baseline poller, ms.
    pub baselines: Vec<(u64, Samples)>,
    /// Mean interval of the 1 ms poller, ms.
    pub poll_period: Samples,
}

fn replicas(plan: &Value) -> Result<Vec<Replica>> {
    let handoffs: Vec<&Value> = steps(plan, "handoff").collect();
    steps(plan, "spawn")
        .map(|s| {
            let port = s["port"]["port"]
                .as_u64()
                .or_else(|| s["port"]["value"].as_u64())
                .or_else(|| {
                    // `--port N` in the argv.
                    let argv = s["argv"].as_array()?;
                    let i = argv.iter().position(|a| a == "--port")?;
                    argv.get(i + 1)?.as_str()?.parse().ok()
                })
                .with_context(|| format!("no fixed port in {}", s["id"]))?;
            let handoff = handoffs
                .iter()
                .find(|h| h["pool"] == s["pool"] && h["replica"] == s["replica"])
                .and_then(|h| h["path"].as_str())
                .context("a handoff step per spawn")?;
            Ok(Replica {
                port: u16::try_from(port)?,
                pid_file: expand(plan, s["pid_file"].as_str().context("pid_file")?).into(),
                handoff: expand(plan, handoff).into(),
            })
        })
        .collect()
}

/// One apply from a downed state, watched.
fn one_run(
    p: &Provision,
    config: &std::path::Path,
    runtime: &str,
    reps: &[Replica],
    out: &mut ReadyDetect,
) -> Result<()> {
    p.down(config, runtime)?;
    for r in reps {
        let _ = std::fs::remove_file(&r.handoff);
        anyhow::ensure!(
            health(r.port).is_none(),
            "something already answers on port {}",
            r.port
        );
    }
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::new(Mutex::new(vec![Seen::default(); reps.len()]));
    let base: Arc<Mutex<Vec<Vec<Option<Instant>>>>> =
        Arc::new(Mutex::new(vec![vec![None; BASELINES_MS.len()]; reps.len()]));
    let ports: Vec<u16> = reps.iter().map(|r| r.port).collect();
    let pid_files: Vec<PathBuf> = reps.iter().map(|r| r.pid_file.clone()).collect();
    let handoffs: Vec<PathBuf> = reps.iter().map(|r| r.handoff.clone()).collect();

    let watcher = {
        let seen = seen.clone();
        let base = base.clone();
        thread::spawn(move || -> (u64, Duration, Vec<JoinHandle<()>>) {
            let start = Instant::now();
            let mut ticks = 0u64;
            let mut pollers = Vec::new();
            while start.elapsed() < DEADLINE {
                ticks += 1;
                let mut all = true;
                for (i, port) in ports.iter().enumerate() {
                    let mut s = seen
                        .lock()
                        .expect("seen")
                        .get(i)
                        .cloned()
                        .unwrap_or_default();
                    if s.spawned.is_none() && pid_files[i].exists() {
                        s.spawned = Some(Instant::now());
                        for (b, ms) in BASELINES_MS.iter().enumerate() {
                            let (port, base, ms) = (*port, base.clone(), *ms);
                            pollers.push(thread::spawn(move || {
                                let t0 = Instant::now();
                                while t0.elapsed() < DEADLINE {
                                    if health(port) == Some(200) {
                                        base.lock().expect("base")[i][b] = Some(Instant::now());
                                        return;
                                    }
                                    thread::sleep(Duration::from_millis(ms));
                                }
                            }));
                        }
                    }
                    if s.ready.is_none() && health(*port) == Some(200) {
                        s.ready = Some(Instant::now());
                    }
                    if s.handoff.is_none() && handoffs[i].exists() {
                        s.handoff = Some(Instant::now());
                    }
                    all &= s.handoff.is_some() && s.ready.is_some();
                    seen.lock().expect("seen")[i] = s;
                }
                if all {
                    break;
                }
                thread::sleep(Duration::from_millis(1));
            }
            (ticks, start.elapsed(), pollers)
        })
    };
    let applied = p.timed_apply(config, runtime, &[]);
    let (ticks, spent, pollers) = watcher.join().expect("watcher thread");
    for t in pollers {
        t.join().expect("baseline poller");
    }
    applied?;
    out.poll_period
        .push(spent.as_secs_f64() * 1e3 / ticks.max(1) as f64);
    let seen = seen.lock().expect("seen").clone();
    let base = base.lock().expect("base").clone();
    for (i, s) in seen.iter().enumerate() {
        let (Some(ready), Some(handoff)) = (s.ready, s.handoff) else {
            anyhow::bail!("replica {i}: the poller saw no ready server or no handoff file ({s:?})");
        };
        out.latency
            .push(handoff.saturating_duration_since(ready).as_secs_f64() * 1e3);
        for (b, at) in base[i].iter().enumerate() {
            if let Some(at) = at {
                out.baselines[b]
                    .1
                    .push(at.saturating_duration_since(ready).as_secs_f64() * 1e3);
            }
        }
    }
    Ok(())
}

pub fn measure(
    p: &Provision,
    config: &std::path::Path,
    runtime: &str,
    runs: usize,
) -> Result<ReadyDetect> {
    let plan = p.plan(config, runtime)?;
    let reps = replicas(&plan)?;
    let mut out = ReadyDetect {
        latency: Samples::default(),
        baselines: BASELINES_MS
            .iter()
            .map(|ms| (*ms, Samples::default()))
            .collect(),
        poll_period: Samples::default(),
    };
    for _ in 0..runs {
        one_run(p, config, runtime, &reps, &mut out)?;
    }
    Ok(out)
}
