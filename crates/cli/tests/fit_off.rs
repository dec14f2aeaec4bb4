//! `--fit off` reaches every GPU server whose binary has `--fit` (issue 15, finding 4): recent
//! llama.cpp's default `--fit on` may keep layers in host memory to make a model fit, and a GPU
//! pool must instead run entirely in VRAM or fail at vram-fit. Read from the spawned server's
//! `/proc/<pid>/cmdline`: a GPU server has `--fit off`, a build older than `--fit` gets the
//! same argv less it, a CPU server never has it, and a pool's own `--fit` is honoured.
//!
//! `nvidia-smi` is a script on the PATH given to `provision` that prints one RTX 3090; the
//! llama-server is this test binary, which runs as the fake llama-server
//! (crates/steps-spawn/src/bin/fake-llama-server.rs) when `PROVISION_TEST_AS_LLAMA_SERVER` is
//! set (the config names this binary as the server binary). Hence `harness = false`.

#[path = "../../steps-spawn/src/bin/fake-llama-server.rs"]
mod fake;
mod gpu_host;

use std::process::{Command, ExitCode, Output};

use libtest_mimic::{Arguments, Failed, Trial};

/// Set in the pool's env: this binary then runs as the fake llama-server.
const AS_SERVER: &str = "PROVISION_TEST_AS_LLAMA_SERVER";

fn main() -> ExitCode {
    if std::env::var_os(AS_SERVER).is_some() {
        fake::main();
        return ExitCode::SUCCESS;
    }
    let args = Arguments::from_args();
    let tests = vec![
        Trial::test("a_gpu_server_starts_with_fit_off", gpu_fit_off),
        Trial::test(
            "a_binary_without_fit_gets_the_argv_less_fit_off",
            binary_without_fit,
        ),
        Trial::test("a_cpu_server_never_gets_fit", cpu_no_fit),
        Trial::test("a_pools_own_fit_is_honoured", own_fit),
    ];
    libtest_mimic::run(&args, tests).exit_code()
}

/// A project: a tiny GGUF model, a fake `nvidia-smi`, a config whose server is this binary.
struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        let dir = gpu_host::project();
        World { dir }
    }

    /// One pool: `placement` is `devices: [0]` or `backend: cpu`; `env` and `flags` are added.
    fn configure(&self, placement: &str, env: &str, flags: &str) {
        let config = format!(
            "pools:
  - id: p
    engine: llamacpp
    model: m
    {placement}
    ctx: 2048
    readiness_timeout_ms: 60000
    provisioning:
      mode: binary
      binary: {{path: \"{}\"}}
      model: {{ref: ./model.gguf}}
      env: {{{AS_SERVER}: \"1\"{env}}}
      flags: [--threads, \"1\"{flags}]
",
            std::env::current_exe().unwrap().display()
        );
        std::fs::write(self.dir.path().join("pools.yaml"), config).unwrap();
    }

    fn command(&self, args: &[&str]) -> Command {
        gpu_host::provision(self.dir.path(), args)
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Apply (which must succeed); the spawned server's argv, from `/proc/<pid>/cmdline`.
    fn apply_and_read_argv(&self) -> Result<Vec<String>, Failed> {
        let out = self.run(&["apply", "-c", "pools.yaml", "--cache-dir", "cache"]);
        if out.status.code() != Some(0) {
            return Err(format!(
                "apply failed: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        let pid_file = self.dir.path().join(".runtime/run/p-r0.pid");
        let pid = std::fs::read_to_string(&pid_file)
            .map_err(|e| format!("{}: {e}", pid_file.display()))?;
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", pid.trim()))
            .map_err(|e| format!("the server {pid} is not running: {e}"))?;
        Ok(cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect())
    }

    /// The environment of replica r0's running server, from `/proc/<pid>/environ`.
    fn server_env(&self) -> Result<Vec<String>, Failed> {
        let pid_file = self.dir.path().join(".runtime/run/p-r0.pid");
        let pid = std::fs::read_to_string(&pid_file)
            .map_err(|e| format!("{}: {e}", pid_file.display()))?;
        let environ = std::fs::read(format!("/proc/{}/environ", pid.trim()))
            .map_err(|e| format!("the server {pid} is not running: {e}"))?;
        Ok(environ
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect())
    }

    /// `provision plan`'s text.
    fn plan(&self) -> String {
        let out = self.run(&["plan", "-c", "pools.yaml", "--cache-dir", "cache"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Stops what the test left running, even when it failed.
impl Drop for World {
    fn drop(&mut self) {
        let _ = self.command(&["down", "--grace", "0.2"]).output();
    }
}

/// The values `flag` has in `argv`.
fn values_of(argv: &[String], flag: &str) -> Vec<String> {
    argv.windows(2)
        .filter(|w| w[0] == flag)
        .map(|w| w[1].clone())
        .collect()
}

fn gpu_fit_off() -> Result<(), Failed> {
    let world = World::new();
    world.configure("devices: [0]", "", "");
    let plan = world.plan();
    assert!(
        plan.contains(" --fit off") && plan.contains("--fit is left out for a binary"),
        "the plan shows what runs: {plan}"
    );
    let argv = world.apply_and_read_argv()?;
    assert_eq!(values_of(&argv, "--fit"), ["off"], "{argv:?}");
    // nvidia-smi's indices (what `devices` names) are in PCI bus order: CUDA must count so too.
    let env = world.server_env()?;
    assert!(
        env.contains(&"CUDA_DEVICE_ORDER=PCI_BUS_ID".to_string())
            && env.contains(&"CUDA_VISIBLE_DEVICES=0".to_string()),
        "{env:?}"
    );
    Ok(())
}

fn binary_without_fit() -> Result<(), Failed> {
    let world = World::new();
    world.configure("devices: [0]", ", FAKE_NO_FIT: \"1\"", "");
    let argv = world.apply_and_read_argv()?;
    assert!(!argv[1..].iter().any(|a| a.contains("fit")), "{argv:?}");
    assert_eq!(
        values_of(&argv, "--threads"),
        ["1"],
        "the rest is kept: {argv:?}"
    );
    Ok(())
}

fn cpu_no_fit() -> Result<(), Failed> {
    let world = World::new();
    world.configure("backend: cpu\n    devices: []", "", "");
    let plan = world.plan();
    assert!(!plan.contains("--fit"), "{plan}");
    let argv = world.apply_and_read_argv()?;
    assert!(!argv[1..].iter().any(|a| a.contains("fit")), "{argv:?}");
    Ok(())
}

fn own_fit() -> Result<(), Failed> {
    let world = World::new();
    world.configure("devices: [0]", "", ", -fit, \"on\"");
    let argv = world.apply_and_read_argv()?;
    assert_eq!(values_of(&argv, "--fit"), ["on"], "{argv:?}");
    assert!(!argv.iter().any(|a| a == "-fit"), "{argv:?}");
    Ok(())
}
