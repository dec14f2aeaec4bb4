//! The memory request of a replica: what llama-server keeps in host memory, from the same
//! estimator as the vram-fit step (`provision_steps_model::estimate`), read from the model's
//! GGUF header — so only when the model file is on this machine at export time.
//!
//! Host memory holds the token embeddings (llama.cpp never offloads the input layer), the
//! weights and KV cache of the layers not offloaded (all of them in a CPU pool) with their
//! compute buffer, plus the estimator's safety margin (512 MiB + 5 %) for the process itself
//! (runtime libraries, the CUDA host side). GPU memory is not a Kubernetes resource: it is the
//! device count (`nvidia.com/gpu`).

use provision_plan::llama_flags::{to_argv, Flag};
use provision_plan::Backend;
use provision_steps_model::estimate::{
    estimate, kv_type_bytes, FitInput, GpuLayers, MARGIN_FIXED, MARGIN_FRACTION, MIB,
};
use provision_steps_model::vram_fit::{attention_flags, parse_parallel};
use provision_steps_model::ModelInfo;

/// Host bytes a replica needs, or why it cannot be estimated.
pub fn host_need(
    info: &ModelInfo,
    flags: &[Flag],
    backend: Backend,
    devices: usize,
) -> Result<u64, String> {
    let get = |name: &str| {
        flags
            .iter()
            .find(|f| f.name == name)
            .and_then(|f| f.value.as_deref())
    };
    let ctx = match get("--ctx-size").map(str::parse::<u64>) {
        Some(Ok(c)) if c > 0 => c,
        Some(Err(_)) => return Err("--ctx-size is not a number".into()),
        _ => info.context_length.filter(|&c| c > 0).ok_or(
            "the pool sets no ctx and the model has no context_length: set `ctx` on the pool",
        )?,
    };
    let gpu_layers = match backend {
        Backend::Cpu => GpuLayers::Count(0),
        Backend::Cuda => GpuLayers::parse(get("--n-gpu-layers").unwrap_or("all"))?,
    };
    let (flash_attn, n_ubatch) = attention_flags(&to_argv(flags));
    let input = FitInput {
        ctx,
        parallel: parse_parallel(get("--parallel").unwrap_or("1"))?,
        per_slot_ctx: false,
        gpu_layers,
        tensor_split: None,
        kv_bytes_k: kv_type_bytes(get("--cache-type-k"))?,
        kv_bytes_v: kv_type_bytes(get("--cache-type-v"))?,
        flash_attn,
        n_ubatch,
    };
    // Everything, as if on one device; then what the GPUs take of it.
    let unbounded = u64::MAX / 4;
    let whole = estimate(
        info,
        &FitInput {
            gpu_layers: GpuLayers::All,
            ..input.clone()
        },
        &[(0, unbounded)],
    );
    let whole = &whole.devices[0];
    let gpus: Vec<(u32, u64)> = match backend {
        Backend::Cpu => Vec::new(),
        Backend::Cuda => (0..devices.max(1) as u32).map(|d| (d, unbounded)).collect(),
    };
    let on_gpus = estimate(info, &input, &gpus);
    let gpu_weights: u64 = on_gpus.devices.iter().map(|d| d.weights).sum();
    let gpu_kv: u64 = on_gpus.devices.iter().map(|d| d.kv_cache).sum();
    let all_offloaded =
        on_gpus.layers_on_host == 0 && on_gpus.devices.iter().any(|d| d.output_layer);
    let compute = if all_offloaded { 0 } else { whole.compute };
    let base = info.input_bytes
        + whole.weights.saturating_sub(gpu_weights)
        + whole.kv_cache.saturating_sub(gpu_kv)
        + compute;
    Ok(base + MARGIN_FIXED + (base as f64 * MARGIN_FRACTION).ceil() as u64)
}

/// Bytes as a Kubernetes quantity in whole MiB, rounded up.
pub fn mebibytes(bytes: u64) -> String {
    format!("{}Mi", bytes.div_ceil(MIB))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_round_up() {
        assert_eq!(mebibytes(1), "1Mi");
        assert_eq!(mebibytes(MIB), "1Mi");
        assert_eq!(mebibytes(MIB + 1), "2Mi");
    }
}
