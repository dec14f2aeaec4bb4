//! Figure 5: `plan` (parse + validate + plan, what `provision plan` does before it prints) on
//! generated configs of 10 … 10,000 pools: time and peak heap, measured by provision-plan's
//! `plan_scale` example built in the release profile (its counting allocator gives the heap),
//! and how each tenfold step in pools compares with n log n.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Result};

use super::stats::Samples;

/// Seconds one size may take before its repetitions stop (at least one always runs).
const BUDGET_S: u64 = 10;

pub struct Size {
    pub pools: usize,
    pub ms: Samples,
    pub peak_bytes: Samples,
    pub steps: usize,
}

/// A config of `n` pools: half CPU, half CUDA, 16 of those to a device (at least 4 devices;
/// each GPU pool's fit names the pools before it on its device, so a host's worth of sharing,
/// not all of them on 4 cards); 4 llama.cpp refs × 2 sets of CMake flags (so builds are
/// shared), 16 models, one replica each on its own port.
pub fn config(n: usize) -> String {
    let mut s = String::from("pools:\n");
    let devices = (n / 2 / 16).max(4);
    for i in 0..n {
        let gpu = i % 2 == 1;
        let _ = write!(
            s,
            "  - id: pool-{i:05}
    engine: llamacpp
    model: model-{m}
    backend: {backend}
    devices: [{devices}]
    replicas: 1
    ctx: {ctx}
    provisioning:
      mode: source
      source:
        repo: https://github.com/ggml-org/llama.cpp.git
        ref: b45{r}0
        build:
          cmake_flags: [{flags}]
      model:
        ref: hf:org/repo-{m}/model-{m}-q4_k_m.gguf
      ports: [{port}]
      flags: [--threads, \"4\", --parallel, \"{par}\", --metrics]
",
            m = i % 16,
            backend = if gpu { "cuda" } else { "cpu" },
            devices = if gpu {
                (i / 2 % devices).to_string()
            } else {
                String::new()
            },
            ctx = 512 << (i % 4),
            r = i % 4,
            flags = if gpu {
                "-DGGML_CUDA=ON, -DCMAKE_CUDA_ARCHITECTURES=86"
            } else {
                "-DGGML_NATIVE=OFF"
            },
            port = 20000 + i,
            par = 1 + i % 2,
        );
    }
    s
}

/// Build the `plan_scale` example of provision-plan in the release profile; its path.
pub fn build_runner(root: &Path) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    crate::setup::run(
        Command::new(&cargo)
            .args(["build", "-q", "--release", "-p", "provision-plan"])
            .args(["--example", "plan_scale"])
            .current_dir(root),
    )?;
    Ok(crate::bench::target_dir(root).join("release/examples/plan_scale"))
}

/// `reps(n)` timed repetitions per size, each size's config written under `work`.
pub fn measure(
    runner: &Path,
    work: &Path,
    sizes: &[usize],
    reps: impl Fn(usize) -> usize,
) -> Result<Vec<Size>> {
    let mut out = Vec::new();
    for &n in sizes {
        let file = work.join(format!("plan-{n}-pools.yaml"));
        std::fs::write(&file, config(n))?;
        let output = Command::new(runner)
            .arg(&file)
            .arg(reps(n).to_string())
            // A slow size is measured fewer times rather than for minutes.
            .arg(BUDGET_S.to_string())
            .output()?;
        ensure!(
            output.status.success(),
            "plan_scale {}: {}",
            file.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        let mut size = Size {
            pools: n,
            ms: Samples::default(),
            peak_bytes: Samples::default(),
            steps: 0,
        };
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let run: serde_json::Value = serde_json::from_str(line)?;
            let field = |k: &str| {
                run[k]
                    .as_f64()
                    .ok_or_else(|| anyhow::anyhow!("plan_scale printed no `{k}`: {line}"))
            };
            size.ms.push(field("ms")?);
            size.peak_bytes.push(field("peak_bytes")?);
            size.steps = field("steps")? as usize;
        }
        ensure!(
            size.steps >= n * 3,
            "{n} pools planned into only {} steps",
            size.steps
        );
        let _ = std::fs::remove_file(&file);
        out.push(size);
    }
    Ok(out)
}

/// For each tenfold step: measured growth ÷ n log n growth (≤ 1: no worse than n log n).
pub fn growth_vs_nlogn(sizes: &[Size], value: impl Fn(&Size) -> f64) -> Vec<(usize, usize, f64)> {
    let nlogn = |n: usize| n as f64 * (n as f64).ln();
    sizes
        .windows(2)
        .map(|w| {
            let measured = value(&w[1]) / value(&w[0]);
            let allowed = nlogn(w[1].pools) / nlogn(w[0].pools);
            (w[0].pools, w[1].pools, measured / allowed)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn generated_configs_are_valid_and_plan() {
        let doc = provision_plan::Document::parse("g.yaml", super::config(10)).unwrap();
        let valid = provision_plan::validate(&doc).unwrap();
        let opts = provision_plan::PlanOptions {
            roots: provision_plan::Roots {
                cache: "/c".into(),
                runtime: "/r".into(),
                config_dir: "/e".into(),
            },
            pool: None,
        };
        assert!(provision_plan::plan(&valid, &opts).unwrap().steps.len() >= 40);
    }
}
