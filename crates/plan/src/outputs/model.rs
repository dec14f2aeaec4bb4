//! Outputs of the model steps: model-resolve and vram-fit.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::LedgerDevice;

/// model-resolve: the verified GGUF.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ModelResolveOutputs {
    /// Absolute path of the GGUF: `${model_path}` of dependents.
    pub path: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Bytes.
    pub size: u64,
    /// From the GGUF header (`unknown` when it says none).
    pub architecture: String,
}

/// vram-fit: the pool fits, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VramFitOutputs {
    pub fits: bool,
    pub ctx: u64,
    pub estimate: FitEstimate,
    /// The memory-relevant inputs the estimate used.
    pub inputs: FitInputs,
    /// The devices of the pool as the fit found them: what else is there, what each pool
    /// sharing them takes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ledger: Vec<LedgerDevice>,
    /// Flags the spawn adds (`--fit off`) …
    pub extra_flags: Vec<String>,
    /// … when this holds.
    pub extra_flags_when: String,
}

/// The memory estimate of a pool, per device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FitEstimate {
    pub ctx: u64,
    pub gpu_layers_offloaded: u64,
    /// Repeating layers left in host memory.
    pub layers_on_host: u64,
    pub devices: Vec<DeviceFit>,
}

impl FitEstimate {
    /// Whether every device has what it needs.
    pub fn fits(&self) -> bool {
        self.devices.iter().all(DeviceFit::fits)
    }
}

/// What one device needs and has, in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceFit {
    /// The GPU index as `nvidia-smi` numbers it.
    pub device: u32,
    /// Repeating layers on this device.
    pub layers: u64,
    pub output_layer: bool,
    pub weights: u64,
    pub kv_cache: u64,
    pub compute: u64,
    pub margin: u64,
    /// weights + kv_cache + compute + margin.
    pub need: u64,
    pub free: u64,
}

impl DeviceFit {
    /// Whether the device has what it needs.
    pub fn fits(&self) -> bool {
        self.need <= self.free
    }
}

/// The spawn flags the estimate read besides the context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FitInputs {
    pub flash_attn: bool,
    pub n_ubatch: u64,
    pub parallel: u64,
}
