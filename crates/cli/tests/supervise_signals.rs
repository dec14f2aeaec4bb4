//! `provision supervise` interrupted by SIGTERM or SIGINT at any moment after it started (its
//! signal handler is the first thing it sets up): while it plans, while its first apply runs,
//! while it watches. It exits 130 when the signal interrupted its first apply and 0 when it was
//! watching (its normal end); every time, the state file it wrote is a readable provision
//! state, and no server of the project is left running. A supervisor whose lock file is
//! removed writes no more and exits 5.
//!
//! The servers are the fake llama-server compiled into this test binary (see
//! reapply_after_kill.rs), hence `harness = false`.

#[path = "../../steps-spawn/src/bin/fake-llama-server.rs"]
mod fake;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use provision_executor::StateFile;
use provision_plan::outputs::SpawnOutputs;
use provision_steps_model::gguf_writer::{GgufWriter, LlamaShape};
use provision_steps_spawn::identity;

/// Set in the pool's env: this binary then runs as the fake llama-server.
const AS_SERVER: &str = "PROVISION_TEST_AS_LLAMA_SERVER";

/// How long a test waits for something that takes well under a second on an idle machine.
const PATIENCE: Duration = Duration::from_secs(90);

fn main() -> ExitCode {
    if std::env::var_os(AS_SERVER).is_some() {
        fake::main();
        return ExitCode::SUCCESS;
    }
    let mut args = Arguments::from_args();
    args.test_threads = Some(1);
    let tests = vec![
        Trial::test(
            "supervise_stopped_at_any_moment_writes_the_state_and_leaves_nothing",
            interrupted_at_any_moment,
        ),
        Trial::test(
            "a_supervisor_whose_lock_file_is_removed_writes_no_more_and_exits_5",
            lock_file_removed,
        ),
        Trial::test(
            "an_apply_signalled_before_it_holds_the_lock_exits_130_and_starts_nothing",
            apply_signalled_while_waiting,
        ),
        Trial::test(
            "a_quiet_supervisor_prints_nothing_but_errors_from_start_to_stop",
            quiet_supervisor,
        ),
        Trial::test(
            "a_supervisor_retires_the_replicas_removed_from_the_config",
            retires_removed,
        ),
        Trial::test(
            "a_second_signal_ends_a_supervisor_at_once_while_it_stops_its_replicas",
            second_signal,
        ),
        Trial::test(
            "a_quiet_supervisor_of_external_servers_only_says_nothing",
            quiet_external_only,
        ),
    ];
    libtest_mimic::run(&args, tests).exit_code()
}

/// When the signal is sent.
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// As soon as its handler is installed (`SigCgt` in `/proc/<pid>/status`).
    Started,
    /// Once the first apply wrote the state (its servers are loading).
    StateWritten,
    /// Once it watches the replicas.
    Watching,
}

fn project(dir: &Path) {
    GgufWriter::llama(LlamaShape {
        n_layer: 1,
        n_embd: 32,
        n_head: 2,
        n_head_kv: 2,
        n_ff: 64,
        n_vocab: 100,
        n_ctx_train: 512,
        weight_type: 1,
        output: true,
    })
    .write(&dir.join("model.gguf"))
    .unwrap();
    let config = format!(
        "pools:
  - id: p
    engine: llamacpp
    model: m
    backend: cpu
    devices: []
    replicas: 2
    readiness_timeout_ms: 60000
    provisioning:
      mode: binary
      binary: {{path: \"{}\"}}
      model: {{ref: ./model.gguf}}
      env: {{{AS_SERVER}: \"1\", FAKE_LOAD_MS: \"300\"}}
      flags: [--threads, \"1\"]
",
        std::env::current_exe().unwrap().display()
    );
    std::fs::write(dir.join("pools.yaml"), config).unwrap();
}

/// Whether process `pid` catches signal `sig` (its handler is installed).
fn catches(pid: u32, sig: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (sig - 1)) != 0)
}

fn wait_for(child: &mut Child, what: &str, mut done: impl FnMut() -> bool) {
    let since = Instant::now();
    while !done() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("supervise ended ({status}) before {what}");
        }
        assert!(since.elapsed() < PATIENCE, "never: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn servers(runtime: &Path) -> Vec<u32> {
    identity::find_by_marker(&runtime.display().to_string(), None)
        .into_iter()
        .map(|(pid, _)| pid)
        .collect()
}

fn run_once(dir: &Path, moment: Moment, sig: i32) {
    let runtime: PathBuf = dir.join(".runtime");
    // Each run starts from nothing (the last one stopped its servers).
    let _ = std::fs::remove_dir_all(&runtime);
    let log = dir.join(format!("supervise-{moment:?}-{sig}.log"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_provision"))
        .args(["supervise", "-c", "pools.yaml", "--cache-dir", "cache"])
        .current_dir(dir)
        .env_remove(AS_SERVER)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    let state = runtime.join("state.json");
    // Before its handler is installed (the first thing it does, but the loader and the runtime
    // come first) the kernel's default action applies: not provision's to change.
    wait_for(&mut child, "its handler", || catches(pid, sig));
    match moment {
        Moment::Started => {}
        Moment::StateWritten => wait_for(&mut child, "a state", || state.exists()),
        Moment::Watching => wait_for(&mut child, "watching", || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains("supervise: watching"))
        }),
    }
    // SAFETY: kill(2) on the child this test started and has not reaped.
    unsafe { libc::kill(pid as i32, sig) };
    let status = child.wait().unwrap();
    let err = std::fs::read_to_string(&log).unwrap();
    let context = format!("signal {sig} when {moment:?}");
    // Stopping a supervisor that watches is its normal end; before that, it interrupted an apply.
    let expected = match moment {
        Moment::Watching => 0,
        Moment::Started | Moment::StateWritten => 130,
    };
    assert_eq!(status.code(), Some(expected), "{context}: {err}");
    if state.exists() {
        StateFile::new(&state)
            .load()
            .unwrap_or_else(|e| panic!("{context}: {e}\n{err}"));
    }
    let left = servers(&runtime);
    assert!(left.is_empty(), "{context}: left running {left:?}\n{err}");
}

fn interrupted_at_any_moment() -> Result<(), Failed> {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    for moment in [Moment::Started, Moment::StateWritten, Moment::Watching] {
        for sig in [libc::SIGTERM, libc::SIGINT] {
            run_once(dir.path(), moment, sig);
        }
    }
    // A few more at the very start: the moment most likely to find something half set up.
    for _ in 0..3 {
        run_once(dir.path(), Moment::Started, libc::SIGTERM);
    }
    Ok(())
}

fn lock_file_removed() -> Result<(), Failed> {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    let runtime = dir.path().join(".runtime");
    let log = dir.path().join("supervise.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_provision"))
        .args(["supervise", "-c", "pools.yaml", "--cache-dir", "cache"])
        .current_dir(dir.path())
        .env_remove(AS_SERVER)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_for(&mut child, "watching", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("supervise: watching"))
    });
    let state = runtime.join("state.json");
    let before = std::fs::read(&state).unwrap();
    std::fs::remove_file(runtime.join("state.json.lock")).unwrap();
    let since = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if since.elapsed() > PATIENCE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // Its servers are left to whoever holds the state now: here, nobody.
    let left = servers(&runtime);
    for pid in &left {
        // SAFETY: kill(2) on a server this test's supervisor started.
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
    let err = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(5),
        "supervise ran on without its lock file: {err}"
    );
    assert!(err.contains("removed or replaced"), "{err}");
    assert_eq!(
        std::fs::read(&state).unwrap(),
        before,
        "no write after the loss"
    );
    assert_eq!(left.len(), 2, "its servers were not touched: {err}");
    Ok(())
}

/// `apply --wait` blocked on a lock this test holds gets SIGTERM (its handler is the first thing
/// it sets up, before the plan and the lock): once the lock is free it starts nothing and exits
/// 130, not the default death (143).
fn apply_signalled_while_waiting() -> Result<(), Failed> {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    let runtime = dir.path().join(".runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    let held = provision_executor::acquire(&runtime.join("state.json"), false).unwrap();
    let log = dir.path().join("apply.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_provision"))
        .args([
            "apply",
            "-q",
            "-c",
            "pools.yaml",
            "--cache-dir",
            "cache",
            "--wait",
        ])
        .current_dir(dir.path())
        .env_remove(AS_SERVER)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Blocked in flock(2) on the held lock file.
    wait_for(&mut child, "blocked on the lock", || {
        std::fs::read_to_string(format!("/proc/{pid}/wchan")).is_ok_and(|w| w.contains("flock"))
            || std::fs::read_to_string(format!("/proc/{pid}/stack"))
                .is_ok_and(|w| w.contains("flock"))
            || std::fs::read_to_string(format!("/proc/{pid}/syscall"))
                .is_ok_and(|w| w.split_whitespace().next() == Some("73"))
    });
    // SAFETY: kill(2) on the child this test started and has not reaped.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(100));
    drop(held);
    let status = child.wait().unwrap();
    let err = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    // -q: the exit's reason, and no progress ("stopping: …").
    assert!(
        !err.contains("stopping"),
        "apply -q said it is stopping: {err}"
    );
    assert!(servers(&runtime).is_empty(), "it started a server: {err}");
    assert!(
        !runtime.join("state.json").exists(),
        "it wrote a state: {err}"
    );
    Ok(())
}

/// `supervise -q` brings its replicas up, restarts one whose server was killed, and stops
/// them on SIGTERM (exit 0) without a line on stderr: no progress, no "watching", no "down",
/// no "restarting", no "stopping", no stopped replicas.
fn quiet_supervisor() -> Result<(), Failed> {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    let runtime = dir.path().join(".runtime");
    let log = dir.path().join("supervise.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_provision"))
        .args([
            "supervise",
            "-q",
            "-c",
            "pools.yaml",
            "--cache-dir",
            "cache",
        ])
        .current_dir(dir.path())
        .env_remove(AS_SERVER)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let state = StateFile::new(runtime.join("state.json"));
    // The pid of replica `r`'s server once its handoff is written.
    let up = |r: u32| -> Option<u64> {
        let s = state.load().ok()?;
        let handoff = s.steps.get(&format!("handoff:p/r{r}"))?;
        if handoff.status != provision_executor::StepStatus::Passed {
            return None;
        }
        let spawned = s.steps.get(&format!("spawn:p/r{r}"))?.outputs.as_ref()?;
        Some(u64::from(spawned.get::<SpawnOutputs>()?.server.pid))
    };
    wait_for(&mut child, "both replicas handed off", || {
        up(0).is_some() && up(1).is_some()
    });
    let first = up(0).unwrap();
    // SAFETY: kill(2) on a server this test's supervisor started (its pid, from the state).
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    // Only a watching supervisor restarts a replica: once r0 has a new server, it watches.
    wait_for(&mut child, "r0 restarted", || {
        up(0).is_some_and(|p| p != first)
    });
    // SAFETY: kill(2) on the child this test started and has not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let err = std::fs::read_to_string(&log).unwrap();
    let left = servers(&runtime);
    assert!(left.is_empty(), "left running {left:?}\n{err}");
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!(err, "", "supervise -q wrote to stderr");
    Ok(())
}

/// Two replicas applied, then the config keeps one: a supervisor retires the other before it
/// watches (its server stopped, its handoff file and records gone), like apply does.
fn retires_removed() -> Result<(), Failed> {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    let runtime = dir.path().join(".runtime");
    let out = Command::new(env!("CARGO_BIN_EXE_provision"))
        .args(["apply", "-c", "pools.yaml", "--cache-dir", "cache"])
        .current_dir(dir.path())
        .env_remove(AS_SERVER)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(servers(&runtime).len(), 2, "{err}");
    let handoff_r1 = runtime.join("engines/llamacpp-p-r1.json");
    assert!(handoff_r1.exists(), "{err}");
    let config = std::fs::read_to_string(dir.path().join("pools.yaml")).unwrap();
    std::fs::write(
        dir.path().join("pools.yaml"),
        config.replace("replicas: 2", "replicas: 1"),
    )
    .unwrap();

    let log = dir.path().join("supervise.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_provision"))
        .args(["supervise", "-c", "pools.yaml", "--cache-dir", "cache"])
        .current_dir(dir.path())
        .env_remove(AS_SERVER)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_for(&mut child, "watching", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("supervise: watching"))
    });
    let watching = servers(&runtime);
    let state = StateFile::new(runtime.join("state.json")).load().unwrap();
    // SAFETY: kill(2) on the child this test started and has not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let err = std::fs::read_to_string(&log).unwrap();
    let left = servers(&runtime);
    for pid in &left {
        // SAFETY: kill(2) on a server this test's apply started (it carries its marker).
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
    assert_eq!(watching.len(), 1, "r1 still runs while watching: {err}");
    assert!(
        !state.steps.keys().any(|id| id.ends_with("p/r1")),
        "r1 is still recorded: {:?}\n{err}",
        state.steps.keys().collect::<Vec<_>>()
    );
    assert!(!handoff_r1.exists(), "r1's handoff is left: {err}");
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(left.is_empty(), "left running {left:?}\n{err}");
    Ok(())
}

/// A supervisor stopping replicas that ignore SIGTERM waits out its grace (60 s here); a
/// second SIGTERM ends it at once with 130, leaving the servers recorded in its state for the
/// next apply or down.
fn second_signal() -> Result<(), Failed> {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    let config = dir.path().join("pools.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "FAKE_LOAD_MS: \"300\"",
            "FAKE_LOAD_MS: \"300\", FAKE_IGNORE_SIGTERM: \"1\"",
        ),
    )
    .unwrap();
    let runtime = dir.path().join(".runtime");
    let log = dir.path().join("supervise.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_provision"))
        .args(["supervise", "-c", "pools.yaml", "--cache-dir", "cache"])
        .args(["--grace", "60"])
        .current_dir(dir.path())
        .env_remove(AS_SERVER)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let err = || std::fs::read_to_string(&log).unwrap();
    wait_for(&mut child, "watching", || err().contains("watching"));
    let pid = child.id() as i32;
    // SAFETY: kill(2) on the child this test started and has not reaped.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    wait_for(&mut child, "stopping", || {
        err().contains("stopping every replica")
    });
    std::thread::sleep(Duration::from_millis(200));
    let second = Instant::now();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let took = second.elapsed();
    let left = servers(&runtime);
    for server in &left {
        // SAFETY: kill(2) on a server of this test's project (found by its runtime marker).
        unsafe { libc::kill(*server as i32, libc::SIGKILL) };
    }
    assert_eq!(status.code(), Some(130), "{}", err());
    assert!(took < Duration::from_secs(20), "took {took:?}: {}", err());
    assert_eq!(
        left.len(),
        2,
        "the servers ignoring SIGTERM still ran: {}",
        err()
    );
    Ok(())
}

/// `supervise -q` of a config whose only pool is an external server (here a fake
/// llama-server this test starts): nothing to watch, exit 0, not a line on stderr.
fn quiet_external_only() -> Result<(), Failed> {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let model = dir.path().join("model.gguf");
    let mut server = Command::new(std::env::current_exe().unwrap())
        .args(["-m", &model.display().to_string(), "--host", "127.0.0.1"])
        .args(["--port", &port.to_string()])
        .env(AS_SERVER, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::fs::write(
        dir.path().join("pools.yaml"),
        format!(
            "pools:
  - id: e
    engine: llamacpp
    model: m
    backend: cpu
    devices: []
    provisioning:
      mode: external
      external: {{url: \"http://127.0.0.1:{port}\"}}
      model: {{ref: ./model.gguf}}
"
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_provision"))
        .args([
            "supervise",
            "-q",
            "-c",
            "pools.yaml",
            "--cache-dir",
            "cache",
        ])
        .current_dir(dir.path())
        .env_remove(AS_SERVER)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(err, "", "supervise -q wrote to stderr");
    Ok(())
}
