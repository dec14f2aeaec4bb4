//! What the spawn, probe and handoff steps of one replica share: placeholder expansion
//! (`${port}`, `${model_path}`), the replica's handoff file, its API key, the step log.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;

use provision_executor::command::redact_urls;
use provision_executor::private_file;
use provision_executor::StepContext;
use provision_plan::llama_flags::REDACTED;
use provision_plan::{Plan, StepSpec};
use serde_json::Value;

pub use crate::handoff_owner::Owner;
use crate::handoff_owner::{remove_if_ours, Removal};

/// How long a server gets between SIGTERM and SIGKILL when provision stops it.
pub const DEFAULT_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Lines of a server log quoted in an error.
pub const TAIL_LINES: usize = 40;

/// `pool/rN`.
pub fn replica_name(pool: &str, replica: u32) -> String {
    format!("{pool}/r{replica}")
}

/// Expand the plan's placeholders, `${model_path}` from whichever dependency carries it (the
/// model-resolve step's `path`, or `model_path` passed through), and `${port}` when known.
pub fn expand(cx: &StepContext<'_>, s: &str, port: Option<u16>) -> String {
    let mut out = cx.expand(s);
    if out.contains("${model_path}") {
        if let Some(p) = cx.dep_output("model_path").and_then(Value::as_str) {
            out = out.replace("${model_path}", p);
        }
    }
    if let Some(port) = port {
        out = out.replace("${port}", &port.to_string());
    }
    out
}

/// The handoff file of `pool`/`replica` in the plan, expanded.
pub fn handoff_path(cx: &StepContext<'_>, pool: &str, replica: u32) -> Option<PathBuf> {
    cx.plan.steps.iter().find_map(|s| match &s.spec {
        StepSpec::Handoff(h) if h.pool == pool && h.replica == replica => Some(cx.path(&h.path)),
        _ => None,
    })
}

/// Remove the handoff file of `owner` at `path`: `Ok(true)` when removed; `Ok(false)` when
/// there is none, or the file there is not this replica's provision handoff (left as it is:
/// the handoff step then refuses to replace it and says why).
pub fn remove_handoff(path: &std::path::Path, owner: &Owner) -> std::io::Result<bool> {
    match remove_if_ours(path, owner) {
        Ok(Removal::Removed) => Ok(true),
        Ok(Removal::Absent | Removal::Kept(_)) => Ok(false),
        Err(e) => Err(std::io::Error::other(e)),
    }
}

/// The replica's `--api-key` (to ask `/props` and `/metrics`), from the plan's secret argv.
pub fn api_key(plan: &Plan, pool: &str, replica: u32) -> Option<String> {
    plan.steps.iter().find_map(|s| match &s.spec {
        StepSpec::Spawn(sp) if sp.pool == pool && sp.replica == replica => {
            let argv = &sp.secret_argv;
            argv.iter().enumerate().find_map(|(i, a)| {
                if a == "--api-key" {
                    argv.get(i + 1).cloned()
                } else {
                    a.strip_prefix("--api-key=").map(String::from)
                }
            })
        }
        _ => None,
    })
}

/// Every secret of the plan's spawn steps (`--api-key`, `--hf-token` values, secret env
/// values): text that must never reach a log, a state file or an error.
pub fn secrets(plan: &Plan) -> Vec<String> {
    let mut out = BTreeSet::new();
    for s in &plan.steps {
        if let StepSpec::Spawn(sp) = &s.spec {
            for (shown, real) in sp.argv.iter().zip(&sp.secret_argv) {
                if shown != real {
                    out.insert(real.clone());
                }
            }
            for (k, v) in &sp.secret_env {
                if sp.env.get(k).is_some_and(|shown| shown == REDACTED) {
                    out.insert(v.clone());
                }
            }
        }
    }
    out.into_iter().filter(|s| s.len() >= 3).collect()
}

/// `text` with every secret of the plan and URL credentials replaced by `<redacted>`.
pub fn redact(plan: &Plan, text: &str) -> String {
    let mut out = redact_urls(text);
    for s in secrets(plan) {
        out = out.replace(&s, REDACTED);
    }
    out
}

/// Ports configured for other replicas of the plan (an auto port never takes them).
pub fn fixed_ports(plan: &Plan, pool: &str, replica: u32) -> BTreeSet<u16> {
    plan.steps
        .iter()
        .filter_map(|s| match &s.spec {
            StepSpec::Spawn(sp) if !(sp.pool == pool && sp.replica == replica) => match sp.port {
                provision_plan::step::PortSpec::Fixed { port } => Some(port),
                provision_plan::step::PortSpec::Auto { .. } => None,
            },
            _ => None,
        })
        .collect()
}

/// Append a line to the step's log (best effort: a log that cannot be written never fails a
/// step by itself). The log is 0600 and never appended to through a symbolic link.
pub fn note(cx: &StepContext<'_>, line: &str) {
    let _ = private_file::create_parent(&cx.log);
    if let Ok(mut f) = private_file::open_append(&cx.log) {
        let _ = writeln!(f, "[provision] {}", redact(cx.plan, line));
    }
}

/// The tail of a server log, secrets redacted.
pub fn server_log_tail(cx: &StepContext<'_>, log: &std::path::Path) -> String {
    redact(cx.plan, &provision_executor::log_tail(log, TAIL_LINES))
}

/// The string output `name` of the dependencies.
pub fn dep_str(cx: &StepContext<'_>, name: &str) -> Option<String> {
    cx.dep_output(name)
        .and_then(Value::as_str)
        .map(String::from)
}
