//! The VRAM estimate: what a llama-server process needs on each GPU, mirroring how llama.cpp
//! places a model.
//!
//! Per device, with `split-mode layer` (llama.cpp's default):
//!
//! - **weights**: the repeating layers llama.cpp puts on the device, plus the output layer
//!   (`output.weight`, `output_norm`, or a copy of the token embeddings when they are tied) on
//!   the device of the last layer when every layer is offloaded. The token embeddings (input
//!   layer) stay in host memory, as llama.cpp keeps them.
//!   Layers are placed as llama.cpp does: the last `n_gpu_layers` layers are offloaded, split
//!   by the cumulative `tensor_split` ratios; without `tensor_split`, llama.cpp splits by each
//!   device's free memory, and so does this estimate.
//! - **KV cache**: for each layer on the device, `ctx × kv_heads × (key_length × bytes(K) +
//!   value_length × bytes(V))` — i.e. ctx × layers × kv_heads × head_dim × 2 × bytes per element
//!   for equal K/V. llama-server divides `--ctx-size` among its `--parallel` slots (the slots
//!   share the context), so `parallel` does not multiply it; with
//!   [`FitInput::per_slot_ctx`] (each slot its own `ctx`) it does.
//! - **compute buffer** (activations, one micro-batch of `n_ubatch` tokens, F32):
//!   `4 × n_ubatch × (3 × n_embd + 2 × n_ff)` for the hidden states (a mixture of experts adds
//!   `2 × 4 × n_ubatch × n_expert_used × n_ff_expert`), plus the larger of the
//!   attention scores and their mask (`4 × n_ubatch × (n_head + 1) × ctx`, only without flash
//!   attention) and, on the
//!   device holding the output layer, the logits (`4 × n_ubatch × n_vocab`). The graph
//!   allocator reuses memory, so these peaks do not add up.
//! - **safety margin**: [`MARGIN_FIXED`] per device (the CUDA context, cuBLAS workspaces, which
//!   `nvidia-smi`'s free memory does not yet account for) plus [`MARGIN_FRACTION`] of the rest.

use serde::Serialize;

use crate::gguf::GgmlType;
use crate::model_info::ModelInfo;

pub const MIB: u64 = 1024 * 1024;
/// Fixed part of the per-device safety margin.
pub const MARGIN_FIXED: u64 = 512 * MIB;
/// Proportional part of the per-device safety margin (of weights + KV cache + compute).
pub const MARGIN_FRACTION: f64 = 0.05;
/// llama.cpp's default micro-batch (`--ubatch-size`).
pub const DEFAULT_UBATCH: u64 = 512;

/// How many layers go to the GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum GpuLayers {
    /// Every layer and the output layer (`999`, `all`, a negative number, or anything at least
    /// `block_count + 1`).
    All,
    Count(u64),
}

impl GpuLayers {
    /// `--n-gpu-layers` as written. `auto` (llama.cpp's default) is taken as every layer: a GPU
    /// pool runs with the whole model in VRAM or not at all.
    pub fn parse(s: &str) -> Result<GpuLayers, String> {
        let s = s.trim();
        if s.is_empty() || s == "all" || s == "auto" {
            return Ok(GpuLayers::All);
        }
        match s.parse::<i64>() {
            Ok(n) if n < 0 => Ok(GpuLayers::All),
            Ok(n) => Ok(GpuLayers::Count(n as u64)),
            Err(_) => Err(format!(
                "--n-gpu-layers `{s}` is not a number, `auto` or `all`"
            )),
        }
    }

    fn count(self, n_layer: u64) -> u64 {
        match self {
            GpuLayers::All => n_layer + 1,
            GpuLayers::Count(n) => n.min(n_layer + 1),
        }
    }
}

/// Bytes per element of a KV cache type (`f16`, `q8_0`, …).
pub fn kv_type_bytes(name: Option<&str>) -> Result<f64, String> {
    let name = name.unwrap_or("f16");
    let t = GgmlType::from_name(name)
        .ok_or_else(|| format!("unknown KV cache type `{name}` (f16, bf16, f32, q8_0, q4_0, …)"))?;
    Ok(t.type_size as f64 / t.block_size as f64)
}

/// What a pool asks of a model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FitInput {
    /// `--ctx-size`: the whole KV cache of the server.
    pub ctx: u64,
    pub parallel: u64,
    /// Each slot gets `ctx` of its own (not llama-server's behaviour; kept for other engines).
    pub per_slot_ctx: bool,
    pub gpu_layers: GpuLayers,
    /// One ratio per device; `None`: split by free memory as llama.cpp does.
    pub tensor_split: Option<Vec<f64>>,
    pub kv_bytes_k: f64,
    pub kv_bytes_v: f64,
    pub flash_attn: bool,
    pub n_ubatch: u64,
}

/// One device's share, and the estimate for a pool: the types the vram-fit step records in its
/// outputs (`provision_plan::outputs`), so the estimate is recorded as computed.
pub use provision_plan::outputs::{DeviceFit as DeviceNeed, FitEstimate as Estimate};

/// Which device each of the offloaded layers goes to, as llama.cpp's `load_tensors` does:
/// layer `il` (counting from the first offloaded one) goes to the first device whose
/// cumulative split point exceeds `il / offloaded`.
fn place_layers(offloaded: u64, weights: &[f64]) -> Vec<usize> {
    let total: f64 = weights.iter().sum();
    let mut cumulative = Vec::with_capacity(weights.len());
    let mut acc = 0.0;
    for w in weights {
        acc += w;
        cumulative.push(if total > 0.0 { acc / total } else { 1.0 });
    }
    (0..offloaded)
        .map(|il| {
            let x = il as f32 / offloaded as f32;
            cumulative
                .iter()
                .position(|&c| (c as f32) > x)
                .unwrap_or(weights.len() - 1)
                .min(weights.len() - 1)
        })
        .collect()
}

/// Estimate what `model` needs on `devices` (each `(index, free bytes)`).
pub fn estimate(model: &ModelInfo, input: &FitInput, devices: &[(u32, u64)]) -> Estimate {
    let n_layer = model.block_count;
    let offloaded = input.gpu_layers.count(n_layer);
    let first_gpu_layer = (n_layer + 1).saturating_sub(offloaded);
    let weights: Vec<f64> = match &input.tensor_split {
        Some(split) if split.len() == devices.len() && split.iter().any(|&x| x > 0.0) => {
            split.clone()
        }
        _ => devices.iter().map(|&(_, free)| free as f64).collect(),
    };
    let mut out: Vec<DeviceNeed> = devices
        .iter()
        .map(|&(device, free)| DeviceNeed {
            device,
            layers: 0,
            output_layer: false,
            weights: 0,
            kv_cache: 0,
            compute: 0,
            margin: 0,
            need: 0,
            free,
        })
        .collect();
    if devices.is_empty() {
        return Estimate {
            ctx: input.ctx,
            gpu_layers_offloaded: 0,
            layers_on_host: n_layer,
            devices: out,
        };
    }
    let slots = if input.per_slot_ctx {
        input.parallel.max(1)
    } else {
        1
    };
    let kv_tokens = input.ctx.saturating_mul(slots);
    let placement = place_layers(offloaded, &weights);
    for (i, &dev) in placement.iter().enumerate() {
        let il = first_gpu_layer + i as u64;
        let d = &mut out[dev];
        if il == n_layer {
            d.output_layer = true;
            d.weights += model.output_bytes;
            continue;
        }
        d.layers += 1;
        d.weights += model.layer_bytes[il as usize];
        let kv_heads = model.head_count_kv[il as usize] as f64;
        let per_token = kv_heads
            * (model.key_length as f64 * input.kv_bytes_k
                + model.value_length as f64 * input.kv_bytes_v);
        d.kv_cache += (per_token * kv_tokens as f64).ceil() as u64;
    }
    let ub = input.n_ubatch;
    let n_ff = model
        .feed_forward_length
        .unwrap_or(4 * model.embedding_length);
    let mut hidden = 4 * ub * (3 * model.embedding_length + 2 * n_ff);
    // A mixture of experts: each token's activations through its experts' FFNs (gate and up),
    // beside the hidden states.
    if let (Some((_, used)), Some(ff)) = (model.experts, model.expert_feed_forward_length) {
        hidden += 2 * 4 * ub * used * ff;
    }
    // Without flash attention: the score matrix and, beside it, the F32 mask it is masked with
    // (measured on the real server, benchmark figure 9: leaving the mask out was short by up to
    // 58 MiB at ctx 32768).
    let scores = if input.flash_attn {
        0
    } else {
        4 * ub * model.head_count * kv_tokens + 4 * ub * kv_tokens
    };
    let logits = 4 * ub * model.vocab_size.unwrap_or(0);
    for d in &mut out {
        if d.layers == 0 && !d.output_layer {
            continue;
        }
        let attention = if d.layers > 0 { scores } else { 0 };
        let peak = if d.output_layer {
            attention.max(logits)
        } else {
            attention
        };
        d.compute = hidden + peak;
        let base = d.weights + d.kv_cache + d.compute;
        d.margin = MARGIN_FIXED + (base as f64 * MARGIN_FRACTION).ceil() as u64;
        d.need = base + d.margin;
    }
    Estimate {
        ctx: input.ctx,
        gpu_layers_offloaded: offloaded,
        layers_on_host: first_gpu_layer.min(n_layer),
        devices: out,
    }
}

/// The largest context (a multiple of 256, below `ctx`) that fits every device, or `None` when
/// not even 256 tokens fit.
pub fn largest_fitting_ctx(
    model: &ModelInfo,
    input: &FitInput,
    devices: &[(u32, u64)],
) -> Option<u64> {
    let fits = |ctx: u64| {
        estimate(
            model,
            &FitInput {
                ctx,
                ..input.clone()
            },
            devices,
        )
        .fits()
    };
    if !fits(256) {
        return None;
    }
    let (mut lo, mut hi) = (1u64, input.ctx / 256 + 1);
    // Invariant: lo × 256 fits, hi × 256 does not (or is past the request).
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if fits(mid * 256) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(lo * 256)
}

/// Bytes as GiB/MiB for messages.
pub fn human(bytes: u64) -> String {
    if bytes >= 1024 * MIB {
        format!("{:.2} GiB", bytes as f64 / (1024 * MIB) as f64)
    } else {
        format!("{:.0} MiB", bytes as f64 / MIB as f64)
    }
}
