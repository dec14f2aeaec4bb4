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

use std::collections::BTreeMap;
use std::path::Path;

use provision_executor::{Outcome, StepContext, StepError};
use provision_plan::memory_settings::{
    FlashAttn, GpuLayers as PlanGpuLayers, MemorySettings, SplitMode,
};
use provision_plan::outputs::{ComputeApp, FitInputs, Gpu, ModelResolveOutputs, VramFitOutputs};
use provision_plan::step::VramFit;
use provision_plan::StepId;

use crate::estimate::{human, kv_type_bytes, Estimate, FitInput, GpuLayers, DEFAULT_UBATCH};
use crate::ledger::{place, Entry, Placement};
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
pub fn fit_input(
    m: &MemorySettings,
    devices: &[u32],
    model: &ModelInfo,
) -> Result<FitInput, String> {
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
            if main >= devices.len() {
                return Err(format!(
                    "--main-gpu {main} names no device of the pool (it has {}): give an index below {}",
                    devices.len(),
                    devices.len()
                ));
            }
            Some(
                (0..devices.len())
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
        flash_attn: match m.flash_attn {
            FlashAttn::On => true,
            FlashAttn::Off => false,
            FlashAttn::Auto => flash_attn_auto(model),
        },
        n_ubatch: u64::from(m.effective_ubatch()),
    })
}

/// The head sizes (K = V) llama.cpp's CUDA flash-attention kernels take.
const CUDA_FA_HEAD_SIZES: [u64; 8] = [40, 64, 72, 80, 96, 112, 128, 256];

/// What `--flash-attn auto` (llama.cpp's default) comes to on a CUDA GPU: on when its kernels
/// take the model's head sizes (llama.cpp turns it off only where the device cannot run the
/// op), so the estimate has no attention-scores buffer; off otherwise.
pub fn flash_attn_auto(model: &ModelInfo) -> bool {
    let (k, v) = (model.key_length, model.value_length);
    (k == v && CUDA_FA_HEAD_SIZES.contains(&k)) || (k, v) == (576, 512)
}

/// What the GPUs hold now, read once per apply for every vram-fit step (the caller reads it:
/// `nvidia-smi`, and which processes are this project's servers).
#[derive(Debug, Clone, Default)]
pub struct Reading {
    pub gpus: Vec<Gpu>,
    pub apps: Vec<ComputeApp>,
    /// The replicas (`pool/rN`) whose recorded servers are alive now, by their own records
    /// (pid, start time, marker): running even where `apps` cannot name them (a driver in
    /// another PID namespace).
    pub alive: std::collections::BTreeSet<String>,
}

/// The ledger's entries of a vram-fit step: the pools placed before it, then its own pool;
/// each model's header read once.
fn entries(spec: &VramFit, cx: &StepContext<'_>) -> Result<Vec<Entry>, StepError> {
    let mut models: BTreeMap<String, ModelInfo> = BTreeMap::new();
    let mut model = |id: &StepId| -> Result<ModelInfo, StepError> {
        let path = &cx.dep::<ModelResolveOutputs>(id)?.path;
        if let Some(m) = models.get(path) {
            return Ok(m.clone());
        }
        let m = ModelInfo::open(Path::new(path))
            .map_err(|e| StepError::new(format!("cannot read the model header of {path}: {e}")))?;
        models.insert(path.clone(), m.clone());
        Ok(m)
    };
    let mut out = Vec::with_capacity(spec.placed_before.len() + 1);
    for p in &spec.placed_before {
        let m = model(&p.model)?;
        let input = fit_input(&p.memory, &p.devices, &m).map_err(|e| {
            StepError::new(format!(
                "vram-fit for pool `{}`: pool `{}`: {e}",
                spec.pool, p.pool
            ))
        })?;
        out.push(Entry {
            pool: p.pool.clone(),
            devices: p.devices.clone(),
            replicas: p.replicas,
            model: m,
            input,
        });
    }
    let m = model(&spec.model)?;
    let input = fit_input(&spec.memory, &spec.devices, &m)
        .map_err(|e| StepError::new(format!("vram-fit for pool `{}`: {e}", spec.pool)))?;
    out.push(Entry {
        pool: spec.pool.clone(),
        devices: spec.devices.clone(),
        replicas: spec.replicas,
        model: m,
        input,
    });
    Ok(out)
}

/// The placement of the step's pool beside the pools before it, on the GPUs as read.
fn placement(
    spec: &VramFit,
    cx: &StepContext<'_>,
    reading: &Reading,
) -> Result<(Vec<Entry>, Placement), StepError> {
    let entries = entries(spec, cx)?;
    let placement = place(&entries, &reading.gpus, &reading.apps).map_err(|e| {
        StepError::new(format!("vram-fit for pool `{}`: {e}", spec.pool))
            .hint("check `devices` in the config against `nvidia-smi -L`")
    })?;
    Ok((entries, placement))
}

/// Run vram-fit: place the pool on the ledger of its devices; `POOL_UNAVAILABLE` when it does
/// not fit beside what is there and the pools before it.
pub fn run(spec: &VramFit, cx: &StepContext<'_>, reading: &Reading) -> Result<Outcome, StepError> {
    let (entries, placement) = placement(spec, cx, reading)?;
    let own = entries.last().expect("the pool itself is an entry");
    let (est, placed) = placement.pools.last().expect("one result per entry");
    let kept = !placed && kept(spec, cx, reading, est);
    if !placed && !kept {
        return Err(crate::refusal::unavailable(own, est, &placement.devices));
    }
    let mut summary = format!(
        "pool `{}` {} at ctx {} ({} layers offloaded, {} replica{}):",
        spec.pool,
        if kept {
            "is kept as it runs (its servers hold their memory)"
        } else {
            "fits"
        },
        est.ctx,
        est.gpu_layers_offloaded,
        spec.replicas,
        if spec.replicas == 1 { "" } else { "s" }
    );
    for d in &placement.devices {
        summary.push_str(&format!(
            " GPU {} left {} after {};",
            d.device,
            human(u64::try_from(d.left).unwrap_or(0)),
            d.shares
                .iter()
                .filter(|s| s.placed)
                .map(|s| format!("`{}` {}×{}", s.pool, s.replicas, human(s.per_replica)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    crate::resolve::log_line(&cx.log, &summary);
    Ok(Outcome::new(VramFitOutputs {
        fits: true,
        ctx: est.ctx,
        estimate: est.clone(),
        inputs: FitInputs {
            flash_attn: own.input.flash_attn,
            n_ubatch: own.input.n_ubatch,
            parallel: own.input.parallel,
        },
        ledger: placement.devices,
        extra_flags: FIT_OFF.iter().map(|f| f.to_string()).collect(),
        extra_flags_when: "the binary's --help lists --fit".into(),
    }))
}

/// Liveness: the pool still fits on its devices as read now. A pool whose every replica is
/// running there is not refused here: its servers already hold their memory (a restart would
/// be checked again, when its settings change).
pub fn check_alive(spec: &VramFit, cx: &StepContext<'_>, reading: &Reading) -> Result<(), String> {
    let (_, placement) = placement(spec, cx, reading).map_err(|e| e.message)?;
    let (_, placed) = placement.pools.last().expect("one result per entry");
    if *placed || all_running(spec, reading) {
        return Ok(());
    }
    let short: Vec<String> = placement
        .devices
        .iter()
        .filter(|d| d.left < 0)
        .map(|d| {
            format!(
                "GPU {} is short by {}",
                d.device,
                human(d.left.unsigned_abs())
            )
        })
        .collect();
    Err(format!(
        "the pool no longer fits on its GPUs as they are now: {}",
        short.join(", ")
    ))
}

/// Whether the pool's servers all run and need what they needed when the fit last passed
/// (same ctx, same devices, same need in all): a fit that runs again because the pools before
/// it changed, not the pool itself, then keeps them as they are (they hold their memory; the
/// estimate's margin is not theirs to find again). A change of the pool's own memory settings
/// or replicas is checked against the reading of now.
fn kept(spec: &VramFit, cx: &StepContext<'_>, reading: &Reading, est: &Estimate) -> bool {
    let Some(before) = cx.previous::<VramFitOutputs>() else {
        return false;
    };
    let shape = |e: &Estimate| {
        (
            e.ctx,
            e.devices.iter().map(|d| d.device).collect::<Vec<_>>(),
            e.devices.iter().map(|d| d.need).sum::<u64>(),
        )
    };
    shape(&before.estimate) == shape(est) && all_running(spec, reading)
}

/// Whether every replica of the pool is a running server of this project: alive by its own
/// record, or seen on each device among the GPU's processes.
fn all_running(spec: &VramFit, reading: &Reading) -> bool {
    (0..spec.replicas).all(|r| {
        let name = provision_plan::ReplicaId::new(&spec.pool, r).to_string();
        if reading.alive.contains(&name) {
            return true;
        }
        spec.devices.iter().all(|d| {
            let Some(gpu) = reading.gpus.iter().find(|g| g.index == *d) else {
                return false;
            };
            reading
                .apps
                .iter()
                .any(|a| a.gpu_uuid == gpu.uuid && a.replica.as_deref() == Some(name.as_str()))
        })
    })
}
