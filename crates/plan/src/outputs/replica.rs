//! Outputs of a replica's steps: spawn, probe, handoff.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::Backend;

/// Which process a server is: enough to tell it from a later process with its pid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ServerIdentity {
    pub pid: u32,
    pub pgid: u32,
    /// Its start time, in clock ticks since boot (`/proc/<pid>/stat`).
    pub start_time: u64,
    /// The boot it was started in (empty: unknown).
    #[serde(default)]
    pub boot_id: String,
    /// The marker in its environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// spawn: the running server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SpawnOutputs {
    #[serde(flatten)]
    pub server: ServerIdentity,
    pub port: u16,
    /// The address it binds (`--host`).
    pub host: String,
    /// `scheme://host:port`, as the probe asks it.
    pub url: String,
    /// Its own log.
    pub log: String,
    pub pid_file: String,
    /// The binary it runs …
    pub binary: String,
    /// … and that binary's `sha256:<hex>`.
    pub binary_digest: String,
    pub backend: Backend,
    pub devices: Vec<u32>,
    pub started_at: String,
    /// Its handoff file, removed while it is not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff_path: Option<String>,
    /// The layers its argv asks to put on the GPUs (`--n-gpu-layers N`); absent: every one.
    /// The probe checks the server's own load report against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_layers: Option<u64>,
}

/// probe: the replica answered, and what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProbeOutputs {
    /// The URL probed, credentials redacted.
    pub url: String,
    /// How long it took to become ready.
    pub ready_ms: u64,
    pub engine_version: String,
    /// Where the version came from (`/props`, `/v1/models`, `--version`, `ref`).
    pub engine_version_source: String,
    /// The handoff file it removed while it waited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff_path: Option<String>,
    /// What the server allocated, per device, as its own load report (its log) says: the
    /// engine's device name (`CUDA0`, `Host`) → the bytes. Empty for an external server, or
    /// a log that reports no buffer.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub memory: BTreeMap<String, DeviceMemory>,
}

/// What a server allocated on one device, from its load report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceMemory {
    /// The GPU as `nvidia-smi` numbers it (the pool's `devices`); absent for host memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<u32>,
    /// What the vram-fit estimated one server needs there (weights, KV cache, compute and
    /// the safety margin): beside `actual_bytes`, how right the estimate was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_bytes: Option<u64>,
    /// Everything the server allocated there: the sum of the parts below.
    pub actual_bytes: u64,
    /// The model's weights.
    pub model_bytes: u64,
    /// The KV cache (and a recurrent model's state).
    pub kv_bytes: u64,
    /// The output (logits) buffer.
    pub output_bytes: u64,
    /// The compute (activations) buffer.
    pub compute_bytes: u64,
}

/// handoff: the file written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HandoffOutputs {
    pub path: String,
    /// `sha256:<hex>` of the file as written: removed only while it still matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub url: String,
    /// The server handed off (none for an external one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}
