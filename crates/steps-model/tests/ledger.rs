//! The device ledger (issue 15, finding 1): replicas and pools on one GPU add up, other
//! processes are outside the free memory and named, this project's own running servers are not
//! counted twice, and an earlier pool never pushes out a later pool's running servers.
//! Models are sparse GGUF files shaped like a real Llama-3-8B at Q4_K.

use provision_plan::outputs::{ComputeApp, Gpu};
use provision_steps_model::estimate::MIB;
use provision_steps_model::gguf_writer::{GgufWriter, LlamaShape};
use provision_steps_model::ledger::{place, Entry, Placement};
use provision_steps_model::refusal::unavailable;
use provision_steps_model::{FitInput, GpuLayers, ModelInfo};

const UUID: &str = "GPU-6f1a2b3c-0000-1111-2222-333344445555";

fn llama_8b_q4k() -> ModelInfo {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("llama-3-8b-q4_k.gguf");
    GgufWriter::llama(LlamaShape {
        n_layer: 32,
        n_embd: 4096,
        n_head: 32,
        n_head_kv: 8,
        n_ff: 14336,
        n_vocab: 128_256,
        n_ctx_train: 8192,
        weight_type: 12,
        output: true,
    })
    .write(&path)
    .unwrap();
    ModelInfo::open(&path).unwrap()
}

fn input(ctx: u64) -> FitInput {
    FitInput {
        ctx,
        parallel: 1,
        per_slot_ctx: false,
        gpu_layers: GpuLayers::All,
        tensor_split: None,
        kv_bytes_k: 2.0,
        kv_bytes_v: 2.0,
        flash_attn: false,
        n_ubatch: 512,
    }
}

fn pool(name: &str, replicas: u32, model: &ModelInfo) -> Entry {
    Entry {
        pool: name.into(),
        devices: vec![0],
        replicas,
        model: model.clone(),
        input: input(8192),
    }
}

/// One RTX 3090 with `free` MiB free.
fn rtx_3090(free: u64) -> Vec<Gpu> {
    vec![Gpu {
        index: 0,
        uuid: UUID.into(),
        name: "NVIDIA GeForce RTX 3090".into(),
        memory_total_mib: 24576,
        memory_free_mib: free,
        driver: "550.54.14".into(),
        compute_capability: "8.6".into(),
    }]
}

fn app(pid: u32, mib: u64, replica: Option<&str>) -> ComputeApp {
    ComputeApp {
        pid,
        gpu_uuid: UUID.into(),
        used_memory_mib: Some(mib),
        replica: replica.map(str::to_string),
    }
}

fn placed(p: &Placement) -> Vec<bool> {
    p.pools.iter().map(|(_, placed)| *placed).collect()
}

/// What one server of the model needs on the card (the estimate's `need`).
fn one_server(model: &ModelInfo) -> u64 {
    let p = place(&[pool("x", 1, model)], &rtx_3090(23_912), &[]).unwrap();
    p.pools[0].0.devices[0].need
}

#[test]
fn replicas_of_a_pool_add_up_on_its_device() {
    let m = llama_8b_q4k();
    let need = one_server(&m);
    // About 6-7 GiB each: 3 fit on 23.35 GiB free, 4 do not.
    assert!(need > 5 * 1024 * MIB && need < 8 * 1024 * MIB, "{need}");
    let fits = place(&[pool("chat", 3, &m)], &rtx_3090(23_912), &[]).unwrap();
    assert_eq!(placed(&fits), [true]);
    let four = place(&[pool("chat", 4, &m)], &rtx_3090(23_912), &[]).unwrap();
    assert_eq!(placed(&four), [false]);
    let share = &four.devices[0].shares[0];
    assert_eq!((share.replicas, share.total), (4, 4 * need));
}

#[test]
fn a_second_pool_on_the_device_counts_the_first() {
    let m = llama_8b_q4k();
    let entries = [pool("chat", 2, &m), pool("batch", 2, &m)];
    let p = place(&entries, &rtx_3090(23_912), &[]).unwrap();
    assert_eq!(placed(&p), [true, false]);
    let d = &p.devices[0];
    assert!(d.left >= 0, "what `chat` left: {}", d.left);
    let err = unavailable(&entries[1], &p.pools[1].0, &p.devices);
    let text = err.message;
    assert!(
        text.starts_with("POOL_UNAVAILABLE: pool `batch` (2 replicas)"),
        "{text}"
    );
    assert!(
        text.contains(&format!("GPU 0 (NVIDIA GeForce RTX 3090, {UUID})")),
        "{text}"
    );
    assert!(text.contains("pool `chat`: 2 replicas × "), "{text}");
    assert!(text.contains("pool `batch`: 2 replicas × "), "{text}");
    assert!(text.contains("<- this pool"), "{text}");
    let hint = err.hint.unwrap();
    assert!(hint.contains("--flash-attn on"), "{hint}");
    assert!(hint.contains("q8_0"), "{hint}");
    assert!(hint.contains("replicas: 1"), "{hint}");
    assert!(
        !hint.to_lowercase().contains("n-gpu-layers"),
        "never a CPU offload: {hint}"
    );
}

#[test]
fn other_processes_are_outside_free_memory_and_named() {
    let m = llama_8b_q4k();
    // Another tenant took 14 GiB: 9.35 GiB free.
    let apps = [app(4242, 14_336, None)];
    let entries = [pool("chat", 2, &m)];
    let p = place(&entries, &rtx_3090(23_912 - 14_336), &apps).unwrap();
    assert_eq!(placed(&p), [false]);
    assert_eq!(p.devices[0].others, apps);
    let text = unavailable(&entries[0], &p.pools[0].0, &p.devices).message;
    assert!(
        text.contains("other processes: pid 4242 14.00 GiB"),
        "{text}"
    );
    assert!(text.contains("short by"), "{text}");
}

#[test]
fn this_projects_running_servers_are_not_counted_twice() {
    let m = llama_8b_q4k();
    let need_mib = one_server(&m) / MIB;
    // `chat`'s 3 servers run (using a little less than estimated): free is what they left.
    let apps = [
        app(101, need_mib - 200, Some("chat/r0")),
        app(102, need_mib - 200, Some("chat/r1")),
        app(103, need_mib - 200, Some("chat/r2")),
    ];
    let free = 23_912 - 3 * (need_mib - 200);
    let p = place(&[pool("chat", 3, &m)], &rtx_3090(free), &apps).unwrap();
    assert_eq!(placed(&p), [true], "re-applying a running pool");
    assert!(p.devices[0].others.is_empty());
    assert_eq!(p.devices[0].theirs, 3 * (need_mib - 200) * MIB);
    // Without the attribution the same reading would refuse it.
    let foreign: Vec<ComputeApp> = apps
        .iter()
        .map(|a| app(a.pid, need_mib - 200, None))
        .collect();
    let p = place(&[pool("chat", 3, &m)], &rtx_3090(free), &foreign).unwrap();
    assert_eq!(placed(&p), [false]);
}

#[test]
fn an_earlier_pool_does_not_take_a_later_pools_running_servers_memory() {
    let m = llama_8b_q4k();
    let need_mib = one_server(&m) / MIB;
    // `later` runs 2 servers; `first` (before it in the config) is new and wants 2 as well:
    // all four do not fit, and `later`'s servers are not stopped for it.
    let apps = [
        app(201, need_mib, Some("later/r0")),
        app(202, need_mib, Some("later/r1")),
    ];
    let free = 23_912 - 2 * need_mib;
    let entries = [pool("first", 2, &m), pool("later", 2, &m)];
    let p = place(&entries, &rtx_3090(free), &apps).unwrap();
    assert_eq!(placed(&p), [false, true]);
    let text = unavailable(&entries[0], &p.pools[0].0, &p.devices).message;
    assert!(
        text.contains("this project's `later/r0`, staying"),
        "{text}"
    );
}

#[test]
fn a_device_the_reading_lacks_is_an_error() {
    let m = llama_8b_q4k();
    let mut e = pool("chat", 1, &m);
    e.devices = vec![3];
    let err = place(&[e], &rtx_3090(23_912), &[]).err().unwrap();
    assert!(err.contains("no GPU 3"), "{err}");
}

#[test]
fn no_fitting_ctx_says_what_does_not_fit() {
    let m = llama_8b_q4k();
    // The weights fit 5000 MiB; with the compute buffers and the per-server margin they do
    // not, at any ctx.
    let entries = [pool("chat", 1, &m)];
    let p = place(&entries, &rtx_3090(5000), &[]).unwrap();
    assert_eq!(placed(&p), [false]);
    let weights = p.pools[0].0.devices[0].weights;
    assert!(weights < 5000 * MIB, "{weights}");
    let text = unavailable(&entries[0], &p.pools[0].0, &p.devices).message;
    assert!(!text.contains("the weights alone do not fit"), "{text}");
    assert!(
        text.contains("largest ctx that fits: none — not even 256 tokens: one server needs "),
        "{text}"
    );
    assert!(text.contains("(weights 3.93 GiB, compute "), "{text}");
    // Weights that do not fit alone are said so.
    let p = place(&entries, &rtx_3090(3000), &[]).unwrap();
    let text = unavailable(&entries[0], &p.pools[0].0, &p.devices).message;
    assert!(text.contains("the weights alone do not fit"), "{text}");
}
