//! The memory-relevant settings of a server, resolved by the planner from a pool's normalised
//! flags (by its engine: llama.cpp's reading is `engine/llamacpp_memory.rs`): what the vram-fit
//! step estimates with. They are the vram-fit spec's own fields, so a change to any of them
//! changes its fingerprint and the fit is checked again (issue 14: every input of a step is in
//! its spec). Unset values are the engine's defaults, written out, so the plan shows what the
//! estimate assumes.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::engine::llamacpp_memory::{
    raw_index, AUTO_PARALLEL, DEFAULT_BATCH, DEFAULT_CACHE_TYPE, DEFAULT_UBATCH,
};

/// How many layers go to the GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum GpuLayers {
    /// Every layer and the output layer (`all`, `auto`, a negative number).
    All,
    /// The last `n` layers (the output layer counts as one).
    Count(u32),
}

/// `--flash-attn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FlashAttn {
    On,
    Off,
    /// llama.cpp's default: on where the backend supports it. The estimate takes it as on for
    /// the head sizes llama.cpp's CUDA kernels take, off otherwise.
    Auto,
}

/// `--split-mode`: how a model is spread over several GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SplitMode {
    /// Whole layers per GPU (llama.cpp's default).
    Layer,
    /// Rows of each layer's weights across GPUs.
    Row,
    /// Everything on the main GPU.
    None,
}

/// What a llama-server's memory use depends on, besides its model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MemorySettings {
    /// `--ctx-size`, when set and positive (else the model's training context).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctx: Option<u32>,
    /// `--parallel`: sequences sharing the KV cache (`-1`/`auto` resolved to 4).
    pub parallel: u32,
    /// `--n-gpu-layers`.
    pub n_gpu_layers: GpuLayers,
    /// `--batch-size`.
    pub batch_size: u32,
    /// `--ubatch-size`.
    pub ubatch_size: u32,
    /// `--flash-attn` (or `-fa`).
    pub flash_attn: FlashAttn,
    /// `--cache-type-k`.
    pub cache_type_k: String,
    /// `--cache-type-v`.
    pub cache_type_v: String,
    /// `--tensor-split` (the pool's `tensor_split`, or the flag): one ratio per device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tensor_split: Option<Vec<f64>>,
    /// `--split-mode`.
    pub split_mode: SplitMode,
    /// `--main-gpu`: the index, among the pool's devices, of the GPU that holds everything
    /// with `split_mode: none`.
    pub main_gpu: u32,
}

/// A flag's value that cannot be used, with the flag's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadFlag {
    pub flag: String,
    pub message: String,
    pub help: String,
}

impl MemorySettings {
    /// The micro-batch llama.cpp runs: `--ubatch-size`, at most `--batch-size`.
    pub fn effective_ubatch(&self) -> u32 {
        self.ubatch_size.min(self.batch_size).max(1)
    }
}
