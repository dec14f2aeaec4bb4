//! Outputs of the steps that look at the host: preflight-tools and gpu-check.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// preflight-tools: every tool it found, by what it is (`cmake`, `C compiler`) → its path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PreflightToolsOutputs {
    pub tools: BTreeMap<String, String>,
}

/// gpu-check: every GPU found, for vram-fit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GpuCheckOutputs {
    pub gpus: Vec<Gpu>,
}

/// One GPU as `nvidia-smi` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Gpu {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    pub memory_total_mib: u64,
    pub memory_free_mib: u64,
    pub driver: String,
    /// `8.6`; empty when the driver is too old to report it.
    pub compute_capability: String,
}
