//! `provision down`, run as a user runs it, against real processes recorded in a state file:
//! servers stopped as a group, handoff and pid files removed, state updated, idempotent, lock
//! respected, an unknown pool refused.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use provision_executor::{State, StateFile, StepRecord, StepStatus};
use provision_plan::outputs::{HandoffOutputs, ServerIdentity, SpawnOutputs};
use provision_plan::{Backend, StepOutputs};
use provision_steps_spawn::identity;
use provision_steps_spawn::process::{group_members, ServerProcess};
use serde_json::json;

fn provision(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_provision"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

/// A stand-in server: `sh` leading its own session, with a `sleep` helper in its group, both
/// carrying `marker` as provision's spawn step would put it in their environment.
fn start_server(ignore_term: bool, marker: &str) -> ServerProcess {
    let script = if ignore_term {
        "trap '' TERM; sleep 600 & wait"
    } else {
        "sleep 600 & wait"
    };
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script])
        .env(identity::MARKER_VAR, marker)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid(2) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc_setsid();
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    // The test process does not reap it: provision (another process) stops it; a zombie counts
    // as stopped.
    std::mem::forget(child);
    let started = Instant::now();
    while group_members(pid).len() < 2 {
        assert!(
            started.elapsed() < PATIENCE,
            "the helper of pid {pid} never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    ServerProcess::of_pid(pid).unwrap()
}

fn libc_setsid() {
    extern "C" {
        fn setsid() -> i32;
    }
    // SAFETY: no arguments, async-signal-safe.
    unsafe {
        setsid();
    }
}

fn record(kind: &str, pool: &str, outputs: impl Into<StepOutputs>) -> StepRecord {
    StepRecord {
        kind: kind.into(),
        status: StepStatus::Passed,
        fingerprint: Some("fp".into()),
        spec: json!({"kind": kind, "pool": pool, "replica": 0}),
        facts: Default::default(),
        deps: Default::default(),
        outputs: Some(outputs.into()),
        artifacts: vec![],
        started_at: None,
        finished_at: None,
        duration_ms: None,
        reason: None,
        error: None,
    }
}

fn server_outputs(s: &ServerProcess, pid_file: &Path) -> SpawnOutputs {
    spawn_outputs(s.identity(), pid_file)
}

/// A spawn step's record of `server`, its pid file at `pid_file`.
fn spawn_outputs(server: ServerIdentity, pid_file: &Path) -> SpawnOutputs {
    SpawnOutputs {
        server,
        port: 1,
        host: "127.0.0.1".into(),
        url: "http://127.0.0.1:1".into(),
        log: String::new(),
        pid_file: pid_file.display().to_string(),
        binary: "llama-server".into(),
        binary_digest: "sha256:00".into(),
        backend: Backend::Cpu,
        devices: Vec::new(),
        started_at: String::new(),
        handoff_path: None,
        gpu_layers: None,
    }
}

/// A handoff step's record of the file at `path` with digest `sha256`.
fn handoff_outputs(path: &Path, sha256: &str) -> HandoffOutputs {
    HandoffOutputs {
        path: path.display().to_string(),
        sha256: Some(sha256.into()),
        url: "http://127.0.0.1:1".into(),
        pid: None,
    }
}

/// How long a test waits for a process to start or go: generous, for a loaded machine (a
/// process that is never stopped stays, so a failing test still fails, only later).
const PATIENCE: Duration = Duration::from_secs(60);

fn gone(s: &ServerProcess) -> bool {
    let started = Instant::now();
    while started.elapsed() < PATIENCE {
        if !s.is_running() && group_members(s.pgid).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn down_stops_servers_removes_handoffs_updates_state_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join(".runtime");
    std::fs::create_dir_all(runtime.join("engines")).unwrap();
    std::fs::create_dir_all(runtime.join("run")).unwrap();
    let a = start_server(false, "0123456789abcdef/a/r0");
    let b = start_server(true, "0123456789abcdef/b/r0");
    let handoff_a = runtime.join("engines/llamacpp-a-r0.json");
    let handoff_b = runtime.join("engines/llamacpp-b-r0.json");
    // What provision wrote, with its digest recorded (down removes only that).
    let written = b"{\"written_by\": \"provision\"}\n";
    std::fs::write(&handoff_a, written).unwrap();
    std::fs::write(&handoff_b, written).unwrap();
    let digest = format!(
        "sha256:{:x}",
        <sha2::Sha256 as sha2::Digest>::digest(written)
    );
    let pid_a = runtime.join("run/a-r0.pid");
    std::fs::write(&pid_a, a.pid.to_string()).unwrap();
    let mut state = State::default();
    state.steps.insert(
        "spawn:a/r0".into(),
        record("spawn", "a", server_outputs(&a, &pid_a)),
    );
    state.steps.insert(
        "handoff:a/r0".into(),
        record("handoff", "a", handoff_outputs(&handoff_a, &digest)),
    );
    state.steps.insert(
        "spawn:b/r0".into(),
        record(
            "spawn",
            "b",
            server_outputs(&b, &runtime.join("run/b-r0.pid")),
        ),
    );
    state.steps.insert(
        "handoff:b/r0".into(),
        record("handoff", "b", handoff_outputs(&handoff_b, &digest)),
    );
    let file = StateFile::new(runtime.join("state.json"));
    file.save(&state).unwrap();

    // An unknown pool changes nothing.
    let out = provision(dir.path(), &["down", "--pool", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no replicas of pool `nope`"));
    assert!(a.is_running() && handoff_a.exists());

    // The lock held by an apply: refused, naming it.
    {
        let _lock = provision_executor::acquire(&file.path, false).unwrap();
        let out = provision(dir.path(), &["down"]);
        assert_eq!(out.status.code(), Some(5), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&format!("pid {}", std::process::id()))
        );
        assert!(a.is_running());
    }

    // One pool.
    let out = provision(dir.path(), &["down", "--pool", "a"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spawn:a/r0: pid") && err.contains("stopped by SIGTERM"),
        "{err}"
    );
    assert!(gone(&a));
    assert!(!handoff_a.exists() && !pid_a.exists());
    assert!(b.is_running() && handoff_b.exists(), "pool b untouched");
    let saved = file.load().unwrap();
    assert_eq!(saved.steps["spawn:a/r0"].status, StepStatus::Cancelled);
    assert!(saved.steps["spawn:a/r0"].outputs.is_none());
    assert_eq!(saved.steps["spawn:b/r0"].status, StepStatus::Passed);

    // The rest, with a short grace: b ignores SIGTERM and is killed.
    let out = provision(dir.path(), &["down", "--grace", "0.3", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stopped = body["stopped"].as_array().unwrap();
    assert!(
        stopped.iter().any(|s| s["step"] == "spawn:b/r0"
            && s["what"].as_str().unwrap().contains("killed with SIGKILL")),
        "{body}"
    );
    assert!(gone(&b));
    assert!(!handoff_b.exists());

    // Again: nothing to do.
    let out = provision(dir.path(), &["down"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing was running"));
}

/// `provision` run in a new user and PID namespace (`unshare`), as process group 1's member:
/// whatever it signals stays inside the namespace. `None` where namespaces are unavailable.
fn in_pid_namespace(cwd: &Path, args: &str) -> Option<Output> {
    let probe = Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "--pid",
            "--fork",
            "--mount-proc",
            "true",
        ])
        .output()
        .ok()?;
    if !probe.status.success() {
        return None;
    }
    // Inside: `setsid` makes the shell pid 1 and the leader of group 1; `sleep` is a member of
    // group 1, as is provision. kill(-1) or kill(-pgid 1) from provision would end the sleep.
    let script = format!(
        "sleep 600 & S=$!; {} {args}; echo \"rc=$?\"; kill -0 $S && echo SURVIVED; kill $S",
        env!("CARGO_BIN_EXE_provision")
    );
    let out = Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "--pid",
            "--fork",
            "--mount-proc",
        ])
        .args(["setsid", "sh", "-c", &script])
        .current_dir(cwd)
        .output()
        .unwrap();
    Some(out)
}

#[test]
fn a_state_recording_pid_1_is_corrupt_exit_4_and_nothing_is_signalled() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join(".runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    let file = StateFile::new(runtime.join("state.json"));
    let mut state = State::default();
    state.steps.insert(
        "spawn:a/r0".into(),
        record(
            "spawn",
            "a",
            spawn_outputs(
                ServerIdentity {
                    pid: 1,
                    pgid: 1,
                    start_time: 12345,
                    boot_id: String::new(),
                    instance: None,
                },
                &runtime.join("run/a-r0.pid"),
            ),
        ),
    );
    file.save(&state).unwrap();
    let before = std::fs::read(&file.path).unwrap();

    // status reads the state and signals nothing: safe to run here.
    std::fs::write(
        dir.path().join("pools.yaml"),
        "pools:\n  - id: a\n    engine: llamacpp\n    model: m\n    backend: cpu\n    devices: []\n    provisioning:\n      mode: binary\n      binary: {path: /bin/true}\n      model: {ref: ./m.gguf}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("m.gguf"), b"GGUF").unwrap();
    let out = provision(dir.path(), &["status", "--config", "pools.yaml"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(
        err.contains(".runtime/state.json") && err.contains("step `spawn:a/r0` records pid 1"),
        "{err}"
    );

    // down: in a PID namespace, so that a regression signals only the namespace.
    match in_pid_namespace(dir.path(), "down") {
        Some(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(text.contains("rc=4"), "{text}\n{err}");
            assert!(
                text.contains("SURVIVED"),
                "group 1 was signalled: {text}\n{err}"
            );
            assert!(
                err.contains(".runtime/state.json")
                    && err.contains("step `spawn:a/r0` records pid 1"),
                "{err}"
            );
        }
        None => eprintln!("note: no user/PID namespaces here; `down` with pid 1 not run"),
    }
    assert_eq!(
        std::fs::read(&file.path).unwrap(),
        before,
        "the state is kept as it was"
    );
}

#[test]
fn down_finds_a_server_by_its_marker_when_state_and_pid_file_are_gone() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join(".runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    let marker = identity::instance_id(&runtime.display().to_string(), "a/r0");
    let server = start_server(false, &marker);
    // A server of another runtime dir is not this one's.
    let other = start_server(false, &identity::instance_id("/elsewhere/.runtime", "a/r0"));

    let out = provision(dir.path(), &["down"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("spawn:a/r0: unrecorded pid {}", server.pid)),
        "{err}"
    );
    assert!(gone(&server));
    assert!(
        other.is_running(),
        "another runtime dir's server is untouched"
    );
    assert!(!runtime.join("state.json").exists(), "down wrote no state");
    // The test started it: it ends it.
    let _ = Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{}", other.pgid)])
        .status();
}

/// A `down` whose lock file is removed while it waits for a server to stop writes the state no
/// more (another provision may hold the state now) and exits 5, naming the lock file.
#[test]
fn a_down_whose_lock_file_is_removed_writes_no_more_and_exits_5() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join(".runtime");
    std::fs::create_dir_all(runtime.join("run")).unwrap();
    // It ignores SIGTERM: down waits out its grace until the test kills it.
    let server = start_server(true, "0123456789abcdef/a/r0");
    let mut state = State::default();
    state.steps.insert(
        "spawn:a/r0".into(),
        record(
            "spawn",
            "a",
            server_outputs(&server, &runtime.join("run/a-r0.pid")),
        ),
    );
    let file = StateFile::new(runtime.join("state.json"));
    file.save(&state).unwrap();
    let before = std::fs::read(&file.path).unwrap();
    let lock = runtime.join("state.json.lock");
    let child = Command::new(env!("CARGO_BIN_EXE_provision"))
        .args(["down", "--grace", "600"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once down holds the lock (its pid is in the lock file), the file goes.
    let holder = format!("\"pid\":{}", child.id());
    let started = Instant::now();
    while !std::fs::read_to_string(&lock).is_ok_and(|t| t.contains(&holder)) {
        assert!(started.elapsed() < PATIENCE, "down never took the lock");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::fs::remove_file(&lock).unwrap();
    for pid in group_members(server.pgid) {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("state.json.lock") && err.contains("removed or replaced"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&file.path).unwrap(),
        before,
        "nothing was written after the lock was lost"
    );
}
