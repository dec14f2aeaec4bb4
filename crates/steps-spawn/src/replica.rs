//! What the spawn, probe and handoff steps of one replica share: placeholder expansion
//! (`${port}`, `${model_path}`), the replica's handoff file, its API key, the step log.

use std::io::Write;

use provision_executor::private_file;
use provision_executor::StepContext;
use provision_plan::step::Probe;

pub use crate::handoff_owner::Owner;
use crate::handoff_owner::{remove_if_ours, Removal};

/// How long a server gets between SIGTERM and SIGKILL when provision stops it.
pub const DEFAULT_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Lines of a server log quoted in an error.
pub const TAIL_LINES: usize = 40;

/// `pool/rN`.
pub fn replica_name(pool: &str, replica: u32) -> String {
    provision_plan::ReplicaId::new(pool, replica).to_string()
}

/// Expand the plan's placeholders (`${model_path}` from the model-resolve step the replica
/// depends on, through its spawn), and `${port}` when known.
pub fn expand(cx: &StepContext<'_>, s: &str, port: Option<u16>) -> String {
    let mut out = cx.expand(s);
    if let Some(port) = port {
        out = out.replace("${port}", &port.to_string());
    }
    out
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

/// The replica's API key (to ask its version and metrics endpoints): the key its server gets
/// (`LLAMA_API_KEY` for llama.cpp): the pool's `api_key` reference, read again, or `--api-key` (or `env`) as the step's
/// secret `api_key`.
pub fn api_key(spec: &Probe, cx: &StepContext<'_>) -> Option<String> {
    match &spec.api_key {
        Some(key) => key.resolve(|p| cx.roots.expand(p)).ok(),
        None => cx
            .secret(provision_plan::replica_inputs::PROBE_API_KEY)
            .map(str::to_string),
    }
}

/// Append a line to the step's log (best effort: a log that cannot be written never fails a
/// step by itself). The log is 0600 and never appended to through a symbolic link.
pub fn note(cx: &StepContext<'_>, line: &str) {
    let _ = private_file::create_parent(&cx.log);
    if let Ok(mut f) = private_file::open_append(&cx.log) {
        let _ = writeln!(f, "[provision] {}", cx.redactor.redact(line));
    }
}

/// The tail of a server log, secrets redacted.
pub fn server_log_tail(cx: &StepContext<'_>, log: &std::path::Path) -> String {
    cx.redactor
        .redact(&provision_executor::log_tail(log, TAIL_LINES))
}
