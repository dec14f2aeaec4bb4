//! Figure 8: the bounded-input targets of issue 13 — `provision validate` and `plan` of a valid
//! config of 1 MiB and of 16 MiB (the size cap; 10,000 pools, the pool cap, each padded with
//! env entries), wall time and peak RSS of the process (`wait4`), and the 16 MiB ÷ 1 MiB ratio
//! (the baseline, measured in the same run: 16 would be linear).

use std::fmt::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{ensure, Result};

use super::stats::Samples;
use super::table::Row;

/// One command on one config: wall ms and peak RSS MiB per run.
pub struct Runs {
    pub ms: Samples,
    pub rss_mib: Samples,
}

/// A valid config of `pools` CPU pools of about `bytes` in all (each pool padded with env
/// entries to its share).
pub fn config(pools: usize, bytes: usize) -> String {
    let mut s = String::from("pools:\n");
    let share = bytes / pools;
    for i in 0..pools {
        let start = s.len();
        let _ = write!(
            s,
            "  - id: pool-{i:05}
    engine: llamacpp
    model: model-{m}
    backend: cpu
    devices: []
    provisioning:
      mode: binary
      binary: {{path: /opt/llama.cpp/bin/llama-server}}
      model: {{ref: /models/model-{m}.gguf}}
      flags: [--threads, \"4\", --parallel, \"2\", --ctx-size, \"4096\"]
      env:
",
            m = i % 16,
        );
        let mut k = 0;
        while s.len() - start + 40 < share {
            let _ = writeln!(s, "        VAR_{k:03}: \"value-{i:05}-{k:03}-padding\"");
            k += 1;
        }
    }
    s
}

/// Run `bin command --config file` `reps` times; stdout discarded.
fn measure(bin: &Path, command: &str, file: &Path, reps: usize) -> Result<Runs> {
    let mut runs = Runs {
        ms: Samples::default(),
        rss_mib: Samples::default(),
    };
    for _ in 0..reps {
        let started = Instant::now();
        let child = Command::new(bin)
            .args([command, "--config"])
            .arg(file)
            .args(["--format", "json"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let (status, rss_kib) = wait_rss(child.id())?;
        runs.ms.push(started.elapsed().as_secs_f64() * 1e3);
        ensure!(status == 0, "{command} {} exited {status}", file.display());
        runs.rss_mib.push(rss_kib as f64 / 1024.0);
    }
    Ok(runs)
}

/// Reap `pid`: its exit code and peak RSS (KiB).
fn wait_rss(pid: u32) -> Result<(i32, i64)> {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4(2) on our own child, with valid pointers to a status and a rusage.
    let got = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut usage) };
    ensure!(
        got == pid as i32,
        "wait4: {}",
        std::io::Error::last_os_error()
    );
    Ok((libc::WEXITSTATUS(status), usage.ru_maxrss))
}

/// The rows of figure 8, for `bin`, configs written under `work`.
pub fn rows(bin: &Path, work: &Path, reps: usize) -> Result<Vec<Row>> {
    let small = work.join("bounded-1mib.yaml");
    let large = work.join("bounded-16mib.yaml");
    std::fs::write(&small, config(1_000, 1 << 20))?;
    std::fs::write(&large, config(10_000, (16 << 20) - 4096))?;
    let mut rows = Vec::new();
    for command in ["validate", "plan"] {
        let one = measure(bin, command, &small, reps)?;
        let sixteen = measure(bin, command, &large, reps)?;
        rows.push(
            Row::new(
                "8",
                format!("`{command}` of a valid 1 MiB config (1,000 pools)"),
            )
            .value(format!(
                "{}; {}",
                one.ms.show("ms", 0),
                one.rss_mib.show("MiB", 1)
            ))
            .target(
                "< 1 s and < 100 MiB",
                one.ms.max() < 1000.0 && one.rss_mib.max() < 100.0,
            ),
        );
        rows.push(
            Row::new(
                "8",
                format!("`{command}` of a valid 16 MiB config (10,000 pools)"),
            )
            .value(format!(
                "{}; {}",
                sixteen.ms.show("ms", 0),
                sixteen.rss_mib.show("MiB", 1)
            ))
            .baseline(format!(
                "16 MiB ÷ 1 MiB: time {:.1}×, memory {:.1}× (16 = linear)",
                sixteen.ms.median() / one.ms.median(),
                sixteen.rss_mib.median() / one.rss_mib.median()
            ))
            .target("< 5 s", sixteen.ms.max() < 5000.0),
        );
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    #[test]
    fn configs_are_the_size_asked() {
        for (pools, bytes) in [(1_000, 1 << 20), (10_000, (16 << 20) - 4096)] {
            let len = super::config(pools, bytes).len();
            assert!(len <= 16 << 20, "{len}");
            assert!(len as f64 > bytes as f64 * 0.97, "{len} of {bytes}");
        }
        let doc = provision_plan::Document::parse("g.yaml", super::config(20, 40_000)).unwrap();
        let valid = provision_plan::validate(&doc).unwrap();
        assert_eq!(valid.config.pools.len(), 20);
    }
}
