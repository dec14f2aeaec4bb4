//! Figure 5: `plan` (parse + validate + plan, in-process, what `provision plan` does before it
//! prints) on generated configs of 10 … 10,000 pools: time and peak heap (counting allocator),
//! and how each tenfold step in pools compares with n log n.

use std::fmt::Write;
use std::time::Instant;

use anyhow::{ensure, Result};
use provision_plan::{Document, PlanOptions, Roots};

use super::alloc;
use super::stats::Samples;

/// Seconds one size may take before its repetitions stop (at least one always runs).
const BUDGET_S: u64 = 10;

pub struct Size {
    pub pools: usize,
    pub ms: Samples,
    pub peak_bytes: Samples,
    pub steps: usize,
}

/// A config of `n` pools: half CPU, half CUDA on one of 4 devices; 4 llama.cpp refs × 2 sets of
/// CMake flags (so builds are shared), 16 models, one replica each on its own port.
pub fn config(n: usize) -> String {
    let mut s = String::from("pools:\n");
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
                (i / 2 % 4).to_string()
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

fn once(text: &str) -> Result<usize> {
    let doc = Document::parse("generated.yaml", text.to_string())
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let valid = provision_plan::validate(&doc).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let opts = PlanOptions {
        roots: Roots {
            cache: "/var/cache/provision".into(),
            runtime: "/run/provision".into(),
            config_dir: "/etc/provision".into(),
        },
        pool: None,
    };
    let plan = provision_plan::plan(&valid, &opts).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(plan.steps.len())
}

/// `reps(n)` timed repetitions per size.
pub fn measure(sizes: &[usize], reps: impl Fn(usize) -> usize) -> Result<Vec<Size>> {
    let mut out = Vec::new();
    for &n in sizes {
        let text = config(n);
        let mut size = Size {
            pools: n,
            ms: Samples::default(),
            peak_bytes: Samples::default(),
            steps: 0,
        };
        let spent = Instant::now();
        for _ in 0..reps(n) {
            // A slow size is measured fewer times rather than for minutes.
            if size.ms.len() > 0 && spent.elapsed().as_secs() >= BUDGET_S {
                break;
            }
            let base = alloc::reset_peak();
            let t = Instant::now();
            size.steps = once(&text)?;
            size.ms.push(t.elapsed().as_secs_f64() * 1e3);
            size.peak_bytes
                .push(alloc::peak().saturating_sub(base) as f64);
        }
        ensure!(
            size.steps >= n * 3,
            "{n} pools planned into only {} steps",
            size.steps
        );
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
    fn generated_configs_plan() {
        assert!(super::once(&super::config(10)).unwrap() >= 40);
    }
}
