//! `provision inspect MODEL_REF`: resolve a model ref (a path, `file:`, `hf:`, `https://`, or a
//! bare name in the model cache), read its GGUF header (every shard's, of a split model) and
//! print its metadata and the memory estimate for a context size. Only the header of a file already there is read; `--verify`
//! hashes the whole file (and compares it with `--checksum` when given).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use provision_executor::Cancel;
use provision_plan::model_ref::{parse_checksum, ModelRef};
use provision_steps_model::digest::DigestCache;
use provision_steps_model::estimate::{estimate, human, DeviceNeed, FitInput, GpuLayers};
use provision_steps_model::hash_progress::HashProgress;
use provision_steps_model::{locate, resolve, ModelEnv, ModelInfo, Resolved, Where};
use serde_json::json;

use crate::exit::Exit;

use crate::args::{CacheDir, Loudness, Output};

#[derive(Args)]
pub struct InspectArgs {
    /// A path, `file:PATH`, `hf:ORG/REPO/FILE.gguf[@REV]`, `hf:ORG/REPO:QUANT[@REV]`,
    /// `https://…` or a cached name; of a split model, its first shard (`…-00001-of-0000N.gguf`).
    model_ref: String,
    /// Context size for the estimate [default: the model's training context].
    #[arg(long, value_name = "N")]
    ctx: Option<u64>,
    /// `--parallel` slots (they share the context in llama-server).
    #[arg(long, value_name = "N", default_value_t = 1)]
    parallel: u64,
    /// Hash the whole file (sha256) [default: read only its header].
    #[arg(long)]
    verify: bool,
    /// With `--verify`: the sha256 the file must have (`sha256:HEX`), else exit 1.
    #[arg(long, value_name = "SHA256", requires = "verify")]
    checksum: Option<String>,
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
    let checksum = match args.checksum.as_deref().map(parse_checksum).transpose() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: --checksum: {e}");
            return ExitCode::from(Exit::Invalid);
        }
    };
    let check = match (args.verify, checksum) {
        (false, _) => Check::Header,
        (true, c) => Check::Verify(c),
    };
    inspect(
        &args.model_ref,
        (args.ctx, args.parallel),
        &check,
        (args.output.json(), args.loudness.quiet()),
        &args.cache.dir(),
    )
}

/// How much of the file `inspect` reads.
enum Check {
    /// Its GGUF header only.
    Header,
    /// Every byte: its sha256, compared with this checksum when given.
    Verify(Option<String>),
}

/// The model file, hashed or not.
struct Found {
    path: PathBuf,
    /// Every file of the model: `path` and, when it is split, its other shards.
    files: Vec<PathBuf>,
    /// Of every file.
    size: u64,
    /// With `--verify`.
    digest: Option<String>,
}

/// Run `inspect` for `(ctx, parallel)`. `cache_dir` is the provision cache root (models go to
/// `<cache>/models`); `(json, quiet)`: the output, and no download progress on stderr.
fn inspect(
    model_ref: &str,
    (ctx, parallel): (Option<u64>, u64),
    check: &Check,
    (json, quiet): (bool, bool),
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
    let env = ModelEnv::from_env();
    let cancel = Cancel::new();
    let tty = std::io::stderr().is_terminal();
    let mut log = |line: String| {
        if !json && !quiet {
            show(&line, tty);
        }
    };
    let found = match check {
        Check::Header => locate(&source, &at, &env, &cancel, &mut log).map(|l| Found {
            path: l.path,
            files: l.shards,
            size: l.size,
            digest: None,
        }),
        Check::Verify(checksum) => {
            resolve(&source, checksum.as_deref(), &at, &env, &cancel, &mut log).map(
                |r: Resolved| Found {
                    path: r.path,
                    files: r.shards,
                    size: r.size,
                    digest: Some(r.digest),
                },
            )
        }
    };
    let resolved = match found {
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
fn print_json(resolved: &Found, info: &ModelInfo, d: &DeviceNeed, ctx: u64, parallel: u64) {
    let body = json!({
        "path": resolved.path.display().to_string(),
        "files": resolved.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
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
fn print_text(resolved: &Found, info: &ModelInfo, d: &DeviceNeed, ctx: u64, parallel: u64) {
    println!("{}", resolved.path.display());
    if resolved.files.len() > 1 {
        println!(
            "  split         {} shards (llama-server is given the first and opens the others beside it)",
            resolved.files.len()
        );
    }
    println!(
        "  size          {} ({} bytes)",
        human(resolved.size),
        resolved.size
    );
    match &resolved.digest {
        Some(d) => println!("  digest        {d}"),
        None => println!("  digest        not computed (header only: --verify hashes the file)"),
    }
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

/// A line resolving logged: as it is, but a hashing's progress only on a terminal, as one
/// line rewritten in place (`hashing 1.2 GiB of 4.9 GiB, 310.0 MiB/s, ETA 12s`).
fn show(line: &str, tty: bool) {
    match HashProgress::parse(line) {
        Some(p) if tty => {
            eprint!("\r\x1b[2K{}", p.describe());
            if p.done >= p.total {
                eprintln!();
            }
        }
        Some(_) => {}
        None => eprintln!("{line}"),
    }
}
