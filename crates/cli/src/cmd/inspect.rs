//! `provision inspect MODEL_REF`: resolve a model ref (a path, `file:`, `hf:`, `https://`, or a
//! bare name in the model cache), read its GGUF header and print its metadata and the memory
//! estimate for a context size.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use provision_executor::Cancel;
use provision_plan::model_ref::ModelRef;
use provision_steps_model::digest::DigestCache;
use provision_steps_model::estimate::{estimate, human, DeviceNeed, FitInput, GpuLayers};
use provision_steps_model::{resolve, ModelEnv, ModelInfo, Resolved, Where};
use serde_json::json;

use crate::exit::Exit;

use crate::args::{CacheDir, Loudness, Output};

#[derive(Args)]
pub struct InspectArgs {
    /// A path, `file:PATH`, `hf:ORG/REPO/FILE.gguf[@REV]`, `https://…` or a cached name.
    model_ref: String,
    /// Context size for the estimate [default: the model's training context].
    #[arg(long, value_name = "N")]
    ctx: Option<u64>,
    /// `--parallel` slots (they share the context in llama-server).
    #[arg(long, value_name = "N", default_value_t = 1)]
    parallel: u64,
    // Downloaded models go to `<cache>/models`.
    #[command(flatten)]
    cache: CacheDir,
    #[command(flatten)]
    output: Output,
    #[command(flatten)]
    loudness: Loudness,
}

/// `provision inspect`.
pub fn run(args: InspectArgs) -> ExitCode {
    args.loudness.init_tracing();
    inspect(
        &args.model_ref,
        args.ctx,
        args.parallel,
        args.output.json(),
        args.loudness.quiet(),
        &args.cache.dir(),
    )
}

/// Run `inspect`. `cache_dir` is the provision cache root (models go to `<cache>/models`);
/// `quiet`: no download progress on stderr.
fn inspect(
    model_ref: &str,
    ctx: Option<u64>,
    parallel: u64,
    json: bool,
    quiet: bool,
    cache_dir: &Path,
) -> ExitCode {
    let source = match ModelRef::parse(model_ref) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(Exit::Invalid);
        }
    };
    let at = Where {
        cache_dir: cache_dir.join("models"),
        digests: DigestCache::new(cache_dir.join("models/digests.json")),
        base_dir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
    };
    let resolved = match resolve(
        &source,
        None,
        &at,
        &ModelEnv::from_env(),
        &Cancel::new(),
        &mut |line| {
            if !json && !quiet {
                eprintln!("{line}");
            }
        },
    ) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {}", e.message);
            if let Some(h) = e.hint {
                eprintln!("  hint: {h}");
            }
            return ExitCode::from(Exit::Unexpected);
        }
    };
    let info = match ModelInfo::open(&resolved.path) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {}: {e}", resolved.path.display());
            return ExitCode::from(Exit::Unexpected);
        }
    };
    let ctx = ctx.or(info.context_length).unwrap_or(4096);
    let input = FitInput {
        ctx,
        parallel: parallel.max(1),
        per_slot_ctx: false,
        gpu_layers: GpuLayers::All,
        tensor_split: None,
        kv_bytes_k: 2.0,
        kv_bytes_v: 2.0,
        flash_attn: false,
        n_ubatch: provision_steps_model::estimate::DEFAULT_UBATCH,
    };
    // One device with unbounded memory: the whole model's need.
    let est = estimate(&info, &input, &[(0, u64::MAX / 4)]);
    let d = &est.devices[0];
    if json {
        print_json(&resolved, &info, d, ctx, input.parallel);
    } else {
        print_text(&resolved, &info, d, ctx, input.parallel);
    }
    ExitCode::from(Exit::Ok)
}

/// The metadata and the estimate as one JSON object on stdout.
fn print_json(resolved: &Resolved, info: &ModelInfo, d: &DeviceNeed, ctx: u64, parallel: u64) {
    let body = json!({
        "path": resolved.path.display().to_string(),
        "size": resolved.size,
        "digest": resolved.digest,
        "model": info,
        "estimate": {
            "ctx": ctx,
            "parallel": parallel,
            "kv_cache_type": "f16",
            "flash_attn": false,
            "weights": d.weights,
            "kv_cache": d.kv_cache,
            "compute": d.compute,
            "margin": d.margin,
            "vram_total": d.need,
            "host_weights": info.input_bytes,
        },
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&body).expect("serialisable")
    );
}

/// The metadata and the estimate, one line each, on stdout.
fn print_text(resolved: &Resolved, info: &ModelInfo, d: &DeviceNeed, ctx: u64, parallel: u64) {
    println!("{}", resolved.path.display());
    println!(
        "  size          {} ({} bytes)",
        human(resolved.size),
        resolved.size
    );
    println!("  digest        {}", resolved.digest);
    println!("  gguf version  {}", info.gguf_version);
    println!("  architecture  {}", info.architecture);
    if let Some(n) = &info.name {
        println!("  name          {n}");
    }
    if let Some(ft) = info.file_type {
        println!(
            "  file type     {} ({ft})",
            info.file_type_name.unwrap_or("unknown")
        );
    }
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    println!("  context       {}", opt(info.context_length));
    println!("  layers        {}", info.block_count);
    println!("  embedding     {}", info.embedding_length);
    println!("  feed forward  {}", opt(info.feed_forward_length));
    let kv = info.head_count_kv.iter().copied().max().unwrap_or(0);
    println!(
        "  heads         {} (KV {kv}, head dim {}/{})",
        info.head_count, info.key_length, info.value_length
    );
    println!("  vocab         {}", opt(info.vocab_size));
    println!(
        "  tensors       {} ({} of weights)",
        info.tensor_count,
        human(info.weight_bytes)
    );
    println!(
        "memory at ctx {ctx}, parallel {} (f16 KV cache, no flash attention, every layer on the GPU):",
        parallel
    );
    println!("  weights       {}", human(d.weights));
    println!("  KV cache      {}", human(d.kv_cache));
    println!("  compute       {}", human(d.compute));
    println!("  margin        {}", human(d.margin));
    println!("  VRAM total    {}", human(d.need));
    println!(
        "  host memory   {} (token embeddings)",
        human(info.input_bytes)
    );
}
