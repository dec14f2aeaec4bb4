//! Figure 2: a warm re-apply of an unchanged config with healthy servers, timed, and once more
//! under strace to count the processes it starts and the bytes it reads from the model.
//! Baseline in the same run: what a naive re-run costs, measured by running its commands on
//! the same checkout, build tree and model (git fetch, cmake configure, a no-op cmake build,
//! sha256sum of the model).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{ensure, Context, Result};

use super::harness::{events, expand, steps, text, traced_apply, Provision, Traced};
use super::stats::Samples;

pub struct Warm {
    pub apply_ms: Samples,
    pub traced: Option<Traced>,
    /// Whether strace was missing.
    pub untraced_why: Option<String>,
    pub naive_ms: Samples,
    /// Per command of the naive re-run: (what, ms).
    pub naive_parts: Vec<(String, Samples)>,
}

fn naive_commands(p: &Provision, config: &Path, runtime: &str) -> Result<Vec<(String, Command)>> {
    let plan = p.plan(config, runtime)?;
    let one = |kind: &str| {
        steps(&plan, kind)
            .next()
            .with_context(|| format!("no {kind} step in the plan"))
            .cloned()
    };
    let argv = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str())
            .map(|a| expand(&plan, a).replace("${jobs}", "2"))
            .collect()
    };
    let command = |a: Vec<String>| {
        let mut c = Command::new(&a[0]);
        c.args(&a[1..]);
        c
    };
    let clone = one("git-clone")?;
    let fetch = clone["commands"]
        .as_array()
        .into_iter()
        .flatten()
        .map(&argv)
        .find(|a| a.iter().any(|x| x == "fetch"))
        .context("the git-clone step has a fetch command")?;
    let git = command(fetch);
    let configure = command(argv(&one("cmake-configure")?["argv"]));
    let build = command(argv(&one("cmake-build")?["argv"]));
    let model = expand(
        &plan,
        one("model-resolve")?["path"]
            .as_str()
            .context("model path")?,
    );
    let mut sha = Command::new("sha256sum");
    sha.arg(model);
    Ok(vec![
        ("git fetch".into(), git),
        ("cmake configure".into(), configure),
        ("cmake build (no-op)".into(), build),
        ("sha256sum model".into(), sha),
    ])
}

pub fn measure(
    p: &Provision,
    config: &Path,
    runtime: &str,
    model: &Path,
    runs: usize,
) -> Result<Warm> {
    let mut w = Warm {
        apply_ms: Samples::default(),
        traced: None,
        untraced_why: None,
        naive_ms: Samples::default(),
        naive_parts: Vec::new(),
    };
    // Settle: servers up (figure 1 leaves them so; alone, this apply starts them), then the
    // next apply must already do nothing.
    p.timed_apply(config, runtime, &[])?;
    let (_, out) = p.timed_apply(config, runtime, &["--format", "json"])?;
    let ran = events(&out, "started");
    ensure!(ran.is_empty(), "a warm apply ran {ran:?}");

    let mut naive = naive_commands(p, config, runtime)?;
    w.naive_parts = naive
        .iter()
        .map(|(what, _)| (what.clone(), Samples::default()))
        .collect();
    // Interleaved, so a change in machine load hits both alike.
    for _ in 0..runs {
        let (d, out) = p.timed_apply(config, runtime, &["--format", "json"])?;
        let ran = events(&out, "started");
        ensure!(ran.is_empty(), "a warm apply ran {ran:?}");
        w.apply_ms.push(d.as_secs_f64() * 1e3);

        let mut total = 0.0;
        for (i, (what, c)) in naive.iter_mut().enumerate() {
            let t = Instant::now();
            let out = c.output().with_context(|| format!("running {what}"))?;
            ensure!(out.status.success(), "{what} failed: {}", text(&out));
            let ms = t.elapsed().as_secs_f64() * 1e3;
            w.naive_parts[i].1.push(ms);
            total += ms;
        }
        w.naive_ms.push(total);
    }
    // The naive commands touched provision's build tree: it must still be fresh.
    let (_, out) = p.timed_apply(config, runtime, &["--format", "json"])?;
    let ran = events(&out, "started");
    ensure!(ran.is_empty(), "after the naive re-run, apply ran {ran:?}");

    if Command::new("strace").arg("-V").output().is_ok() {
        match traced_apply(p, config, runtime, model)? {
            Ok(t) => w.traced = Some(t),
            Err(why) => w.untraced_why = Some(why),
        }
    } else {
        w.untraced_why = Some("strace is not installed".into());
    }
    Ok(w)
}
