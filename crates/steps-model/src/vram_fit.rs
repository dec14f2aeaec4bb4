//! The vram-fit step: before anything is spawned, check that the pool's model, KV cache and
//! compute buffers fit in the free VRAM of its devices (see [`crate::estimate`] for the
//! formula), else fail with `POOL_UNAVAILABLE: …` listing, per device, what is needed, what is
//! free and the largest context that would fit.
//!
//! Inputs: the model-resolve output `path` and the gpu-check output `gpus` (an array of
//! `{index, memory_free_mib, …}`); everything else from its spec: the pool's memory-relevant
//! settings (ctx, parallel, batch sizes, flash attention, KV cache types, layers, split), which
//! the planner resolved from the pool's flags, so a change to any of them runs the fit again.
//!
//! Outputs: `estimate` (per device: layers, weights, kv_cache, compute, margin, need, free — in
//! bytes), `ctx`, `fits` (true) and `extra_flags`: the flags the spawn step must add so that
//! llama.cpp keeps every layer in VRAM. Recent llama.cpp has `--fit on` by default, which may
//! shrink unset arguments or keep layers in host memory to make a model fit; a GPU pool must
//! instead fail loudly. `extra_flags` is `["--fit", "off"]`, a record of what the planner puts
//! in every GPU spawn's argv (the engine's `residency_flags`); the spawn leaves it out when the
//! binary's `--help` does not list `--fit`, since older builds reject unknown flags.

use provision_executor::{Outcome, StepContext, StepError};
use provision_plan::memory_settings::{FlashAttn, GpuLayers as PlanGpuLayers, SplitMode};
use provision_plan::outputs::{
    FitInputs, Gpu, GpuCheckOutputs, ModelResolveOutputs, VramFitOutputs,
};
use provision_plan::step::VramFit;

use crate::estimate::{
    estimate, human, kv_type_bytes, largest_fitting_ctx, Estimate, FitInput, GpuLayers,
    DEFAULT_UBATCH, MIB,
};
use crate::model_info::ModelInfo;

/// What the spawn step adds to a GPU pool's argv so that nothing is moved to host memory.
pub const FIT_OFF: [&str; 2] = ["--fit", "off"];

/// `--parallel` as llama-server reads it (for callers that hold raw flags; the vram-fit step
/// reads its spec): `-1`/`auto` is 4 slots sharing one context.
pub fn parse_parallel(s: &str) -> Result<u64, String> {
    match s.trim() {
        "" | "auto" | "-1" => Ok(4),
        v => v
            .parse::<u64>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("--parallel `{v}` is not a positive number")),
    }
}

/// `--flash-attn` and `--ubatch-size` from an argv (for callers that hold raw flags; the
/// vram-fit step reads its spec): `(flash_attn, n_ubatch)`. Flash attention
/// counts as on only when asked for (`-fa`, `-fa on`, `--flash-attn on`); `auto`, llama.cpp's
/// default, may turn it off, so the estimate assumes the larger buffers.
pub fn attention_flags(argv: &[String]) -> (bool, u64) {
    let mut fa = false;
    let mut ubatch = DEFAULT_UBATCH;
    let mut i = 0;
    while i < argv.len() {
        let (name, inline) = match argv[i].split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (argv[i].as_str(), None),
        };
        let next = || inline.clone().or_else(|| argv.get(i + 1).cloned());
        match name {
            "-fa" | "--flash-attn" => match next().as_deref() {
                Some("on") | Some("1") | Some("true") | Some("enabled") => fa = true,
                Some("off") | Some("0") | Some("false") | Some("disabled") | Some("auto") => {
                    fa = false
                }
                // The old spelling: a bare switch.
                _ => fa = true,
            },
            "-ub" | "--ubatch-size" => {
                if let Some(n) = next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .filter(|&n| n > 0)
                {
                    ubatch = n;
                }
            }
            _ => {}
        }
        i += 1;
    }
    (fa, ubatch)
}

/// The estimator's input for a pool's memory settings: everything comes from the spec (the
/// planner resolved it from the pool's flags), nothing from the plan or other steps.
pub fn fit_input(spec: &VramFit, model: &ModelInfo) -> Result<FitInput, String> {
    let m = &spec.memory;
    let ctx = match m.ctx {
        Some(c) if c > 0 => u64::from(c),
        _ => model.context_length.filter(|&c| c > 0).ok_or(
            "the pool sets no ctx and the model has no context_length: set `ctx` on the pool",
        )?,
    };
    let tensor_split = match m.split_mode {
        // Everything on the main GPU (its index among the pool's devices).
        SplitMode::None => {
            let main = m.main_gpu as usize;
            if main >= spec.devices.len() {
                return Err(format!(
                    "--main-gpu {main} names no device of the pool (it has {}): give an index below {}",
                    spec.devices.len(),
                    spec.devices.len()
                ));
            }
            Some(
                (0..spec.devices.len())
                    .map(|i| if i == main { 1.0 } else { 0.0 })
                    .collect(),
            )
        }
        // Rows are split by the same ratios as layers; the estimate places whole layers.
        SplitMode::Layer | SplitMode::Row => m.tensor_split.clone(),
    };
    Ok(FitInput {
        ctx,
        parallel: u64::from(m.parallel.max(1)),
        per_slot_ctx: false,
        gpu_layers: match m.n_gpu_layers {
            PlanGpuLayers::All => GpuLayers::All,
            PlanGpuLayers::Count(n) => GpuLayers::Count(u64::from(n)),
        },
        tensor_split,
        kv_bytes_k: kv_type_bytes(Some(&m.cache_type_k))?,
        kv_bytes_v: kv_type_bytes(Some(&m.cache_type_v))?,
        // `auto` may turn it off: the estimate assumes the larger buffers.
        flash_attn: m.flash_attn == FlashAttn::On,
        n_ubatch: u64::from(m.effective_ubatch()),
    })
}

/// Free bytes of each of `devices`, from the gpu-check output `gpus`.
pub fn free_memory(devices: &[u32], gpus: &[Gpu]) -> Result<Vec<(u32, u64)>, String> {
    devices
        .iter()
        .map(|&d| {
            gpus.iter()
                .find(|g| g.index == d)
                .map(|g| (d, g.memory_free_mib * MIB))
                .ok_or_else(|| format!("gpu-check found no GPU {d} (or no free memory for it)"))
        })
        .collect()
}

/// The `POOL_UNAVAILABLE` error for an estimate that does not fit.
pub fn unavailable(pool: &str, est: &Estimate, largest: Option<u64>) -> StepError {
    let mut lines = vec![format!(
        "POOL_UNAVAILABLE: pool `{pool}` does not fit in the free VRAM of its GPUs at ctx {}",
        est.ctx
    )];
    for d in &est.devices {
        lines.push(format!(
            "  GPU {}: need {} (weights {}, KV cache {}, compute {}, margin {}; {} layers{}), free {}{}",
            d.device,
            human(d.need),
            human(d.weights),
            human(d.kv_cache),
            human(d.compute),
            human(d.margin),
            d.layers,
            if d.output_layer { " + output" } else { "" },
            human(d.free),
            if d.fits() { "" } else { "  <- short" }
        ));
    }
    lines.push(match largest {
        Some(c) => format!("  largest ctx that fits: {c}"),
        None => "  largest ctx that fits: none — the weights alone do not fit".into(),
    });
    let hint = match largest {
        Some(c) => format!("set `ctx: {c}` (or less) on the pool, use a smaller quantisation or KV cache type (`--cache-type-k q8_0`), free the GPUs, or add devices"),
        None => "use a smaller quantisation, free the GPUs, or add devices to the pool".into(),
    };
    StepError::new(lines.join("\n")).hint(hint)
}

/// Check the estimate for a pool against free memory; `Ok` is the estimate, `Err` the
/// `POOL_UNAVAILABLE` error.
pub fn check(
    spec: &VramFit,
    model: &ModelInfo,
    free: &[(u32, u64)],
) -> Result<(FitInput, Estimate), StepError> {
    let input = fit_input(spec, model)
        .map_err(|e| StepError::new(format!("vram-fit for pool `{}`: {e}", spec.pool)))?;
    let est = estimate(model, &input, free);
    if !est.fits() {
        let largest = largest_fitting_ctx(model, &input, free);
        return Err(unavailable(&spec.pool, &est, largest));
    }
    Ok((input, est))
}

/// Run vram-fit.
pub fn run(spec: &VramFit, cx: &StepContext<'_>) -> Result<Outcome, StepError> {
    let path = cx
        .the_dep::<ModelResolveOutputs>()?
        .ok_or_else(|| StepError::new("vram-fit: no model-resolve step before it"))?
        .path
        .clone();
    let gpus = &cx
        .the_dep::<GpuCheckOutputs>()?
        .ok_or_else(|| StepError::new("vram-fit: no gpu-check step before it"))?
        .gpus;
    let free = free_memory(&spec.devices, gpus).map_err(StepError::new)?;
    let model = ModelInfo::open(std::path::Path::new(&path))
        .map_err(|e| StepError::new(format!("cannot read the model header of {path}: {e}")))?;
    let (input, est) = check(spec, &model, &free)?;
    let mut summary = format!(
        "pool `{}` fits at ctx {} ({} layers offloaded):",
        spec.pool, est.ctx, est.gpu_layers_offloaded
    );
    for d in &est.devices {
        summary.push_str(&format!(
            " GPU {} needs {} of {} free;",
            d.device,
            human(d.need),
            human(d.free)
        ));
    }
    crate::resolve::log_line(&cx.log, &summary);
    Ok(Outcome::new(VramFitOutputs {
        fits: true,
        ctx: est.ctx,
        estimate: est.clone(),
        inputs: FitInputs {
            flash_attn: input.flash_attn,
            n_ubatch: input.n_ubatch,
            parallel: input.parallel,
        },
        extra_flags: FIT_OFF.iter().map(|f| f.to_string()).collect(),
        extra_flags_when: "the binary's --help lists --fit".into(),
    }))
}
