//! The scheduler alone, with checks that take time: a warm re-apply (every step fresh) of a
//! plan of `POOLS` CPU pools, 2 replicas each, each with its own source ref and model, where
//! every freshness check (`facts`, standing for `git ls-remote`, a model's digest lookup) and
//! every liveness check (`check_alive`, standing for `nvidia-smi` or `/health`) sleeps
//! `CHECK_MS`. Steps run instantly. Prints the median, min–max and n of the warm re-apply's
//! wall clock (BENCHMARKS.md, "The scheduler").
//!
//! `cargo run --release -p provision-executor --example slow_checks -- [POOLS] [CHECK_MS] [N]`

use std::fmt::Write;
use std::time::{Duration, Instant};

use provision_executor::events::Recorder;
use provision_executor::{
    apply, ApplyOptions, Cancel, Dispatch, Facts, Outcome, StateFile, StepContext, StepError,
};
use provision_plan::{Document, PlanOptions, Roots};

struct Slow(Duration);

impl Dispatch for Slow {
    fn facts(&self, _cx: &StepContext<'_>) -> Result<Facts, StepError> {
        std::thread::sleep(self.0);
        Ok(Facts::new())
    }
    fn run(&self, _cx: &StepContext<'_>) -> Result<Outcome, StepError> {
        Ok(Outcome::default())
    }
    fn check_alive(&self, _cx: &StepContext<'_>) -> Result<(), String> {
        std::thread::sleep(self.0);
        Ok(())
    }
}

fn config(pools: usize) -> String {
    let mut s = String::from("pools:\n");
    for i in 0..pools {
        let _ = write!(
            s,
            "  - id: p{i}
    engine: llamacpp
    model: m{i}
    backend: cpu
    devices: []
    replicas: 2
    provisioning:
      source: {{repo: \"file:///srv/llama.cpp\", ref: v{i}}}
      model: {{ref: ./models/m{i}.gguf}}
"
        );
    }
    s
}

fn main() {
    let arg = |i: usize, default: u64| {
        std::env::args()
            .nth(i)
            .map_or(default, |a| a.parse().expect("a number"))
    };
    let (pools, check_ms, n) = (arg(1, 4) as usize, arg(2, 20), arg(3, 10) as usize);
    let dir = tempfile::tempdir().unwrap();
    let doc = Document::parse("pools.yaml", config(pools)).unwrap();
    let valid = provision_plan::validate(&doc).unwrap();
    let roots = Roots {
        cache: dir.path().join("cache").display().to_string(),
        runtime: dir.path().join("runtime").display().to_string(),
        config_dir: dir.path().display().to_string(),
    };
    let plan = provision_plan::plan(&valid, &PlanOptions { roots, pool: None }).unwrap();
    let file = StateFile::new(dir.path().join("runtime/state.json"));
    let dispatch = Slow(Duration::from_millis(check_ms));
    let opts = ApplyOptions {
        jobs: 8,
        build_jobs: 2,
        fail_fast: false,
        force: false,
    };
    let mut ms = Vec::new();
    for i in 0..=n {
        let mut state = file.load().unwrap();
        let t = Instant::now();
        let events = Recorder::default();
        let report = apply(
            &plan,
            &dispatch,
            &file,
            &mut state,
            &opts,
            &events,
            &Cancel::new(),
        );
        let report = report.unwrap();
        assert!(report.ok());
        if i > 0 {
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    ms.sort_by(f64::total_cmp);
    println!(
        "{} steps, checks {check_ms} ms, --jobs 8: warm re-apply {:.1} ms ({:.1}–{:.1}, n={n})",
        plan.steps.len(),
        ms[n / 2],
        ms[0],
        ms[n - 1]
    );
}
