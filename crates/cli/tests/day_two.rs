//! Day two across the typed-outputs upgrade (issue 14 item 2): a state file written in version
//! 1 form (outputs as untyped maps, with the copies some kinds kept of their dependencies'),
//! over running servers, re-applied by this binary with the config unchanged: no step runs
//! and every server keeps its pid.
//!
//! The version-1 state is made from this binary's own apply by [`to_v1`], which writes what
//! main (fe34448) wrote for the same apply: the same records, each kind's outputs as a map
//! plus its copies (spawn's `engine_digest` and `model_path`, the probe's spawn keys,
//! vram-fit's `model_path`), and every fingerprint computed over those maps, dependencies
//! first. The output keys of each record are checked against those of the state file main
//! wrote over running servers (`fixtures/state/v1-main.json`, its binary-mode pool `g`).
//!
//! Two pools, as in the fixture: `c` on the CPU and `g` on a GPU (`nvidia-smi` is a script on
//! the PATH printing one RTX 3090). The llama-server is this test binary, which runs as the
//! fake llama-server (crates/steps-spawn/src/bin/fake-llama-server.rs) when
//! `PROVISION_TEST_AS_LLAMA_SERVER` is set. Hence `harness = false`.

#[path = "../../steps-spawn/src/bin/fake-llama-server.rs"]
mod fake;
mod gpu_host;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Output};

use libtest_mimic::{Arguments, Failed, Trial};
use provision_executor::fingerprint::{dep_contribution, fingerprint};
use serde_json::{Map, Value};

/// Set in the pool's env: this binary then runs as the fake llama-server.
const AS_SERVER: &str = "PROVISION_TEST_AS_LLAMA_SERVER";

/// Outputs added after version 1, by kind: what the probe read of the server's load report
/// and the GPU layers the spawn asked for (issue 15).
const SINCE_V1: &[(&str, &str)] = &[
    ("probe", "memory"),
    ("spawn", "gpu_layers"),
    ("vram-fit", "ledger"),
];

/// The state file main wrote over running servers.
const FIXTURE: &str = include_str!("../../../fixtures/state/v1-main.json");

/// The spawn outputs main's probe copied for its handoff (`PASS_THROUGH` in its probe.rs).
const PROBE_COPIES: &[&str] = &[
    "pid",
    "pgid",
    "start_time",
    "boot_id",
    "instance",
    "port",
    "log",
    "pid_file",
    "binary",
    "engine_digest",
    "build_ref",
    "model_path",
    "backend",
    "devices",
    "started_at",
    "handoff_path",
];

fn main() -> ExitCode {
    if std::env::var_os(AS_SERVER).is_some() {
        fake::main();
        return ExitCode::SUCCESS;
    }
    let args = Arguments::from_args();
    let tests = vec![Trial::test(
        "a_version_1_state_over_running_servers_is_fresh_for_this_binary_and_keeps_every_server",
        a_version_1_state_is_fresh,
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
        let server = std::env::current_exe().unwrap();
        let pool = |id: &str, backend: &str, devices: &str| {
            format!(
                "  - id: {id}
    engine: llamacpp
    model: tiny
    backend: {backend}
    devices: {devices}
    readiness_timeout_ms: 60000
    provisioning:
      mode: binary
      binary: {{path: \"{}\"}}
      model: {{ref: ./model.gguf}}
      env: {{{AS_SERVER}: \"1\"}}
      flags: [--threads, \"1\"]
",
                server.display()
            )
        };
        let config = format!(
            "pools:\n{}{}",
            pool("c", "cpu", "[]"),
            pool("g", "cuda", "[0]")
        );
        std::fs::write(dir.path().join("pools.yaml"), config).unwrap();
        World { dir }
    }

    fn command(&self, args: &[&str]) -> Command {
        gpu_host::provision(self.dir.path(), args)
    }

    /// Apply with `--json`: the exit status and the events.
    fn apply(&self) -> (Output, Vec<Value>) {
        gpu_host::apply_json(self.dir.path())
    }

    fn state_file(&self) -> PathBuf {
        self.dir.path().join(".runtime/state.json")
    }

    fn state(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.state_file()).unwrap()).unwrap()
    }
}

/// Stops what the test left running, even when it failed.
impl Drop for World {
    fn drop(&mut self) {
        let _ = self.command(&["down", "--grace", "0.2"]).output();
    }
}

/// The `--model` argument of process `pid`: what main's spawn recorded as `model_path`.
fn model_arg(pid: u64) -> String {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let argv: Vec<String> = cmdline
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let at = argv.iter().position(|a| a == "--model").expect("--model");
    argv[at + 1].clone()
}

/// The outputs of every record as main's maps: the typed ones without their tag, plus the
/// copies main kept of its dependencies'.
fn v1_outputs(steps: &Map<String, Value>) -> BTreeMap<String, Map<String, Value>> {
    let mut maps: BTreeMap<String, Map<String, Value>> = steps
        .iter()
        .map(|(id, r)| {
            let mut o = r["outputs"].as_object().cloned().unwrap_or_default();
            o.remove("kind");
            // Outputs added since (main never wrote them; absent, they read as their default).
            for (kind, key) in SINCE_V1 {
                if r["kind"] == *kind {
                    o.remove(*key);
                }
            }
            (id.clone(), o)
        })
        .collect();
    let dep_of = |id: &str, kind: &str| -> Option<String> {
        let deps = steps[id]["deps"].as_object()?;
        deps.keys()
            .find(|d| steps[d.as_str()]["kind"] == kind)
            .cloned()
    };
    let resolved = |id: &str| -> Value {
        let vram_fit = dep_of(id, "vram-fit");
        let resolve = dep_of(vram_fit.as_deref().unwrap_or(id), "model-resolve").unwrap();
        steps[&resolve]["outputs"]["path"].clone()
    };
    // The spawn's and vram-fit's copies first: the probe copies the spawn's.
    for (id, record) in steps {
        match record["kind"].as_str().unwrap() {
            "spawn" => {
                let o = maps.get_mut(id).unwrap();
                let pid = o["pid"].as_u64().unwrap();
                let digest = o["binary_digest"].clone();
                o.insert("engine_digest".into(), digest);
                o.insert("model_path".into(), Value::from(model_arg(pid)));
            }
            "vram-fit" => {
                let path = resolved(id);
                maps.get_mut(id).unwrap().insert("model_path".into(), path);
            }
            _ => {}
        }
    }
    for (id, record) in steps {
        if record["kind"] == "probe" {
            let spawn = dep_of(id, "spawn").unwrap();
            let copies: Vec<(String, Value)> = PROBE_COPIES
                .iter()
                .filter_map(|k| Some((k.to_string(), maps[&spawn].get(*k)?.clone())))
                .collect();
            maps.get_mut(id).unwrap().extend(copies);
        }
    }
    maps
}

/// `state` (version 2, as this binary wrote it) as main wrote it: version 1, outputs as
/// maps, every fingerprint and dependency contribution computed over them.
fn to_v1(state: &Value) -> Value {
    let steps = state["steps"].as_object().unwrap();
    let outputs = v1_outputs(steps);
    let mut out = state.clone();
    out["state_version"] = Value::from(1);
    let mut fingerprints: BTreeMap<String, String> = BTreeMap::new();
    // Dependencies first: a record's fingerprint digests its dependencies'.
    while fingerprints.len() < steps.len() {
        for (id, record) in steps {
            let deps: Vec<&String> = record["deps"].as_object().unwrap().keys().collect();
            if fingerprints.contains_key(id) || !deps.iter().all(|d| fingerprints.contains_key(*d))
            {
                continue;
            }
            let contributions: BTreeMap<String, String> = deps
                .iter()
                .map(|d| {
                    let o = Value::Object(outputs[*d].clone());
                    ((*d).clone(), dep_contribution(&fingerprints[*d], &o))
                })
                .collect();
            let facts: BTreeMap<String, String> =
                serde_json::from_value(record["facts"].clone()).unwrap();
            let fp = fingerprint(&record["spec"], &facts, &contributions);
            let r = &mut out["steps"][id];
            r["deps"] = serde_json::to_value(&contributions).unwrap();
            r["fingerprint"] = Value::from(fp.clone());
            r["outputs"] = Value::Object(outputs[id].clone());
            fingerprints.insert(id.clone(), fp);
        }
    }
    out
}

/// The output keys of each kind's record in `state`, for the records of pool `pool` and
/// those of no pool.
fn output_keys(state: &Value, pool: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut keys = BTreeMap::new();
    for record in state["steps"].as_object().unwrap().values() {
        let of_pool = record["spec"]["pool"].as_str();
        if of_pool.is_some_and(|p| p != pool) {
            continue;
        }
        let kind = record["kind"].as_str().unwrap().to_string();
        let k: BTreeSet<String> = record["outputs"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        keys.insert(kind, k);
    }
    keys
}

/// The running server of each spawn step: step id → (pid, start time).
fn servers(state: &Value) -> BTreeMap<String, (u64, u64)> {
    state["steps"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["kind"] == "spawn")
        .map(|(id, r)| {
            let o = &r["outputs"];
            let ids = (
                o["pid"].as_u64().unwrap(),
                o["start_time"].as_u64().unwrap(),
            );
            (id.clone(), ids)
        })
        .collect()
}

/// Field 22 of `/proc/<pid>/stat`: when it started, in clock ticks since boot.
fn start_time(pid: u64) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn a_version_1_state_is_fresh() -> Result<(), Failed> {
    let world = World::new();
    let (out, events) = world.apply();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "first apply: {err}\n{events:?}");
    let v2 = world.state();
    assert_eq!(v2["state_version"], 2);
    let before = servers(&v2);
    assert_eq!(before.len(), 2, "{before:?}");

    // What main wrote over these servers.
    let v1 = to_v1(&v2);
    let main: Value = serde_json::from_str(FIXTURE).unwrap();
    let main_keys = output_keys(&main, "g");
    for pool in ["c", "g"] {
        let keys = output_keys(&v1, pool);
        for (kind, k) in &keys {
            assert_eq!(Some(k), main_keys.get(kind), "{pool}: the {kind} outputs");
        }
    }
    // Every kind a binary-mode GPU pool has (the fixture's other kinds build from source).
    assert_eq!(
        output_keys(&v1, "g").keys().collect::<Vec<_>>(),
        [
            "gpu-check",
            "handoff",
            "model-resolve",
            "probe",
            "spawn",
            "vram-fit"
        ],
    );
    std::fs::write(
        world.state_file(),
        serde_json::to_string_pretty(&v1).unwrap(),
    )
    .unwrap();

    // The new binary over it, config unchanged: nothing runs, no server restarts.
    let (out, events) = world.apply();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "re-apply: {err}\n{events:?}");
    let ran: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "started")
        .map(|e| &e["step"])
        .collect();
    assert!(ran.is_empty(), "steps ran: {ran:?}\n{err}\n{events:?}");
    let skipped = events.iter().filter(|e| e["event"] == "skipped").count();
    assert_eq!(
        skipped,
        v2["steps"].as_object().unwrap().len(),
        "{events:?}"
    );
    // Nothing ran, so nothing was written: the file is as main left it, read again each time.
    let after = world.state();
    assert_eq!(after, v1, "an apply that runs nothing writes nothing");
    assert_eq!(servers(&after), before, "the same servers");
    for (id, (pid, started)) in &before {
        assert_eq!(
            start_time(*pid),
            Some(*started),
            "{id}: pid {pid} still runs"
        );
    }
    Ok(())
}
