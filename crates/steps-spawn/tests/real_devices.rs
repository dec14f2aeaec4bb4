//! A GPU pool's proof against what a real llama-server prints (llama.cpp 0.5.0-dev, build 1,
//! a CPU-only build, captured in tests/data): its `--help` lists `--list-devices`, which lists
//! `(none)`, so a CUDA pool on it is refused before spawn; its load report, given a CUDA pool's
//! argv (`--n-gpu-layers 999 --log-verbosity 4`), says it found no usable GPU, so the probe
//! would refuse it too; a CPU pool's load report gives what it allocated in host memory.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use provision_plan::config::Backend;
use provision_steps_spawn::engine::llamacpp_devices::{backend_devices, parse_list_devices};
use provision_steps_spawn::engine::llamacpp_help::parse_help;
use provision_steps_spawn::engine::llamacpp_load::parse_load_report;
use provision_steps_spawn::engine::BackendDevices;

const HELP: &str = include_str!("data/llama-server-help.txt");
const LIST_DEVICES: &str = include_str!("data/llama-server-list-devices-cpu.txt");
const GPU_POOL_LOG: &str = include_str!("data/llama-server-cpu-build-gpu-pool.log");
const CPU_POOL_LOG: &str = include_str!("data/llama-server-cpu-build-cpu-pool.log");

#[test]
fn a_real_cpu_build_lists_no_device_and_a_cuda_pool_is_refused() {
    assert_eq!(parse_list_devices(LIST_DEVICES), Some(vec![]));
    // The whole check, against a binary that prints what the real one printed.
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("llama-server");
    std::fs::write(
        &binary,
        format!(
            "#!/bin/sh\ncat <<'EOF'\n{LIST_DEVICES}EOF\necho ran >> {}/count\n",
            dir.path().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let known = parse_help(HELP);
    let cache = dir.path().join("cache");
    for _ in 0..2 {
        let got = backend_devices(
            &binary,
            ("sha256:ab", &known),
            Backend::Cuda,
            &BTreeMap::new(),
            &cache,
        )
        .unwrap();
        assert_eq!(got, BackendDevices::Missing(vec![]));
    }
    // A list with no device is not cached: asked again (a driver may be fixed).
    let count = std::fs::read_to_string(dir.path().join("count")).unwrap();
    assert_eq!(count.lines().count(), 2);
}

#[test]
fn a_real_cpu_build_given_a_cuda_pools_argv_says_no_usable_gpu() {
    let report = parse_load_report(GPU_POOL_LOG);
    assert!(report.no_gpu);
    assert_eq!(report.offloaded, None);
    let why = report.on_gpus(None).unwrap_err();
    assert!(why.contains("no usable GPU"), "{why}");
}

#[test]
fn a_real_cpu_pools_load_report_gives_its_host_memory() {
    let report = parse_load_report(CPU_POOL_LOG);
    let memory = report.memory(&[]);
    let host = &memory["Host"];
    let mib = |x: f64| (x * 1_048_576.0).round() as u64;
    assert_eq!(host.model_bytes, mib(0.46));
    assert_eq!(host.kv_bytes, mib(0.12));
    assert_eq!(host.compute_bytes, mib(0.63));
    assert_eq!(host.actual_bytes, mib(0.46) + mib(0.12) + mib(0.63));
    assert_eq!(host.gpu, None);
    assert_eq!(memory.len(), 1, "{memory:?}");
    // The table the fit printed at load (whole MiB) is read too.
    assert_eq!(report.breakdown.len(), 1, "{:?}", report.breakdown);
    assert_eq!(report.breakdown[0].device, "Host");
    assert_eq!(report.breakdown[0].self_mib, 1);
}
