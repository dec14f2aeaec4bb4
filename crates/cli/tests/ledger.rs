//! The device ledger through `provision apply` (issue 15, findings 1 and 2): replicas and
//! pools on one GPU add up; free memory and the other processes on a GPU are read on every
//! apply; a running server is never restarted because of a new reading, and is not counted
//! twice.
//!
//! `nvidia-smi` is the stand-in of `gpu_host` (its answers are files the tests change); the
//! llama-server is this test binary, run as the fake llama-server. Hence `harness = false`.

#[path = "../../steps-spawn/src/bin/fake-llama-server.rs"]
mod fake;
mod gpu_host;

use gpu_host::started;

use std::path::Path;
use std::process::{ExitCode, Output};

use gpu_host::{
    eight_h100, gpu_pool, one_3090_with_free, provision, set_apps, set_gpus, AS_SERVER, UUID0,
};
use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::Value;

fn main() -> ExitCode {
    if std::env::var_os(AS_SERVER).is_some() {
        fake::main();
        return ExitCode::SUCCESS;
    }
    let args = Arguments::from_args();
    let tests = vec![
        Trial::test("replicas_and_pools_on_one_gpu_add_up", add_up),
        Trial::test(
            "free_memory_and_other_processes_are_read_on_every_apply",
            read_every_apply,
        ),
        Trial::test(
            "a_running_server_is_kept_and_not_counted_twice_when_the_reading_changes",
            running_kept,
        ),
        Trial::test(
            "on_a_mixed_host_the_card_checked_is_the_card_the_server_gets",
            mixed_host,
        ),
        Trial::test("each_gpu_has_its_own_ledger", two_cards),
        Trial::test(
            "a_running_pool_is_kept_where_the_driver_shows_other_pids",
            other_pid_namespace,
        ),
        Trial::test(
            "the_fit_reads_the_gpus_itself_not_the_gpu_checks_reading",
            changing_reading,
        ),
        Trial::test("eight_h100s_one_pool_each_and_one_across_all", eight_h100s),
        Trial::test(
            "a_running_pool_is_not_refused_when_a_pool_is_placed_before_it",
            placed_before_running,
        ),
        Trial::test(
            "pools_sharing_a_gpu_each_hand_off_their_own_model",
            own_model_handed_off,
        ),
    ];
    libtest_mimic::run(&args, tests).exit_code()
}

/// A project that takes its servers down when the test ends, even when it failed.
struct Project(tempfile::TempDir);

impl Project {
    fn new(pools: &str) -> Project {
        let p = Project(gpu_host::project());
        p.configure(pools);
        p
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    fn configure(&self, pools: &str) {
        std::fs::write(self.path().join("pools.yaml"), format!("pools:\n{pools}")).unwrap();
    }

    fn apply(&self) -> (Output, Vec<Value>) {
        gpu_host::apply_json(self.path())
    }

    /// The handoff files.
    fn handoffs(&self) -> Vec<Value> {
        let Ok(dir) = std::fs::read_dir(self.path().join(".runtime/engines")) else {
            return Vec::new();
        };
        dir.filter_map(|e| std::fs::read(e.ok()?.path()).ok())
            .filter_map(|b| serde_json::from_slice::<Value>(&b).ok())
            .collect()
    }

    /// The pids the handoff files name.
    fn handoff_pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .handoffs()
            .iter()
            .filter_map(|v| v["pid"].as_u64().map(|p| p as u32))
            .collect();
        pids.sort_unstable();
        pids
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = provision(self.path(), &["down", "--grace", "0.2"]).output();
    }
}

/// What apply said: stderr, and the events' messages (`--json` puts a failure there).
fn said(out: &Output) -> String {
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Ok(v) = serde_json::from_str::<Value>(line) {
            for key in ["error", "message", "hint"] {
                if let Some(s) = v.get(key).and_then(Value::as_str) {
                    text.push_str(s);
                    text.push('\n');
                }
            }
            if let Some(s) = v.pointer("/error/message").and_then(Value::as_str) {
                text.push_str(s);
                text.push('\n');
            }
        }
    }
    text
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
    })
}

/// One server of the tiny model needs a little over 512 MiB (the per-process margin): 1200
/// MiB free hold two servers, not three. Two replicas of `a` and one of `b` on GPU 0: `a`
/// (first in the config) is placed, `b` is refused naming the device and `a`'s share, and
/// nothing of `b` is spawned. (Before the ledger each fit saw the whole free memory alone:
/// all three servers were spawned.)
fn add_up() -> Result<(), Failed> {
    let p = Project::new(&(gpu_pool("a", 2, "[0]", "") + &gpu_pool("b", 1, "[0]", "")));
    set_gpus(p.path(), &one_3090_with_free(1200));
    let (out, events) = p.apply();
    let err = said(&out);
    assert_eq!(out.status.code(), Some(3), "{err}\n{events:?}");
    assert!(
        err.contains("POOL_UNAVAILABLE: pool `b` (1 replica)"),
        "{err}"
    );
    assert!(
        err.contains(&format!("GPU 0 (NVIDIA GeForce RTX 3090, {UUID0})")),
        "{err}"
    );
    assert!(err.contains("pool `a`: 2 replicas × "), "{err}");
    assert!(
        started(&events, "spawn:a/r0") && started(&events, "spawn:a/r1"),
        "{events:?}"
    );
    assert!(!started(&events, "spawn:b/r0"), "{events:?}");
    assert_eq!(p.handoff_pids().len(), 2, "a's two servers, none of b");
    Ok(())
}

/// After `down`, another tenant takes most of the GPU: the next apply reads it and refuses
/// before spawn, naming the tenant's process. (Before, gpu-check and vram-fit were fresh from
/// the state file and the server was spawned on the old reading.)
fn read_every_apply() -> Result<(), Failed> {
    let p = Project::new(&gpu_pool("g", 1, "[0]", ""));
    let (out, _) = p.apply();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let down = provision(p.path(), &["down", "--grace", "0.2"])
        .output()
        .unwrap();
    assert_eq!(down.status.code(), Some(0));
    set_gpus(p.path(), &one_3090_with_free(300));
    set_apps(p.path(), &format!("4242, {UUID0}, 23612\n"));
    let (out, events) = p.apply();
    let err = said(&out);
    assert_eq!(out.status.code(), Some(3), "{err}\n{events:?}");
    assert!(err.contains("POOL_UNAVAILABLE: pool `g`"), "{err}");
    assert!(err.contains("other processes: pid 4242 23.06 GiB"), "{err}");
    assert!(!started(&events, "spawn:g/r0"), "{events:?}");
    assert!(p.handoff_pids().is_empty());
    Ok(())
}

/// A running server shows up among the GPU's processes (by its marker it is this project's):
/// a re-apply on a new reading keeps it (its memory is its own again, not another tenant's),
/// even when another tenant has since filled the card; a change of its memory settings is
/// checked against the reading now and refused, leaving the running server alone.
fn running_kept() -> Result<(), Failed> {
    let p = Project::new(&gpu_pool("g", 1, "[0]", ""));
    let (out, _) = p.apply();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pids = p.handoff_pids();
    assert_eq!(pids.len(), 1);
    let server = pids[0];
    // The server holds 600 MiB and leaves 1000 free: counted as another tenant's, a fresh
    // server of 512+ MiB would still fit — so also let a tenant take 9 GiB.
    set_apps(
        p.path(),
        &format!("{server}, {UUID0}, 600\n4242, {UUID0}, 9216\n"),
    );
    set_gpus(p.path(), &one_3090_with_free(23_912 - 600 - 9216));
    let (out, events) = p.apply();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!started(&events, "spawn:g/r0"), "kept: {events:?}");
    assert_eq!(p.handoff_pids(), [server]);

    // The tenant fills the card: 100 MiB free. The running server is not refused.
    set_apps(
        p.path(),
        &format!("{server}, {UUID0}, 600\n4242, {UUID0}, 23212\n"),
    );
    set_gpus(p.path(), &one_3090_with_free(100));
    let (out, events) = p.apply();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!started(&events, "spawn:g/r0"), "kept: {events:?}");

    // A second replica: checked against the reading now, refused; the old server runs on.
    p.configure(&gpu_pool("g", 2, "[0]", ""));
    let (out, events) = p.apply();
    let err = said(&out);
    assert_eq!(out.status.code(), Some(3), "{err}\n{events:?}");
    assert!(err.contains("POOL_UNAVAILABLE: pool `g`"), "{err}");
    assert!(
        !started(&events, "spawn:g/r0") && !started(&events, "spawn:g/r1"),
        "{events:?}"
    );
    assert!(alive(server), "the running server is left alone");
    assert_eq!(p.handoff_pids(), [server]);
    Ok(())
}

/// The environment variable `name` of process `pid`.
fn environ(pid: u32, name: &str) -> Option<String> {
    let bytes = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{name}=");
    bytes
        .split(|&b| b == 0)
        .find_map(|e| e.strip_prefix(prefix.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// A 3060 (12 GiB, 400 MiB free) in the first PCI slot and a 3090 (1200 MiB free) in the
/// second: two replicas on device 1 fit the 3090 and get it (CUDA_VISIBLE_DEVICES=1 in PCI
/// order); the same pool on device 0 is refused, naming the 3060.
fn mixed_host() -> Result<(), Failed> {
    let p = Project::new(&gpu_pool("g", 2, "[1]", ""));
    let mixed = gpu_host::MIXED_3060_3090
        .replace("12288, 11950", "12288, 400")
        .replace("24576, 24135", "24576, 1200");
    set_gpus(p.path(), &mixed);
    let (out, _) = p.apply();
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    let pids = p.handoff_pids();
    assert_eq!(pids.len(), 2);
    for pid in pids {
        assert_eq!(environ(pid, "CUDA_VISIBLE_DEVICES").as_deref(), Some("1"));
        assert_eq!(
            environ(pid, "CUDA_DEVICE_ORDER").as_deref(),
            Some("PCI_BUS_ID")
        );
    }
    provision(p.path(), &["down", "--grace", "0.2"])
        .output()
        .unwrap();
    p.configure(&gpu_pool("g", 2, "[0]", ""));
    let (out, events) = p.apply();
    let err = said(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("GPU 0 (NVIDIA GeForce RTX 3060, "), "{err}");
    assert!(!started(&events, "spawn:g/r0"), "{events:?}");
    Ok(())
}

/// Two 3090s with 1200 MiB free each: two pools of two replicas, one per card, both fit;
/// on one card the second is refused (`add_up`).
fn two_cards() -> Result<(), Failed> {
    let p = Project::new(&(gpu_pool("a", 2, "[0]", "") + &gpu_pool("b", 2, "[1]", "")));
    let two = gpu_host::TWO_3090
        .replace("24576, 23912", "24576, 1200")
        .replace("24576, 24135", "24576, 1200");
    set_gpus(p.path(), &two);
    let (out, _) = p.apply();
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert_eq!(p.handoff_pids().len(), 4);
    Ok(())
}

/// Eight H100s: a pool on each card and one across all eight, placed after the eight (the plan
/// says so); all fit.
fn eight_h100s() -> Result<(), Failed> {
    let mut pools: String = (0..8)
        .map(|i| gpu_pool(&format!("p{i}"), 1, &format!("[{i}]"), ""))
        .collect();
    pools += &gpu_pool("all", 1, "[0, 1, 2, 3, 4, 5, 6, 7]", "");
    let p = Project::new(&pools);
    set_gpus(p.path(), &eight_h100());
    let plan = provision(
        p.path(),
        &["plan", "-c", "pools.yaml", "--cache-dir", "cache"],
    )
    .output()
    .unwrap();
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        text.contains("ledger: placed after `p0` (1 × devices [0]), `p1` (1 × devices [1]), `p2` (1 × devices [2]), 5 more"),
        "{text}"
    );
    let (out, _) = p.apply();
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert_eq!(p.handoff_pids().len(), 9);
    let state: Value =
        serde_json::from_slice(&std::fs::read(p.path().join(".runtime/state.json")).unwrap())
            .unwrap();
    let ledger = &state["steps"]["vram-fit:all"]["outputs"]["ledger"];
    assert_eq!(ledger.as_array().map(Vec::len), Some(8), "{ledger}");
    assert_eq!(ledger[7]["name"], "NVIDIA H100 80GB HBM3");
    assert_eq!(
        ledger[7]["shares"].as_array().map(Vec::len),
        Some(2),
        "{ledger}"
    );
    Ok(())
}

/// Free memory that changes between calls: gpu-check's two readings (its facts, then its run)
/// see a free card, the next one — the fit's own — sees 300 MiB free: the fit refuses, so it
/// placed the pool on a reading of its own, not on gpu-check's.
fn changing_reading() -> Result<(), Failed> {
    let p = Project::new(&gpu_pool("g", 1, "[0]", ""));
    for (n, free) in [(1, 23_912), (2, 23_912), (3, 300)] {
        std::fs::write(
            p.path().join(format!("bin/gpus.{n}.csv")),
            one_3090_with_free(free),
        )
        .unwrap();
    }
    let (out, events) = p.apply();
    let err = said(&out);
    let calls = std::fs::read_to_string(p.path().join("bin/gpu-calls")).unwrap();
    assert_eq!(calls.trim(), "3", "gpu-check twice, the fit once");
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("300 MiB of 24.00 GiB free now"), "{err}");
    assert!(!started(&events, "spawn:g/r0"), "{events:?}");
    Ok(())
}

/// Two pools on one GPU, each with its own model from a URL (already in the cache, so never
/// fetched): `b`'s fit counts `a`'s model (a dependency of its vram-fit), yet each handoff file
/// names its own model. (A handoff's `${model_path}` came from whichever model-resolve step
/// sorted first among its indirect dependencies: one of the two named the other's model.)
fn own_model_handed_off() -> Result<(), Failed> {
    let url = |name: &str| format!("http://127.0.0.1:9/{name}");
    let pool =
        |id: &str, name: &str| gpu_pool(id, 1, "[0]", "").replace("./model.gguf", &url(name));
    let p = Project::new(&(pool("a", "aa.gguf") + &pool("b", "zz.gguf")));
    let models = p.path().join("cache/models");
    for name in ["aa.gguf", "zz.gguf"] {
        let dest = provision_steps_model::resolve::url_dest(&url(name), &models);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(p.path().join("model.gguf"), dest).unwrap();
    }
    let (out, _) = p.apply();
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    for (pool, model) in [("a", "aa.gguf"), ("b", "zz.gguf")] {
        let handoff = p
            .handoffs()
            .into_iter()
            .find(|h| h["pool_id"] == pool)
            .expect("a handoff of the pool");
        let path = handoff["model"]["path"].as_str().unwrap_or_default();
        assert!(path.ends_with(model), "pool `{pool}`: {handoff}");
    }
    Ok(())
}

/// A running pool `g` whose server holds less than the estimate (the estimate keeps a margin),
/// on a card a tenant has filled but for 600 MiB. A new pool `h`, first in the config, fits in
/// those 600 MiB and is spawned; `g`'s fit runs again (the pools before it changed) and must
/// not refuse `g`: its server runs and keeps what it holds. (It was refused: `h` took the free
/// memory, and `g` then needed its whole estimate again beside it.)
fn placed_before_running() -> Result<(), Failed> {
    // Its handoff path set: the default one changes when a second pool comes.
    let g = gpu_pool("g", 1, "[0]", "    handoff_path: ./g.json\n");
    let p = Project::new(&g);
    let (out, _) = p.apply();
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    let handoff: Value =
        serde_json::from_slice(&std::fs::read(p.path().join("g.json")).unwrap()).unwrap();
    let server = handoff["pid"].as_u64().unwrap() as u32;
    set_apps(
        p.path(),
        &format!("{server}, {UUID0}, 300\n4242, {UUID0}, 23012\n"),
    );
    set_gpus(p.path(), &one_3090_with_free(600));
    p.configure(&(gpu_pool("h", 1, "[0]", "") + &g));
    let (out, events) = p.apply();
    let err = said(&out);
    assert_eq!(out.status.code(), Some(0), "{err}\n{events:?}");
    assert!(started(&events, "spawn:h/r0"), "{events:?}");
    assert!(!started(&events, "spawn:g/r0"), "kept: {events:?}");
    assert!(alive(server));
    assert_eq!(p.handoff_pids().len(), 1, "h's; g's is at ./g.json");
    Ok(())
}

/// In a container without the host's PID namespace the driver lists this project's server
/// under a pid of another namespace: the ledger counts it as another process, and a re-apply
/// with the card full keeps the pool (its server is alive by its own record) instead of
/// refusing it.
fn other_pid_namespace() -> Result<(), Failed> {
    let p = Project::new(&gpu_pool("g", 1, "[0]", ""));
    let (out, _) = p.apply();
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    let server = p.handoff_pids()[0];
    // Its memory under a host pid this namespace does not have; another tenant fills the rest.
    set_apps(
        p.path(),
        &format!("4194000, {UUID0}, 600\n4242, {UUID0}, 23212\n"),
    );
    set_gpus(p.path(), &one_3090_with_free(100));
    let (out, events) = p.apply();
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert!(!started(&events, "spawn:g/r0"), "kept: {events:?}");
    assert_eq!(p.handoff_pids(), [server]);
    // Taken down, the same reading refuses it: nothing of it is alive any more.
    provision(p.path(), &["down", "--grace", "0.2"])
        .output()
        .unwrap();
    let (out, _) = p.apply();
    assert_eq!(out.status.code(), Some(3), "{}", said(&out));
    Ok(())
}
