//! What the GPU tests of the cli share: a project directory with a tiny GGUF model and a
//! stand-in `nvidia-smi` in its `bin/` that answers provision's two queries as a real one does
//! (`--format=csv,noheader,nounits`): the GPU list from `bin/gpus.csv` and the compute
//! processes from `bin/apps.csv` (none when absent). A test changes those files to change
//! the host: another tenant's process, less free memory. With `bin/gpus.1.csv`,
//! `bin/gpus.2.csv`, … present, each GPU query prints the next one (the last one from then
//! on): free memory that changes between calls.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use provision_steps_model::gguf_writer::{GgufWriter, LlamaShape};

/// The GPU query provision asks `nvidia-smi`.
pub const QUERY: &str =
    "--query-gpu=index,uuid,name,memory.total,memory.free,driver_version,compute_cap";
/// The compute-process query.
pub const APPS_QUERY: &str = "--query-compute-apps=pid,gpu_uuid,used_memory";
/// The UUID of the first GPU of every fixture host.
pub const UUID0: &str = "GPU-6f1a2b3c-0000-1111-2222-333344445555";
/// A host with one RTX 3090, as `nvidia-smi --format=csv,noheader,nounits` prints it.
pub const ONE_GPU: &str = "0, GPU-6f1a2b3c-0000-1111-2222-333344445555, NVIDIA GeForce RTX 3090, 24576, 23912, 550.54.14, 8.6\n";
/// Two RTX 3090s.
pub const TWO_3090: &str = "0, GPU-6f1a2b3c-0000-1111-2222-333344445555, NVIDIA GeForce RTX 3090, 24576, 23912, 550.54.14, 8.6\n\
1, GPU-0b7e4d21-9c3a-4f55-8e12-a1b2c3d4e5f6, NVIDIA GeForce RTX 3090, 24576, 24135, 550.54.14, 8.6\n";
/// A mixed host: an RTX 3060 in the first PCI slot, an RTX 3090 in the second. CUDA's
/// default order (fastest first) would call the 3090 device 0; nvidia-smi (PCI order) calls it
/// 1, and provision pins by `CUDA_DEVICE_ORDER=PCI_BUS_ID` so the two agree.
pub const MIXED_3060_3090: &str = "0, GPU-6f1a2b3c-0000-1111-2222-333344445555, NVIDIA GeForce RTX 3060, 12288, 11950, 550.54.14, 8.6\n\
1, GPU-0b7e4d21-9c3a-4f55-8e12-a1b2c3d4e5f6, NVIDIA GeForce RTX 3090, 24576, 24135, 550.54.14, 8.6\n";

/// Eight H100 80GB HBM3 (a DGX-style host).
pub fn eight_h100() -> String {
    (0..8)
        .map(|i| {
            let uuid = if i == 0 {
                UUID0.to_string()
            } else {
                format!("GPU-a100{i:04x}-5e1c-4d2b-9f00-00000000000{i}")
            };
            format!("{i}, {uuid}, NVIDIA H100 80GB HBM3, 81559, 81003, 550.54.15, 9.0\n")
        })
        .collect()
}

/// A new project directory: `model.gguf` and `bin/nvidia-smi` answering with one RTX 3090
/// (put `bin/` first in `PATH`).
pub fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    GgufWriter::llama(LlamaShape {
        n_layer: 2,
        n_embd: 64,
        n_head: 4,
        n_head_kv: 2,
        n_ff: 128,
        n_vocab: 300,
        n_ctx_train: 4096,
        weight_type: 1,
        output: true,
    })
    .write(&dir.path().join("model.gguf"))
    .unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let smi = bin.join("nvidia-smi");
    std::fs::write(
        &smi,
        format!(
            r#"#!/bin/sh
here=$(dirname "$0")
[ "$2" = "--format=csv,noheader,nounits" ] || {{ echo "unexpected args: $*" >&2; exit 64; }}
case "$1" in
{QUERY})
    if [ -e "$here/gpus.1.csv" ]; then
        n=$(( $(cat "$here/gpu-calls" 2>/dev/null || echo 0) + 1 ))
        echo "$n" > "$here/gpu-calls"
        while [ "$n" -gt 1 ] && [ ! -e "$here/gpus.$n.csv" ]; do n=$((n - 1)); done
        cat "$here/gpus.$n.csv"
    else
        cat "$here/gpus.csv"
    fi ;;
{APPS_QUERY})
    [ ! -e "$here/apps.csv" ] || cat "$here/apps.csv" ;;
*)
    echo "unexpected args: $*" >&2; exit 64 ;;
esac
"#
        ),
    )
    .unwrap();
    std::fs::set_permissions(&smi, std::fs::Permissions::from_mode(0o755)).unwrap();
    set_gpus(dir.path(), ONE_GPU);
    dir
}

/// What the stand-in lists as the host's GPUs from now on.
pub fn set_gpus(project: &Path, csv: &str) {
    std::fs::write(project.join("bin/gpus.csv"), csv).unwrap();
}

/// What the stand-in lists as compute processes (`pid, uuid, MiB` lines) from now on.
pub fn set_apps(project: &Path, csv: &str) {
    std::fs::write(project.join("bin/apps.csv"), csv).unwrap();
}

/// One RTX 3090 with `free` MiB free.
pub fn one_3090_with_free(free: u64) -> String {
    format!("0, {UUID0}, NVIDIA GeForce RTX 3090, 24576, {free}, 550.54.14, 8.6\n")
}

/// Set in a pool's env: the test binary then runs as the fake llama-server.
pub const AS_SERVER: &str = "PROVISION_TEST_AS_LLAMA_SERVER";

/// `provision ARGS` in `project`, its `bin/` (the stand-in `nvidia-smi`) first on PATH.
pub fn provision(project: &Path, args: &[&str]) -> std::process::Command {
    let path = std::env::join_paths(std::iter::once(project.join("bin")).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_provision"));
    cmd.args(args)
        .current_dir(project)
        .env_remove(AS_SERVER)
        .env("PATH", path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd
}

/// A GPU pool served by this test binary as the fake llama-server (on a host of 8 CUDA
/// devices, of which it sees those `CUDA_VISIBLE_DEVICES` names): `id`, `replicas` on
/// `devices`, and extra YAML lines for the pool (indented by four spaces).
pub fn gpu_pool(id: &str, replicas: u32, devices: &str, extra: &str) -> String {
    format!(
        "  - id: {id}
    engine: llamacpp
    model: m
    devices: {devices}
    replicas: {replicas}
    ctx: 2048
    readiness_timeout_ms: 60000
{extra}    provisioning:
      mode: binary
      binary: {{path: \"{}\"}}
      model: {{ref: ./model.gguf}}
      env: {{{AS_SERVER}: \"1\", FAKE_GPUS: \"8\"}}
      flags: [--threads, \"1\"]
",
        std::env::current_exe().unwrap().display()
    )
}

/// `provision apply -c pools.yaml --cache-dir cache --json` in `project`: the output and the
/// events it printed.
pub fn apply_json(project: &Path) -> (std::process::Output, Vec<serde_json::Value>) {
    let out = provision(
        project,
        &[
            "apply",
            "-c",
            "pools.yaml",
            "--cache-dir",
            "cache",
            "--json",
        ],
    )
    .output()
    .unwrap();
    let events = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (out, events)
}

/// Whether `events` say step `id` was started.
pub fn started(events: &[serde_json::Value], id: &str) -> bool {
    events.iter().any(|e| {
        e.get("event").and_then(serde_json::Value::as_str) == Some("started")
            && e.get("step").and_then(serde_json::Value::as_str) == Some(id)
    })
}
