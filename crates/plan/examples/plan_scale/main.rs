//! `cargo run --release -p provision-plan --example plan_scale -- <config> <reps> <budget-s>`:
//! what `provision plan` does before it prints (parse, validate, plan) for one config file,
//! `reps` times (fewer once `budget-s` seconds are spent; at least once). One JSON line per run:
//! `{"ms": …, "peak_bytes": …, "steps": …}`, peak heap by a counting global allocator.
//!
//! Figure 5 of `cargo xtask bench` runs it on generated configs, in the release profile: the
//! profile provision ships in (the dev profile leaves provision's own crates unoptimised).

mod alloc;

use std::time::{Duration, Instant};

use provision_plan::{Document, PlanOptions, Roots};

fn once(path: &str, text: String) -> Result<usize, String> {
    // As `provision_plan::load` does: the parsed document is gone once it is validated.
    let valid = {
        let doc = Document::parse(path, text).map_err(|e| format!("{e:?}"))?;
        provision_plan::validate(&doc).map_err(|e| format!("{e:?}"))?
    };
    let opts = PlanOptions {
        roots: Roots {
            cache: "/var/cache/provision".into(),
            runtime: "/run/provision".into(),
            config_dir: "/etc/provision".into(),
        },
        pool: None,
    };
    let plan = provision_plan::plan(&valid, &opts).map_err(|e| format!("{e:?}"))?;
    Ok(plan.steps.len())
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, reps, budget] = args.as_slice() else {
        return Err("usage: plan_scale <config> <reps> <budget-s>".into());
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let reps: usize = reps.parse().map_err(|e| format!("reps `{reps}`: {e}"))?;
    let budget: f64 = budget
        .parse()
        .map_err(|e| format!("budget `{budget}`: {e}"))?;
    let budget = Duration::from_secs_f64(budget);
    let started = Instant::now();
    for i in 0..reps.max(1) {
        if i > 0 && started.elapsed() >= budget {
            break;
        }
        let input = text.clone();
        let base = alloc::reset_peak();
        let t = Instant::now();
        let steps = once(path, input)?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let peak = alloc::peak().saturating_sub(base);
        println!("{{\"ms\":{ms},\"peak_bytes\":{peak},\"steps\":{steps}}}");
    }
    Ok(())
}
