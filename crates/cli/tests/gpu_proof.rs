//! A GPU pool proves it is on the GPU (issue 15, finding 5): a `mode: binary` pool pointed at a
//! llama-server built without GPU support ran on the CPU while its handoff said `backend: cuda`.
//! Now the binary must list a CUDA device (`--list-devices`, asked once per binary digest)
//! before anything is spawned, and the server's own load report (its log, `--log-verbosity 4`)
//! must show every asked layer on the GPU; else apply fails (exit 3), the server is stopped and
//! nothing is handed off. The probe records what the server allocated per device.
//!
//! `nvidia-smi` is a script on the PATH given to `provision` that prints one RTX 3090; the
//! llama-server is this test binary, which runs as the fake llama-server
//! (crates/steps-spawn/src/bin/fake-llama-server.rs) when `PROVISION_TEST_AS_LLAMA_SERVER` is
//! set: `FAKE_GPUS=0` makes it a CPU-only build, `FAKE_OFFLOAD=N` keeps all but N layers on the
//! CPU, `FAKE_NO_LIST_DEVICES=1` an older build. Hence `harness = false`.

#[path = "../../steps-spawn/src/bin/fake-llama-server.rs"]
mod fake;
mod gpu_host;

use std::path::PathBuf;
use std::process::{Command, ExitCode, Output};

use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::Value;

/// Set in the pool's env: this binary then runs as the fake llama-server.
const AS_SERVER: &str = "PROVISION_TEST_AS_LLAMA_SERVER";

fn main() -> ExitCode {
    if std::env::var_os(AS_SERVER).is_some() {
        fake::main();
        return ExitCode::SUCCESS;
    }
    let args = Arguments::from_args();
    let tests = vec![
        Trial::test(
            "a_cuda_pool_on_a_cpu_only_binary_fails_before_spawn",
            cpu_only_binary,
        ),
        Trial::test(
            "a_server_that_keeps_layers_on_the_cpu_is_stopped_and_not_handed_off",
            partial_offload,
        ),
        Trial::test(
            "an_older_binary_without_list_devices_is_caught_by_its_load_report",
            older_binary,
        ),
        Trial::test(
            "a_gpu_server_is_handed_off_with_what_it_allocated",
            good_gpu,
        ),
        Trial::test("the_device_list_is_asked_once_per_binary", devices_cached),
        Trial::test("a_cpu_pool_on_a_cpu_only_binary_is_unaffected", cpu_pool),
    ];
    libtest_mimic::run(&args, tests).exit_code()
}

/// A project: a tiny GGUF model, a fake `nvidia-smi`, a config whose server is this binary.
struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        World {
            dir: gpu_host::project(),
        }
    }

    /// One pool: `placement` is `devices: [0]` or `backend: cpu`; `env` is added.
    fn configure(&self, placement: &str, env: &str) {
        let config = format!(
            "pools:
  - id: p
    engine: llamacpp
    model: m
    {placement}
    ctx: 2048
    readiness_timeout_ms: 60000
    handoff_path: ./handoff.json
    provisioning:
      mode: binary
      binary: {{path: \"{}\"}}
      model: {{ref: ./model.gguf}}
      env: {{{AS_SERVER}: \"1\"{env}}}
      flags: [--threads, \"1\"]
",
            std::env::current_exe().unwrap().display()
        );
        std::fs::write(self.dir.path().join("pools.yaml"), config).unwrap();
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn command(&self, args: &[&str]) -> Command {
        gpu_host::provision(self.dir.path(), args)
    }

    fn apply(&self, extra: &[&str]) -> Output {
        let mut args = vec!["apply", "-c", "pools.yaml", "--cache-dir", "cache"];
        args.extend(extra);
        self.command(&args).output().unwrap()
    }

    fn state(&self) -> Value {
        let text = std::fs::read_to_string(self.path(".runtime/state.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// The pid replica r0's spawn recorded (its pid file), if any.
    fn recorded_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.path(".runtime/run/p-r0.pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
    }
}

/// Stops what the test left running, even when it failed.
impl Drop for World {
    fn drop(&mut self) {
        let _ = self.command(&["down", "--grace", "0.2"]).output();
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Is `pid` a live process (not a zombie)?
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    })
}

/// Apply fails with exit 3, saying `says`, with nothing running and nothing handed off.
fn fails_with(world: &World, says: &[&str]) -> Result<String, Failed> {
    let out = world.apply(&[]);
    let all = text(&out);
    if out.status.code() != Some(3) {
        return Err(format!("expected exit 3, got {:?}:\n{all}", out.status.code()).into());
    }
    for s in says {
        if !all.contains(s) {
            return Err(format!("the message does not say `{s}`:\n{all}").into());
        }
    }
    if world.path("handoff.json").exists() {
        return Err("a handoff was written".into());
    }
    if let Some(pid) = world.recorded_pid().filter(|p| alive(*p)) {
        return Err(format!("the server {pid} is still running:\n{all}").into());
    }
    Ok(all)
}

fn cpu_only_binary() -> Result<(), Failed> {
    let world = World::new();
    world.configure("devices: [0]", ", FAKE_GPUS: \"0\"");
    let all = fails_with(
        &world,
        &[
            "p/r0: pool p has backend cuda, but",
            "--list-devices",
            "lists no CUDA device, no device at all",
            "-DGGML_CUDA=ON",
            "`backend: cpu`",
        ],
    )?;
    if world.recorded_pid().is_some() {
        return Err(format!("a server was spawned:\n{all}").into());
    }
    Ok(())
}

fn partial_offload() -> Result<(), Failed> {
    let world = World::new();
    world.configure("devices: [0]", ", FAKE_OFFLOAD: \"1\"");
    let all = fails_with(
        &world,
        &[
            "p/r0 is not on its cuda devices [0]",
            "offloaded 1 of 3 layers to the GPU",
            "it was stopped and is not handed off",
        ],
    )?;
    if world.recorded_pid().is_none() {
        return Err(format!("the server was never spawned:\n{all}").into());
    }
    Ok(())
}

fn older_binary() -> Result<(), Failed> {
    let world = World::new();
    world.configure(
        "devices: [0]",
        ", FAKE_GPUS: \"0\", FAKE_NO_LIST_DEVICES: \"1\"",
    );
    fails_with(
        &world,
        &[
            "p/r0 is not on its cuda devices [0]",
            "found no usable GPU",
            "-DGGML_CUDA=ON",
        ],
    )?;
    Ok(())
}

fn good_gpu() -> Result<(), Failed> {
    let world = World::new();
    world.configure("devices: [0]", "");
    let out = world.apply(&[]);
    if out.status.code() != Some(0) {
        return Err(format!("apply failed:\n{}", text(&out)).into());
    }
    assert!(world.path("handoff.json").is_file());
    let memory = &world.state()["steps"]["probe:p/r0"]["outputs"]["memory"];
    let cuda0 = &memory["CUDA0"];
    assert_eq!(cuda0["gpu"], 0, "{memory}");
    let bytes = |v: &Value| v.as_u64().unwrap_or_default();
    assert!(bytes(&cuda0["model_bytes"]) > 0, "{memory}");
    assert!(bytes(&cuda0["kv_bytes"]) > 0, "{memory}");
    assert_eq!(
        bytes(&cuda0["actual_bytes"]),
        bytes(&cuda0["model_bytes"])
            + bytes(&cuda0["kv_bytes"])
            + bytes(&cuda0["output_bytes"])
            + bytes(&cuda0["compute_bytes"]),
        "{memory}"
    );
    assert!(bytes(&memory["Host"]["model_bytes"]) > 0, "{memory}");
    // The fit's estimate beside it (one server's `need` on GPU 0), in the state, the handoff
    // and `status --json` alike.
    let need = &world.state()["steps"]["vram-fit:p"]["outputs"]["estimate"]["devices"][0]["need"];
    assert!(bytes(need) > 0, "{need}");
    assert_eq!(cuda0["estimated_bytes"], *need, "{memory}");
    assert!(memory["Host"].get("estimated_bytes").is_none(), "{memory}");
    let handoff: Value =
        serde_json::from_slice(&std::fs::read(world.path("handoff.json")).unwrap()).unwrap();
    assert_eq!(handoff["memory"], *memory);
    let status = world
        .command(&[
            "status",
            "-c",
            "pools.yaml",
            "--cache-dir",
            "cache",
            "--json",
        ])
        .output()
        .unwrap();
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        status["pools"][0]["replicas"][0]["memory"], *memory,
        "{status}"
    );
    Ok(())
}

fn devices_cached() -> Result<(), Failed> {
    let world = World::new();
    let count = world.path("list-devices-count");
    world.configure(
        "devices: [0]",
        &format!(", FAKE_LIST_DEVICES_COUNT: \"{}\"", count.display()),
    );
    for extra in [&[][..], &["--force"][..]] {
        let out = world.apply(extra);
        if out.status.code() != Some(0) {
            return Err(format!("apply {extra:?} failed:\n{}", text(&out)).into());
        }
    }
    let runs = std::fs::read_to_string(&count).unwrap_or_default();
    assert_eq!(
        runs.lines().count(),
        1,
        "the binary listed its devices: {runs:?}"
    );
    Ok(())
}

fn cpu_pool() -> Result<(), Failed> {
    let world = World::new();
    world.configure("backend: cpu\n    devices: []", ", FAKE_GPUS: \"0\"");
    let out = world.apply(&[]);
    if out.status.code() != Some(0) {
        return Err(format!("apply failed:\n{}", text(&out)).into());
    }
    // A CPU server's argv gets no `--log-verbosity 4` (its fingerprint stays as earlier
    // versions made it): no load report to read, nothing recorded, nothing refused.
    let memory = &world.state()["steps"]["probe:p/r0"]["outputs"]["memory"];
    assert!(memory.get("CUDA0").is_none(), "{memory}");
    let argv = &world.state()["steps"]["spawn:p/r0"]["spec"]["argv"];
    assert!(!argv.to_string().contains("--log-verbosity"), "{argv}");
    Ok(())
}
