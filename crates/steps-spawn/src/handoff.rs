//! The handoff step: tell the orchestrator where a ready replica runs, in a JSON file written
//! atomically, and only after the probe passed. A replica that is stopped, restarting or failed
//! has no handoff file.
//!
//! The file is provision's own: marked `"written_by": "provision"` with the runtime directory,
//! pool and replica, written 0600, its digest recorded in the step's outputs (so `down` removes
//! it only while it still holds what was written). A file at the path that is not this
//! replica's handoff is never replaced: the step fails and the file is left as it was.

use std::collections::BTreeMap;
use std::path::PathBuf;

use provision_executor::private_file::FILE_MODE;
use provision_executor::state::{now_rfc3339, write_atomic_mode, Durability};
use provision_executor::{Outcome, StepContext, StepError};
use provision_plan::outputs::{
    CmakeBuildOutputs, DeviceMemory, HandoffOutputs, ProbeOutputs, SpawnOutputs,
};
use provision_plan::step::Handoff;
use provision_plan::StepId;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::handoff_owner::{inspect, sha256, Found, Owner, WRITTEN_BY};
use crate::replica::{expand, replica_name};
use crate::server_handle::ServerHandle;

/// A handoff file its group may read (`handoff_group_readable: true`).
const GROUP_READABLE: u32 = 0o640;

/// Bumped when the handoff file changes incompatibly.
pub const HANDOFF_VERSION: u32 = 1;

/// `.runtime/engines/*.json`: one ready replica, for the orchestrator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "provision handoff")]
pub struct HandoffFile {
    pub handoff_version: u32,
    /// Always `provision`: the owner marker. provision replaces or removes a file at a handoff
    /// path only when it carries this marker (and this runtime directory, pool and replica).
    #[serde(default)]
    pub written_by: String,
    /// The runtime directory (absolute) of the provision that wrote this file.
    #[serde(default)]
    pub runtime_dir: String,
    /// 16 hex digits naming the runtime directory and state file of the provision that wrote
    /// it (the id in its servers' `PROVISION_INSTANCE` marker): another state file sharing the
    /// runtime directory never replaces or removes this file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub runtime_id: String,
    /// `llamacpp`.
    pub engine: String,
    /// `b<build>-<commit>` as the server reports it (`/props` `build_info`), else from
    /// `llama-server --version`, else `<build ref>-<cuda|cpu>`.
    pub engine_version: String,
    /// `source`, `binary` or `external`.
    pub provisioning_mode: String,
    /// Where to send requests, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    pub pool_id: String,
    /// `r0`, `r1`, …
    pub replica_id: String,
    pub model: HandoffFileModel,
    /// The server's flags (normalised; secrets shown as `<redacted>`).
    pub flags: Vec<String>,
    /// The server process (absent for an external server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// GPU indices (`CUDA_VISIBLE_DEVICES`); empty for a CPU pool.
    pub devices: Vec<u32>,
    /// `cuda` or `cpu`.
    pub backend: String,
    /// Digest of the engine build (the binary and its libraries), `sha256:<hex>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_digest: Option<String>,
    /// The llama.cpp ref it was built from (mode source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_ref: Option<String>,
    /// When the server process started (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// The server's log file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// When this file was written (RFC 3339, UTC).
    pub written_at: String,
    /// The authentication `url` needs: `bearer` (`Authorization: Bearer <API key>`, the key
    /// given to the orchestrator out of band; never written here). Absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    /// What the server allocated per device as its load report says (`CUDA0` → bytes), with
    /// the fit's estimate beside it on a GPU. Absent when the server reported none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub memory: BTreeMap<String, DeviceMemory>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HandoffFileModel {
    /// The pool's model id.
    pub id: String,
    /// The GGUF file the server loaded (empty for an external server).
    pub path: String,
}

/// The JSON Schema of the handoff file, for `schemas/handoff.schema.json`.
pub fn handoff_schema() -> Value {
    serde_json::to_value(schemars::schema_for!(HandoffFile)).expect("schema serialises")
}

/// Write the handoff file of a replica whose probe passed.
pub fn handoff(spec: &Handoff, cx: &StepContext<'_>) -> Result<Outcome, StepError> {
    let name = replica_name(&spec.pool, spec.replica);
    let expanded = PathBuf::from(expand(cx, &spec.path, None));
    // Recorded resolved: `down` removes exactly this path, never re-expanding placeholders.
    let path = std::path::absolute(&expanded).unwrap_or(expanded);
    let owner = Owner::of(cx, &spec.pool, spec.replica);
    if let Found::NotOurs(why) = inspect(&path, &owner) {
        return Err(StepError::new(format!(
            "{name}: {} is not a provision handoff of this replica: {why}; provision does not replace it",
            path.display()
        ))
        .hint(format!(
            "set `handoff_path` of pool {} to a file of provision's own, or move {} away if it is not needed",
            spec.pool,
            path.display()
        )));
    }
    let external = spec.provisioning_mode == "external";
    let Some(probed) = cx.maybe_dep::<ProbeOutputs>(&StepId::probe(&spec.pool, spec.replica))?
    else {
        return Err(StepError::new(format!(
            "{name} has no passed probe: the handoff file is written only for a ready replica"
        )));
    };
    // The server, as its spawn step records it (none is spawned for an external one).
    let spawned = cx.maybe_dep::<SpawnOutputs>(&StepId::spawn(&spec.pool, spec.replica))?;
    let server = if external {
        ServerHandle::external(spec.url.clone())
    } else {
        spawned.and_then(ServerHandle::recorded).ok_or_else(|| {
            StepError::new(format!("no server process recorded for {name}"))
                .hint("rerun apply with --force")
        })?
    };
    if let Err(why) = server.check() {
        return Err(
            StepError::new(format!("{name} stopped after its probe passed: {why}"))
                .hint("read its log; rerun apply to start it again"),
        );
    }
    let port = server.local().map(|l| l.port);
    let url = if external {
        spec.url.clone()
    } else {
        probed.url.clone()
    };
    // Never hand off a port that another process answers on.
    if let Err(why) = server.verify_listener(&url) {
        return Err(StepError::new(format!("{name} is not handed off: {why}"))
            .hint("stop the process holding the port, or change `provisioning.ports`; or rerun apply: the probe stops a server whose port another process holds, and the apply after starts it on a free port"));
    }
    // Probed at the bound address; handed off at the advertised one (`listen.advertise`).
    let url = match (&spec.advertise, external) {
        (Some(host), false) => with_host(&url, host),
        _ => url,
    };
    let model_path = expand(cx, &spec.model.path, port);
    // The build the server runs (mode source): its digest and commit; else the binary's.
    let build = cx.the_dep::<CmakeBuildOutputs>()?;
    let file = HandoffFile {
        handoff_version: HANDOFF_VERSION,
        written_by: WRITTEN_BY.into(),
        runtime_dir: cx.roots.runtime.clone(),
        runtime_id: crate::identity::runtime_id(&cx.roots.runtime),
        engine: spec.engine.clone(),
        engine_version: probed.engine_version.clone(),
        provisioning_mode: spec.provisioning_mode.clone(),
        url: cx.redactor.redact(&url),
        pool_id: spec.pool.clone(),
        replica_id: format!("r{}", spec.replica),
        model: HandoffFileModel {
            id: spec.model.id.clone(),
            path: model_path,
        },
        flags: spec
            .flags
            .iter()
            .map(|f| cx.redactor.redact(&expand(cx, f, port)))
            .collect(),
        pid: server.pid(),
        devices: spec.devices.clone(),
        backend: spec.backend.as_str().into(),
        engine_digest: build
            .map(|b| b.engine_digest.clone())
            .or_else(|| server.local().map(|l| l.binary_digest.clone())),
        build_ref: build.and_then(|b| b.build_ref.clone()),
        started_at: server.local().map(|l| l.started_at.clone()),
        log: server.local().map(|l| l.log.display().to_string()),
        written_at: now_rfc3339(),
        auth: spec.auth.clone(),
        memory: probed.memory.clone(),
    };
    let text = serde_json::to_string_pretty(&file).expect("handoff serialises");
    // What write_atomic puts on disk (it adds a newline): the digest `down` checks.
    let digest = sha256(format!("{text}\n").as_bytes());
    // No fsync (on the path from "ready" to "handoff written"): the file describes a running
    // server, which a power loss does not leave either.
    let mode = if spec.group_readable {
        GROUP_READABLE
    } else {
        FILE_MODE
    };
    write_atomic_mode(&path, text.as_bytes(), Durability::NoSync, mode).map_err(|e| {
        StepError::new(format!(
            "cannot write the handoff file {}: {e}",
            path.display()
        ))
        .hint("check that the directory is writable")
    })?;
    Ok(Outcome::new(HandoffOutputs {
        path: path.display().to_string(),
        sha256: Some(digest),
        url: file.url,
        pid: file.pid,
    })
    .artifact(path))
}

/// `url` (`scheme://host:port`) with `host` in place of its host.
fn with_host(url: &str, host: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    // The port follows the last `:` unless that is inside `[v6]`.
    let port = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => &authority[i..],
        _ => "",
    };
    format!("{scheme}://{host}{port}{path}")
}

/// Read a handoff file.
pub fn read(path: &std::path::Path) -> Option<HandoffFile> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::with_host;

    #[test]
    fn the_advertised_host_replaces_the_probed_one() {
        assert_eq!(
            with_host("https://127.0.0.1:8080", "gpu1.example.com"),
            "https://gpu1.example.com:8080"
        );
        assert_eq!(
            with_host("http://[::1]:9000", "[fe80::1]"),
            "http://[fe80::1]:9000"
        );
        assert_eq!(with_host("http://[::1]", "h"), "http://h");
        assert_eq!(with_host("http://10.0.0.1:80/v1", "h"), "http://h:80/v1");
    }
}
