//! gpu-check against fake `nvidia-smi` programs on an injected PATH.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use provision_plan::step::{GpuCheck, StepSpec};
use provision_steps_gpu::{check_alive, facts, run};
use provision_steps_testkit::Workspace;
use provision_steps_tools::Host;
use serde_json::json;

const QUERY: &str =
    "--query-gpu=index,uuid,name,memory.total,memory.free,driver_version,compute_cap";

const ONE_GPU: &str = "0, GPU-6f1a2b3c-0000-1111-2222-333344445555, NVIDIA GeForce RTX 3090, 24576, 23912, 550.54.14, 8.6\n";
const TWO_GPUS: &str = "0, GPU-6f1a2b3c-0000-1111-2222-333344445555, NVIDIA GeForce RTX 3090, 24576, 23912, 550.54.14, 8.6\n1, GPU-aaaabbbb-cccc-dddd-eeee-ffff00001111, NVIDIA GeForce RTX 3060, 12288, 11800, 550.54.14, 8.6\n";
const DRIVER_ERROR: &str = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running.";

fn pool_config(devices: &str) -> String {
    format!(
        "pools:
  - id: gpu-pool
    engine: llamacpp
    model: tiny
    devices: {devices}
    provisioning:
      mode: binary
      binary: {{path: /opt/llama/llama-server}}
      model:
        ref: ./models/tiny.gguf
"
    )
}

/// A directory with a fake `nvidia-smi` that checks its arguments, prints `stdout` and exits
/// with `code`.
fn fake_smi(dir: &Path, stdout: &str, code: i32) -> Host {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let script = bin.join("nvidia-smi");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = \"{QUERY}\" ] || {{ echo \"unexpected args: $*\" >&2; exit 64; }}\ncat <<'EOF'\n{stdout}EOF\nexit {code}\n"
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    Host::with_path(std::env::join_paths([bin, "/usr/bin".into(), "/bin".into()]).unwrap())
}

fn spec(ws: &Workspace) -> GpuCheck {
    match &ws.step("gpu-check").spec {
        StepSpec::GpuCheck(g) => g.clone(),
        _ => unreachable!(),
    }
}

#[test]
fn two_gpus_pass_and_are_output() {
    let ws = Workspace::new(&pool_config("[0, 1]"));
    let host = fake_smi(ws.dir.path(), TWO_GPUS, 0);
    let cx = ws.cx("gpu-check", Default::default());
    let out = run(&spec(&ws), &cx, &host).unwrap();
    // As the state file records them (field names as state version 1 wrote them).
    let recorded = serde_json::to_value(out.outputs.as_ref().expect("outputs")).unwrap();
    assert_eq!(recorded["kind"], "gpu-check");
    assert_eq!(
        recorded["gpus"],
        json!([
            {"index": 0, "uuid": "GPU-6f1a2b3c-0000-1111-2222-333344445555", "name": "NVIDIA GeForce RTX 3090",
             "memory_total_mib": 24576, "memory_free_mib": 23912, "driver": "550.54.14", "compute_capability": "8.6"},
            {"index": 1, "uuid": "GPU-aaaabbbb-cccc-dddd-eeee-ffff00001111", "name": "NVIDIA GeForce RTX 3060",
             "memory_total_mib": 12288, "memory_free_mib": 11800, "driver": "550.54.14", "compute_capability": "8.6"}
        ])
    );
    let f = facts(&spec(&ws), &cx, &host).unwrap();
    assert_eq!(f.len(), 2);
    assert!(f["gpu.1"].contains("RTX 3060"), "{f:?}");
    assert!(
        !f["gpu.0"].contains("23912"),
        "free memory is not a fact: {f:?}"
    );
}

#[test]
fn a_device_that_does_not_exist_says_what_was_found_and_asked() {
    let ws = Workspace::new(&pool_config("[0, 1]"));
    let host = fake_smi(ws.dir.path(), ONE_GPU, 0);
    let err = run(&spec(&ws), &ws.cx("gpu-check", Default::default()), &host).unwrap_err();
    assert!(err.message.contains("asks for GPU 0, 1"), "{}", err.message);
    assert!(
        err.message
            .contains("this host has 0 (NVIDIA GeForce RTX 3090, 24576 MiB)"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("GPU 1 does not exist"),
        "{}",
        err.message
    );
    assert!(err.message.contains("never fall back to the CPU"));
    assert!(err.hint.unwrap().contains("devices"));
}

#[test]
fn no_gpu_at_all() {
    let ws = Workspace::new(&pool_config("[0]"));
    // Real nvidia-smi on a host whose driver sees no GPU: exit 6, "No devices were found".
    let host = fake_smi(ws.dir.path(), "No devices were found\n", 6);
    let err = run(&spec(&ws), &ws.cx("gpu-check", Default::default()), &host).unwrap_err();
    assert!(err.message.contains("exit code 6"), "{}", err.message);
    assert!(
        err.message.contains("No devices were found"),
        "{}",
        err.message
    );
    assert!(err.message.contains("asks for GPU 0"), "{}", err.message);
    // And with exit 0 and an empty list.
    let ws = Workspace::new(&pool_config("[0]"));
    let host = fake_smi(ws.dir.path(), "", 0);
    let err = run(&spec(&ws), &ws.cx("gpu-check", Default::default()), &host).unwrap_err();
    assert!(
        err.message.contains("this host has no GPU"),
        "{}",
        err.message
    );
}

#[test]
fn driver_errors_are_reported_with_the_output() {
    let ws = Workspace::new(&pool_config("[0]"));
    let host = fake_smi(ws.dir.path(), &format!("{DRIVER_ERROR}\n"), 9);
    let err = run(&spec(&ws), &ws.cx("gpu-check", Default::default()), &host).unwrap_err();
    assert!(err.message.contains("exit code 9"), "{}", err.message);
    assert!(
        err.message
            .contains("couldn't communicate with the NVIDIA driver"),
        "{}",
        err.message
    );
    assert!(err.hint.clone().unwrap().contains("driver"));
    // The command and its exit code as fields (the `failed` event's `command`, `exit_code`).
    let failed = err.command.expect("the failed nvidia-smi as fields");
    assert!(failed.command.contains("nvidia-smi"), "{failed:?}");
    assert_eq!(failed.status.and_then(|s| s.exit_code), Some(9));
}

#[test]
fn missing_nvidia_smi_means_no_driver() {
    let ws = Workspace::new(&pool_config("[0]"));
    let empty = ws.dir.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let host = Host::with_path(empty.into_os_string());
    let err = run(&spec(&ws), &ws.cx("gpu-check", Default::default()), &host).unwrap_err();
    assert!(err.message.contains("not on PATH"), "{}", err.message);
    assert!(err.hint.unwrap().contains("install the NVIDIA driver"));
}

#[test]
fn garbage_output_is_rejected_with_the_line() {
    for garbage in [
        "hello world\n",
        "0, GPU-x, name, lots, 1, 550, 8.6\n",
        "0, not-a-uuid, name, 1, 1, 550, 8.6\n",
        "<html>\n",
    ] {
        let ws = Workspace::new(&pool_config("[0]"));
        let host = fake_smi(ws.dir.path(), garbage, 0);
        let err = run(&spec(&ws), &ws.cx("gpu-check", Default::default()), &host).unwrap_err();
        assert!(
            err.message.contains("not a GPU list") && err.message.contains("line 1"),
            "{garbage}: {}",
            err.message
        );
    }
}

#[test]
fn liveness_compares_identity_not_free_memory() {
    let ws = Workspace::new(&pool_config("[0]"));
    let host = fake_smi(ws.dir.path(), ONE_GPU, 0);
    let mut cx = ws.cx("gpu-check", Default::default());
    let out = run(&spec(&ws), &cx, &host).unwrap();
    cx.previous = out.outputs.clone();
    check_alive(&spec(&ws), &cx, &host).unwrap();

    // Less free memory: still alive.
    let busier = ONE_GPU.replace("23912", "1000");
    let host2 = fake_smi(&ws.dir.path().join("busier"), &busier, 0);
    check_alive(&spec(&ws), &cx, &host2).unwrap();

    // A driver upgrade: not alive, and the reason says so.
    let upgraded = ONE_GPU.replace("550.54.14", "560.35.03");
    let host3 = fake_smi(&ws.dir.path().join("upgraded"), &upgraded, 0);
    let why = check_alive(&spec(&ws), &cx, &host3).unwrap_err();
    assert!(
        why.contains("GPU 0 changed") && why.contains("560.35.03"),
        "{why}"
    );

    // The driver stopped answering.
    let host4 = fake_smi(
        &ws.dir.path().join("broken"),
        &format!("{DRIVER_ERROR}\n"),
        9,
    );
    let why = check_alive(&spec(&ws), &cx, &host4).unwrap_err();
    assert!(why.contains("exit code 9"), "{why}");
}

#[test]
fn mig_and_not_supported_fields_parse() {
    let out = "0, GPU-6f1a2b3c-0000-1111-2222-333344445555, NVIDIA A100-SXM4-40GB, 40960, 40000, 535.104.05, [N/A]\n";
    let gpus = provision_steps_gpu::parse("nvidia-smi", out).unwrap();
    assert_eq!(gpus[0].compute_capability, "");
    assert_eq!(gpus[0].memory_total_mib, 40960);
}
