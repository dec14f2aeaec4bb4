//! model-resolve and vram-fit as the executor calls them: real plans over temp roots.

use std::collections::BTreeMap;
use std::fs;

use provision_executor::StepError;
use provision_plan::outputs::{Gpu, GpuCheckOutputs, ModelResolveOutputs};
use provision_plan::step::{ModelResolve, StepSpec, VramFit};
use provision_plan::StepOutputs;
use provision_steps_model::estimate::{estimate, MIB};
use provision_steps_model::gguf_writer::{GgufWriter, LlamaShape};
use provision_steps_model::hash_progress::HashProgress;
use provision_steps_model::hf::HfEnv;
use provision_steps_model::ledger::{place, Entry};
use provision_steps_model::resolve::NOT_HASHED;
use provision_steps_model::vram_fit::{fit_input, Reading};
use provision_steps_model::{Estimate, FitInput};
use provision_steps_model::{ModelEnv, ModelInfo};
use provision_steps_testkit::Workspace;
use serde_json::json;

fn config(checksum: &str, extra_flags: &str) -> String {
    format!(
        "pools:
  - id: gpu-pool
    engine: llamacpp
    model: tiny
    devices: [0]
    ctx: 4096
    provisioning:
      mode: binary
      binary: {{path: /opt/llama/llama-server}}
      model:
        ref: ./models/tiny.gguf
{checksum}      flags: [{extra_flags}]
"
    )
}

fn shape() -> LlamaShape {
    LlamaShape {
        n_layer: 32,
        n_embd: 4096,
        n_head: 32,
        n_head_kv: 8,
        n_ff: 14336,
        n_vocab: 128_256,
        n_ctx_train: 131_072,
        weight_type: 8,
        output: true,
    }
}

fn env() -> ModelEnv {
    ModelEnv {
        hf: HfEnv {
            endpoint: "http://127.0.0.1:9".into(),
            token: None,
            hub_cache: "/nonexistent".into(),
        },
    }
}

fn resolve_spec(ws: &Workspace) -> ModelResolve {
    match &ws.step("model-resolve").spec {
        StepSpec::ModelResolve(m) => m.clone(),
        _ => unreachable!(),
    }
}

/// GPUs `(index, free MiB)` of 24 GiB each, with no process on them.
fn reading(free: &[(u32, u64)]) -> Reading {
    Reading {
        gpus: free
            .iter()
            .map(|&(index, free)| Gpu {
                index,
                uuid: format!("GPU-{index}"),
                name: "NVIDIA GeForce RTX 3090".into(),
                memory_total_mib: 24576,
                memory_free_mib: free,
                driver: "550.54.14".into(),
                compute_capability: "8.6".into(),
            })
            .collect(),
        apps: Vec::new(),
        alive: Default::default(),
    }
}

/// The fit of one pool alone on GPUs with `free` bytes: its input and estimate, or the
/// `POOL_UNAVAILABLE` error.
fn check(
    spec: &VramFit,
    model: &ModelInfo,
    free: &[(u32, u64)],
) -> Result<(FitInput, Estimate), StepError> {
    let input = fit_input(&spec.memory, &spec.devices, model).map_err(StepError::new)?;
    let entry = Entry {
        pool: spec.pool.clone(),
        devices: spec.devices.clone(),
        replicas: spec.replicas,
        model: model.clone(),
        input: input.clone(),
    };
    let mib: Vec<(u32, u64)> = free.iter().map(|&(d, b)| (d, b / MIB)).collect();
    let p = place(std::slice::from_ref(&entry), &reading(&mib).gpus, &[]).unwrap();
    let (est, placed) = &p.pools[0];
    if !placed {
        return Err(provision_steps_model::refusal::unavailable(
            &entry, est, &p.devices,
        ));
    }
    Ok((input, est.clone()))
}

fn fit_spec(ws: &Workspace) -> VramFit {
    match &ws.step("vram-fit").spec {
        StepSpec::VramFit(m) => m.clone(),
        _ => unreachable!(),
    }
}

fn write_model(ws: &Workspace) -> std::path::PathBuf {
    let dir = ws.dir.path().join("config/models");
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tiny.gguf");
    GgufWriter::llama(LlamaShape {
        n_layer: 2,
        n_embd: 64,
        n_head: 4,
        n_head_kv: 2,
        n_ff: 128,
        n_vocab: 300,
        n_ctx_train: 4096,
        weight_type: 0,
        output: true,
    })
    .write(&path)
    .unwrap();
    path
}

#[test]
fn local_model_resolve_outputs_and_warm_facts_read_nothing() {
    let ws = Workspace::new(&config("", ""));
    let path = write_model(&ws);
    let spec = resolve_spec(&ws);
    let cx = ws.cx("model-resolve", BTreeMap::new());
    // The check reads no byte of a model not hashed yet: the run hashes it.
    let facts0 = provision_steps_model::facts(&spec, &cx, &env()).unwrap();
    assert_eq!(facts0["digest"], NOT_HASHED);
    let outcome = provision_steps_model::run(&spec, &cx, &env()).unwrap();
    // The run settles the digest; the next check finds the same facts in the cache.
    let facts1 = outcome.settled.clone();
    let out = recorded(outcome.outputs);
    assert!(out["path"].as_str().unwrap().ends_with("models/tiny.gguf"));
    let digest = facts1["digest"].clone();
    assert!(digest.starts_with("sha256:"), "{facts1:?}");
    assert_eq!(out["digest"], json!(digest));
    assert_eq!(out["size"], json!(fs::metadata(&path).unwrap().len()));
    assert_eq!(out["architecture"], "llama");
    // Same facts on a warm apply, and the digest comes from the cache (no read).
    let facts2 = provision_steps_model::facts(&spec, &cx, &env()).unwrap();
    assert_eq!(facts1, facts2);
    let cache = provision_steps_model::resolve::digest_cache(&cx);
    let d = cache.digest(&path, &cx.cancel).unwrap();
    assert_eq!(d.bytes_read, 0);
    // The run logged the hashing: the final progress line, every byte.
    let log = fs::read_to_string(&cx.log).unwrap();
    let logged = log.lines().rev().find_map(HashProgress::parse).unwrap();
    assert_eq!(
        (logged.done, logged.total),
        (d.identity.size, d.identity.size)
    );
    // A rewritten file changes the facts: the run hashes it again, to the same digest.
    let bytes = fs::read(&path).unwrap();
    fs::remove_file(&path).unwrap();
    fs::write(&path, &bytes).unwrap();
    let facts3 = provision_steps_model::facts(&spec, &cx, &env()).unwrap();
    assert_ne!(
        facts1["inode"].clone() + &facts1["mtime_ns"],
        facts3["inode"].clone() + &facts3["mtime_ns"]
    );
    assert_eq!(facts3["digest"], NOT_HASHED);
    let outcome = provision_steps_model::run(&spec, &cx, &env()).unwrap();
    assert_eq!(facts1["digest"], outcome.settled["digest"]);
}

#[test]
fn local_checksum_mismatch_and_missing_and_foreign_files() {
    let wrong = format!("sha256:{}", "0".repeat(64));
    let ws = Workspace::new(&config(&format!("        checksum: {wrong}\n"), ""));
    let path = write_model(&ws);
    let spec = resolve_spec(&ws);
    let cx = ws.cx("model-resolve", BTreeMap::new());
    let err = provision_steps_model::run(&spec, &cx, &env()).unwrap_err();
    assert!(
        err.message.starts_with("checksum mismatch for"),
        "{}",
        err.message
    );
    assert!(err
        .message
        .contains(&format!("expected {wrong}, got sha256:")));
    assert!(path.exists(), "the user's file is untouched");

    let ws = Workspace::new(&config("", ""));
    let spec = resolve_spec(&ws);
    let cx = ws.cx("model-resolve", BTreeMap::new());
    let err = provision_steps_model::run(&spec, &cx, &env()).unwrap_err();
    assert!(err.message.contains("does not exist"), "{}", err.message);

    let dir = ws.dir.path().join("config/models");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("tiny.gguf"), b"<html>not a model</html>").unwrap();
    let err = provision_steps_model::run(&spec, &cx, &env()).unwrap_err();
    assert!(err.message.contains("not a GGUF file"), "{}", err.message);
}

/// Outputs as the state file records them (the field names state version 1 wrote).
fn recorded(outputs: Option<StepOutputs>) -> serde_json::Value {
    serde_json::to_value(outputs.expect("outputs")).unwrap()
}

fn deps(model: &std::path::Path, free_mib: u64) -> BTreeMap<String, StepOutputs> {
    let mut d = BTreeMap::new();
    d.insert(
        "model-resolve:tiny.gguf".into(),
        ModelResolveOutputs {
            path: model.display().to_string(),
            digest: "sha256:00".into(),
            size: 0,
            architecture: "llama".into(),
        }
        .into(),
    );
    d.insert(
        "gpu-check".into(),
        GpuCheckOutputs {
            gpus: vec![Gpu {
                index: 0,
                uuid: "GPU-1".into(),
                name: "NVIDIA GeForce RTX 3090".into(),
                memory_total_mib: 24576,
                memory_free_mib: free_mib,
                driver: "550.54.14".into(),
                compute_capability: "8.6".into(),
            }],
        }
        .into(),
    );
    d
}

#[test]
fn vram_fit_passes_with_its_estimate_and_the_residency_flags() {
    let ws = Workspace::new(&config("", ""));
    let model = write_model(&ws);
    let cx = ws.cx("vram-fit", deps(&model, 23_912));
    let out = provision_steps_model::vram_fit::run(&fit_spec(&ws), &cx, &reading(&[(0, 23_912)]))
        .unwrap();
    let out = recorded(out.outputs);
    assert_eq!(out["fits"], true);
    assert_eq!(out["ctx"], 4096);
    assert_eq!(out["extra_flags"], json!(["--fit", "off"]));
    let dev = &out["estimate"]["devices"][0];
    assert_eq!(dev["device"], 0);
    assert_eq!(dev["free"], 23_912 * MIB);
    // KV: 4096 × 2 layers × 2 heads × 16 × 2 × 2 bytes.
    assert_eq!(dev["kv_cache"], 4096 * 2 * 2 * 16 * 2 * 2);
}

#[test]
fn vram_fit_fails_with_pool_unavailable_before_spawn() {
    let ws = Workspace::new(&config("", ""));
    let model = write_model(&ws);
    // 100 MiB free: less than the safety margin alone.
    let cx = ws.cx("vram-fit", deps(&model, 100));
    let err = provision_steps_model::vram_fit::run(&fit_spec(&ws), &cx, &reading(&[(0, 100)]))
        .unwrap_err();
    assert!(
        err.message.starts_with("POOL_UNAVAILABLE: pool `gpu-pool`"),
        "{}",
        err.message
    );
    assert!(
        err.message
            .contains("GPU 0 (NVIDIA GeForce RTX 3090, GPU-0): 100 MiB of 24.00 GiB free now"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("pool `gpu-pool`: 1 replica × "),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("largest ctx that fits: none"),
        "{}",
        err.message
    );
}

#[test]
fn pool_unavailable_names_the_largest_ctx_that_fits() {
    // An 8B-like Q8_0 model (sparse file) on a 12 GiB card at ctx 32768.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.gguf");
    GgufWriter::llama(shape()).write(&path).unwrap();
    let model = ModelInfo::open(&path).unwrap();
    let ws = Workspace::new(&config("", "--flash-attn, \"on\""));
    let mut spec = fit_spec(&ws);
    spec.memory.ctx = Some(32_768);
    let free = [(0u32, 12_288 * MIB)];
    let err = check(&spec, &model, &free).unwrap_err();
    assert!(
        err.message.starts_with("POOL_UNAVAILABLE:"),
        "{}",
        err.message
    );
    let largest: u64 = err
        .message
        .lines()
        .find_map(|l| l.trim().strip_prefix("largest ctx that fits: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        largest > 0 && largest < 32_768 && largest.is_multiple_of(256),
        "{largest}"
    );
    let input = fit_input(&spec.memory, &spec.devices, &model).unwrap();
    assert!(input.flash_attn);
    let at = |ctx| {
        estimate(
            &model,
            &provision_steps_model::FitInput {
                ctx,
                ..input.clone()
            },
            &free,
        )
    };
    assert!(at(largest).fits());
    assert!(!at(largest + 256).fits());
    assert!(err.hint.unwrap().contains(&format!("ctx: {largest}")));
    // Two such cards, split 1:1, fit.
    let mut two = spec.clone();
    two.devices = vec![0, 1];
    two.memory.tensor_split = Some(vec![1.0, 1.0]);
    let (_, est) = check(&two, &model, &[(0, 12_288 * MIB), (1, 12_288 * MIB)]).unwrap();
    assert_eq!(est.devices[0].layers + est.devices[1].layers, 32);
}

#[test]
fn the_fit_reads_split_mode_and_batch_sizes_from_its_spec() {
    use provision_plan::memory_settings::{FlashAttn, SplitMode};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.gguf");
    GgufWriter::llama(shape()).write(&path).unwrap();
    let model = ModelInfo::open(&path).unwrap();
    let ws = Workspace::new(&config("", ""));
    let mut spec = fit_spec(&ws);
    spec.devices = vec![0, 1];
    let free = [(0, 24_576 * MIB), (1, 24_576 * MIB)];
    // split-mode none: every layer on the main GPU (index 1 of the pool's devices).
    spec.memory.split_mode = SplitMode::None;
    spec.memory.main_gpu = 1;
    let (_, est) = check(&spec, &model, &free).unwrap();
    assert_eq!((est.devices[0].layers, est.devices[1].layers), (0, 32));
    spec.memory.main_gpu = 2;
    let err = check(&spec, &model, &free).unwrap_err();
    assert!(err.message.contains("--main-gpu 2"), "{}", err.message);
    // llama.cpp runs micro-batches of at most --batch-size tokens; flash attention as given.
    spec.memory.split_mode = SplitMode::Layer;
    spec.memory.ubatch_size = 4096;
    spec.memory.batch_size = 1024;
    spec.memory.flash_attn = FlashAttn::On;
    let input = fit_input(&spec.memory, &spec.devices, &model).unwrap();
    assert_eq!(input.n_ubatch, 1024);
    assert!(input.flash_attn);
    spec.memory.flash_attn = FlashAttn::Off;
    let input = fit_input(&spec.memory, &spec.devices, &model).unwrap();
    assert!(!input.flash_attn);
}

/// `--flash-attn auto`, llama.cpp's default, is on for CUDA where its kernels take the
/// model's head size (128 here): an 8B at ctx 131072 fits a 3090 (≈ 22 GiB) as it does for
/// llama.cpp, where assuming it off needs ≈ 30 GiB and refused it (issue 15, finding 7).
#[test]
fn flash_attention_auto_is_what_llama_cpp_does_on_cuda() {
    use provision_plan::memory_settings::FlashAttn;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("llama-3.1-8b-q4_k.gguf");
    GgufWriter::llama(LlamaShape {
        weight_type: 12,
        ..shape()
    })
    .write(&path)
    .unwrap();
    let model = ModelInfo::open(&path).unwrap();
    let ws = Workspace::new(&config("", ""));
    let mut spec = fit_spec(&ws);
    spec.memory.ctx = Some(131_072);
    assert_eq!(spec.memory.flash_attn, FlashAttn::Auto, "the default");
    let free = [(0u32, 23_912 * MIB)];
    let (input, est) = check(&spec, &model, &free).unwrap();
    assert!(input.flash_attn);
    let gib = |b: u64| b as f64 / (1024.0 * MIB as f64);
    assert!(
        (20.0..23.0).contains(&gib(est.devices[0].need)),
        "{}",
        gib(est.devices[0].need)
    );
    spec.memory.flash_attn = FlashAttn::Off;
    let err = check(&spec, &model, &free).unwrap_err();
    assert!(
        err.message.starts_with("POOL_UNAVAILABLE"),
        "{}",
        err.message
    );
    assert!(err.hint.unwrap().contains("--flash-attn on"));
    // A head size the CUDA kernels do not take: auto comes to off.
    let odd = dir.path().join("odd-heads.gguf");
    GgufWriter::llama(LlamaShape {
        n_embd: 4000,
        n_head: 40,
        ..shape()
    })
    .write(&odd)
    .unwrap();
    let odd = ModelInfo::open(&odd).unwrap();
    spec.memory.flash_attn = FlashAttn::Auto;
    assert!(
        !fit_input(&spec.memory, &spec.devices, &odd)
            .unwrap()
            .flash_attn
    );
}

/// A server on 127.0.0.1 that serves `body` only to a request whose query carries `sig=<sig>`
/// (403 otherwise); the request targets it saw.
fn signed_server(
    body: Vec<u8>,
    sig: &'static str,
) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let mut h = String::new();
            while reader.read_line(&mut h).is_ok_and(|n| n > 2) {
                h.clear();
            }
            let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let head = line.starts_with("HEAD");
            log.lock().unwrap().push(target.clone());
            let ok = target.contains(&format!("sig={sig}"));
            let (status, payload): (&str, &[u8]) = if ok {
                ("200 OK", &body)
            } else {
                ("403 Forbidden", b"")
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                payload.len()
            );
            if !head {
                let _ = conn.write_all(payload);
            }
        }
    });
    (port, seen)
}

#[test]
fn a_signed_model_url_gets_its_signature_from_the_step_secrets_only_at_the_request() {
    const SIG: &str = "s1gnature-0401";
    let bytes = GgufWriter::llama(LlamaShape {
        n_layer: 2,
        n_embd: 64,
        n_head: 4,
        n_head_kv: 2,
        n_ff: 128,
        n_vocab: 300,
        n_ctx_train: 4096,
        weight_type: 0,
        output: true,
    })
    .to_bytes();
    let (port, seen) = signed_server(bytes, SIG);
    let url = format!("http://127.0.0.1:{port}/m.gguf?sig={SIG}");
    let mut ws = Workspace::new(&config("", "").replace("./models/tiny.gguf", &format!("'{url}'")));
    let spec = resolve_spec(&ws);
    assert_eq!(
        spec.source,
        provision_plan::model_ref::ModelRef::Url {
            url: format!("http://127.0.0.1:{port}/m.gguf?sig=${{secret:source.sig}}")
        }
    );
    let cx = ws.cx("model-resolve", BTreeMap::new());
    let out = provision_steps_model::run(&spec, &cx, &env()).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(recorded(out.outputs.clone())["architecture"], "llama");
    assert!(seen
        .lock()
        .unwrap()
        .iter()
        .any(|t| t.ends_with(&format!("sig={SIG}"))));
    let shown = format!("{out:?} {}", ws.log_text());
    assert!(!shown.contains(SIG), "{shown}");
    drop(cx);

    // Without its secrets (a plan read back from JSON alone): refused, naming the step and the
    // secret, and nothing is asked.
    let before = seen.lock().unwrap().len();
    ws.plan.secrets = Default::default();
    let cx = ws.cx("model-resolve", BTreeMap::new());
    let err = provision_steps_model::facts(&spec, &cx, &env()).unwrap_err();
    assert!(
        err.message.contains("step model-resolve:") && err.message.contains("`source.sig`"),
        "{}",
        err.message
    );
    assert!(err.hint.unwrap().contains("plan again"));
    assert_eq!(seen.lock().unwrap().len(), before);
}
