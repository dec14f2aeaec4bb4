//! What the spawn, probe and handoff steps of one replica share: placeholder expansion
//! (`${port}`, `${model_path}`), the replica's handoff file, its API key, the step log.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;

use provision_executor::private_file;
use provision_executor::StepContext;
use provision_plan::redact::{Redactor, REDACTED};
use provision_plan::{Plan, StepSpec};
use serde_json::Value;

pub use crate::handoff_owner::Owner;
use crate::handoff_owner::{remove_if_ours, Removal};

/// How long a server gets between SIGTERM and SIGKILL when provision stops it.
pub const DEFAULT_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The variable llama-server reads its API key from.
pub const API_KEY_ENV: &str = "LLAMA_API_KEY";

/// Lines of a server log quoted in an error.
pub const TAIL_LINES: usize = 40;

/// `pool/rN`.
pub fn replica_name(pool: &str, replica: u32) -> String {
    provision_plan::ReplicaId::new(pool, replica).to_string()
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

/// The replica's API key (to ask `/props` and `/metrics`): the `LLAMA_API_KEY` its server
/// gets: the pool's `api_key` reference, read again, or `--api-key` (or `env`) from the plan's
/// secret environment.
pub fn api_key(plan: &Plan, pool: &str, replica: u32) -> Option<String> {
    plan.steps.iter().find_map(|s| match &s.spec {
        StepSpec::Spawn(sp) if sp.pool == pool && sp.replica == replica => match &sp.api_key {
            Some(key) => key.resolve(|p| plan.roots.expand(p)).ok(),
            None => sp
                .secret_env
                .get(API_KEY_ENV)
                .or_else(|| sp.env.get(API_KEY_ENV))
                .filter(|k| *k != REDACTED)
                .cloned(),
        },
        _ => None,
    })
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
        let _ = writeln!(
            f,
            "[provision] {}",
            Redactor::for_plan(cx.plan).redact(line)
        );
    }
}

/// The tail of a server log, secrets redacted.
pub fn server_log_tail(cx: &StepContext<'_>, log: &std::path::Path) -> String {
    Redactor::for_plan(cx.plan).redact(&provision_executor::log_tail(log, TAIL_LINES))
}

/// The string output `name` of the dependencies.
pub fn dep_str(cx: &StepContext<'_>, name: &str) -> Option<String> {
    cx.dep_output(name)
        .and_then(Value::as_str)
        .map(String::from)
}
