//! `provision down`, run as a user runs it, against real processes recorded in a state file:
//! servers stopped as a group, handoff and pid files removed, state updated, idempotent, lock
//! respected, an unknown pool refused.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use provision_executor::{State, StateFile, StepRecord, StepStatus};
use provision_steps_spawn::process::{group_members, ServerProcess};
use serde_json::json;

fn provision(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_provision"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

/// A stand-in server: `sh` leading its own session, with a `sleep` helper in its group.
fn start_server(ignore_term: bool) -> ServerProcess {
    let script = if ignore_term {
        "trap '' TERM; sleep 600 & wait"
    } else {
        "sleep 600 & wait"
    };
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script])
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

fn record(kind: &str, pool: &str, outputs: serde_json::Value) -> StepRecord {
    StepRecord {
        kind: kind.into(),
        status: StepStatus::Passed,
        fingerprint: Some("fp".into()),
        spec: json!({"kind": kind, "pool": pool, "replica": 0}),
        facts: Default::default(),
        deps: Default::default(),
        outputs: serde_json::from_value(outputs).unwrap(),
        artifacts: vec![],
        started_at: None,
        finished_at: None,
        duration_ms: None,
        reason: None,
        error: None,
    }
}

fn server_outputs(s: &ServerProcess, pid_file: &Path) -> serde_json::Value {
    json!({"pid": s.pid, "pgid": s.pgid, "start_time": s.start_time, "boot_id": s.boot_id,
           "pid_file": pid_file.display().to_string(), "port": 1})
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
    let a = start_server(false);
    let b = start_server(true);
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
        record(
            "handoff",
            "a",
            json!({"path": handoff_a.display().to_string(), "sha256": digest}),
        ),
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
        record(
            "handoff",
            "b",
            json!({"path": handoff_b.display().to_string(), "sha256": digest}),
        ),
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
    assert!(saved.steps["spawn:a/r0"].outputs.is_empty());
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
