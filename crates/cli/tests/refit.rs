//! A GPU pool applied for real, then applied again with memory-relevant flags added
//! (`--ubatch-size 4096 --flash-attn on`): the vram-fit step runs again before the new server
//! starts (issue 14, item 1: every input of a step is in its spec, so in its fingerprint).
//!
//! `nvidia-smi` is a script on the PATH given to `provision` that prints one RTX 3090; the
//! llama-server is this test binary, which runs as the fake llama-server
//! (crates/steps-spawn/src/bin/fake-llama-server.rs) when `PROVISION_TEST_AS_LLAMA_SERVER` is
//! set (the config names this binary as the server binary). Hence `harness = false`.

#[path = "../../steps-spawn/src/bin/fake-llama-server.rs"]
mod fake;
mod gpu_host;

use gpu_host::started;

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
    let tests = vec![Trial::test(
        "memory_flags_added_to_a_gpu_pool_refit_it_before_the_new_server_starts",
        memory_flags_refit,
    )];
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

    fn configure(&self, flags: &str) {
        let config = format!(
            "pools:
  - id: gpu
    engine: llamacpp
    model: m
    devices: [0]
    ctx: 2048
    readiness_timeout_ms: 60000
    provisioning:
      mode: binary
      binary: {{path: \"{}\"}}
      model: {{ref: ./model.gguf}}
      env: {{{AS_SERVER}: \"1\"}}
      flags: [--threads, \"1\"{flags}]
",
            std::env::current_exe().unwrap().display()
        );
        std::fs::write(self.dir.path().join("pools.yaml"), config).unwrap();
    }

    fn command(&self, args: &[&str]) -> Command {
        gpu_host::provision(self.dir.path(), args)
    }

    /// Apply with `--json`: the exit status and the events.
    fn apply(&self) -> (Output, Vec<Value>) {
        gpu_host::apply_json(self.dir.path())
    }

    fn runtime(&self) -> PathBuf {
        self.dir.path().join(".runtime")
    }
}

/// Stops what the test left running, even when it failed.
impl Drop for World {
    fn drop(&mut self) {
        let _ = self.command(&["down", "--grace", "0.2"]).output();
    }
}

fn memory_flags_refit() -> Result<(), Failed> {
    let world = World::new();
    world.configure("");
    let (out, events) = world.apply();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "first apply: {err}\n{events:?}");
    assert!(started(&events, "vram-fit:gpu"), "first apply: {events:?}");

    // Nothing changed: the fit is fresh (the test can tell a skipped step from a run one).
    let (out, events) = world.apply();
    assert_eq!(out.status.code(), Some(0), "unchanged re-apply: {events:?}");
    assert!(!started(&events, "vram-fit:gpu"), "unchanged: {events:?}");

    world.configure(", --ubatch-size, \"4096\", --flash-attn, \"on\"");
    let (out, events) = world.apply();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "re-apply: {err}\n{events:?}");
    assert!(
        started(&events, "spawn:gpu/r0"),
        "the server restarts: {events:?}"
    );
    assert!(
        started(&events, "vram-fit:gpu"),
        "the fit is checked again for the new flags: {events:?}"
    );
    assert!(world.runtime().exists());
    Ok(())
}
