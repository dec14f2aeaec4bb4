//! `provision apply` of 6 replicas on auto ports, killed with SIGKILL while its servers are
//! still loading (started, not listening yet), then applied again: the second apply exits 0,
//! every handoff names a port that the handoff's own server listens on, and no server of the
//! project is left that no handoff names (issue 13, finding 2). A server left by a killed apply
//! for a replica that is no longer configured is stopped by the next apply, found by its marker.
//!
//! The servers are real processes started by the real `provision` binary: the fake
//! llama-server (crates/steps-spawn/src/bin/fake-llama-server.rs), compiled into this test
//! binary, which runs as that server when `PROVISION_TEST_AS_LLAMA_SERVER` is set (the config
//! names this binary as the llama-server binary). Hence `harness = false`.

#[path = "../../steps-spawn/src/bin/fake-llama-server.rs"]
mod fake;

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Output, Stdio};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use provision_steps_model::gguf_writer::{GgufWriter, LlamaShape};
use provision_steps_spawn::identity;
use provision_steps_spawn::port;
use provision_steps_spawn::{HandoffFile, ReplicaState, StatusReport};

/// Set in the pool's env: this binary then runs as the fake llama-server.
const AS_SERVER: &str = "PROVISION_TEST_AS_LLAMA_SERVER";

/// How long a server takes to bind its port: far longer than an apply takes to choose ports,
/// so the killed apply's servers are still loading when the next apply chooses.
const BIND_DELAY_MS: u64 = 2000;

/// How long a test waits for something that takes well under a second on an idle machine: it
/// only decides how long a failing test takes to say so.
const PATIENCE: Duration = Duration::from_secs(90);

fn main() -> ExitCode {
    if std::env::var_os(AS_SERVER).is_some() {
        fake::main();
        return ExitCode::SUCCESS;
    }
    let mut args = Arguments::from_args();
    // Each test starts up to a dozen servers: one test at a time.
    args.test_threads = Some(1);
    let tests = vec![
        Trial::test(
            "killed_while_servers_load_then_applied_again_every_handoff_is_its_own_server",
            killed_while_servers_load_then_applied_again,
        ),
        Trial::test(
            "an_unrecorded_server_of_a_replica_no_longer_configured_is_stopped_by_the_next_apply",
            an_unrecorded_server_is_stopped_by_the_next_apply,
        ),
        Trial::test(
            "two_configs_sharing_a_runtime_dir_with_their_own_state_files_touch_only_their_own_servers",
            two_state_files_in_one_runtime_dir,
        ),
        Trial::test(
            "a_second_state_file_never_takes_over_the_first_ones_handoff_in_a_shared_runtime_dir",
            shared_default_handoff,
        ),
        Trial::test(
            "an_unrecorded_server_is_stopped_by_a_supervisor_before_it_watches",
            an_unrecorded_server_is_stopped_by_a_supervisor,
        ),
        Trial::test(
            "a_quiet_apply_stops_an_unrecorded_server_without_a_word",
            a_quiet_apply_stops_an_unrecorded_server,
        ),
        Trial::test(
            "status_reports_each_replica_up_then_down_as_its_typed_report",
            status_reports_each_replica,
        ),
    ];
    libtest_mimic::run(&args, tests).exit_code()
}

/// A project: a tiny GGUF model, a config whose llama-server is this binary, its runtime dir.
struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn new(replicas: u32) -> World {
        let dir = tempfile::tempdir().unwrap();
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
        .write(&dir.path().join("model.gguf"))
        .unwrap();
        let world = World { dir };
        world.configure(replicas);
        world
    }

    fn configure(&self, replicas: u32) {
        let config = format!(
            "pools:
  - id: p
    engine: llamacpp
    model: m
    backend: cpu
    devices: []
    replicas: {replicas}
    readiness_timeout_ms: 60000
    provisioning:
      mode: binary
      binary: {{path: \"{}\"}}
      model: {{ref: ./model.gguf}}
      env: {{{AS_SERVER}: \"1\", FAKE_BIND_DELAY_MS: \"{BIND_DELAY_MS}\"}}
      flags: [--threads, \"1\"]
",
            std::env::current_exe().unwrap().display()
        );
        std::fs::write(self.dir.path().join("pools.yaml"), config).unwrap();
    }

    fn runtime(&self) -> PathBuf {
        self.dir.path().join(".runtime")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_provision"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_remove(AS_SERVER)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn apply(&self) -> Output {
        self.command(&["apply", "-c", "pools.yaml", "--cache-dir", "cache"])
            .output()
            .unwrap()
    }

    /// The processes carrying this project's marker: its servers.
    fn servers(&self) -> BTreeSet<u32> {
        identity::find_by_marker(&self.runtime().display().to_string(), None)
            .into_iter()
            .map(|(pid, _)| pid)
            .collect()
    }

    /// Start an apply and SIGKILL it once `started` of its servers run (still loading: they
    /// bind only after `BIND_DELAY_MS`).
    fn apply_killed_after(&self, started: usize) {
        let mut child = self
            .command(&["apply", "-c", "pools.yaml", "--cache-dir", "cache"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let since = Instant::now();
        while self.servers().len() < started {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the apply ended ({status}) before {started} servers started");
            }
            assert!(
                since.elapsed() < PATIENCE,
                "{started} servers never started"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        // SIGKILL: no handler runs, nothing is cleaned up or recorded.
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Every handoff's URL port is listened on by the handoff's own pid, there are `replicas`
    /// of them on distinct ports, and every server of the project is named by one.
    fn check_handoffs(&self, replicas: usize, context: &str) {
        let engines = self.runtime().join("engines");
        let mut named = BTreeSet::new();
        let mut ports = BTreeSet::new();
        for entry in std::fs::read_dir(&engines).unwrap() {
            let path = entry.unwrap().path();
            // `.<name>.tmp.<pid>`: a write the SIGKILL cut short, never renamed into place.
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let file: HandoffFile =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let port: u16 = file.url.rsplit(':').next().unwrap().parse().unwrap();
            let holder = port::holder(port).map(|h| h.pid);
            assert_eq!(
                holder,
                file.pid,
                "{context}: {} names port {port} and pid {:?}; the port is held by {holder:?}",
                path.display(),
                file.pid
            );
            named.insert(file.pid.unwrap());
            ports.insert(port);
        }
        assert_eq!(named.len(), replicas, "{context}: handoffs {named:?}");
        assert_eq!(ports.len(), replicas, "{context}: ports {ports:?}");
        assert_eq!(
            self.servers(),
            named,
            "{context}: servers running vs servers the handoffs name"
        );
    }

    fn down(&self) {
        let out = self.command(&["down"]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "down: {out:?}");
        let since = Instant::now();
        while !self.servers().is_empty() {
            assert!(since.elapsed() < PATIENCE, "servers left after down");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Stops what a world's test left running, even when it failed.
impl Drop for World {
    fn drop(&mut self) {
        let _ = self.command(&["down", "--grace", "0.2"]).output();
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn killed_while_servers_load_then_applied_again() -> Result<(), Failed> {
    let world = World::new(6);
    // Killed after the first server started, half of them, all but one, all of them: none
    // listening yet, some recorded in the state, some not.
    for started in [1, 3, 5, 6] {
        world.apply_killed_after(started);
        let out = world.apply();
        let context = format!("apply killed after {started} servers started");
        assert_eq!(out.status.code(), Some(0), "{context}: {}", stderr(&out));
        world.check_handoffs(6, &context);
        world.down();
    }
    Ok(())
}

/// A stand-in for a server that a killed apply started and never recorded: `sleep` leading its
/// own session, carrying the marker of `replica` (`pool/rN`) of runtime dir `runtime`.
fn unrecorded_server(runtime: &Path, replica: &str) -> u32 {
    let mut cmd = Command::new("sleep");
    cmd.arg("600")
        .env(
            identity::MARKER_VAR,
            identity::instance_id(&runtime.display().to_string(), replica),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid(2) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    // provision (another process) stops it; reaped by a thread so it leaves no zombie.
    std::thread::spawn(move || {
        let mut child = child;
        let _ = child.wait();
    });
    let marker = identity::instance_id(&runtime.display().to_string(), replica);
    assert!(identity::await_marker(pid, &marker, PATIENCE));
    pid
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.contains(") Z ") && !s.contains(") X "))
}

fn an_unrecorded_server_is_stopped_by_the_next_apply() -> Result<(), Failed> {
    // An apply of 6 replicas was killed before it recorded r4's server; the config now has 2.
    let world = World::new(2);
    std::fs::create_dir_all(world.runtime()).unwrap();
    let runtime = std::fs::canonicalize(world.runtime()).unwrap();
    let orphan = unrecorded_server(&runtime, "p/r4");
    // Not this config's: another pool (a project sharing the runtime dir with its own state
    // file), and another runtime dir.
    let other_pool = unrecorded_server(&runtime, "q/r0");
    let elsewhere = unrecorded_server(Path::new("/elsewhere/.runtime"), "p/r4");

    let out = world.apply();
    let err = stderr(&out);
    let survivors = [other_pool, elsewhere].map(|pid| (pid, alive(pid)));
    for pid in [other_pool, elsewhere] {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    // SIGKILL is delivered asynchronously: gone before the servers are counted below.
    let since = Instant::now();
    while alive(other_pool) || alive(elsewhere) {
        assert!(since.elapsed() < PATIENCE, "the stand-ins outlived SIGKILL");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&format!("spawn:p/r4: unrecorded pid {orphan}")),
        "the orphan is named: {err}"
    );
    let since = Instant::now();
    while alive(orphan) {
        assert!(since.elapsed() < PATIENCE, "pid {orphan} was not stopped");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        survivors,
        [(other_pool, true), (elsewhere, true)],
        "what is not this config's is untouched"
    );
    world.check_handoffs(2, "after the orphan was stopped");
    Ok(())
}

/// The server recorded in a state file (`spawn:p/r0`).
fn recorded_pid(world: &World, state: &str) -> u32 {
    let text = std::fs::read_to_string(world.dir.path().join(state)).unwrap();
    let state: serde_json::Value = serde_json::from_str(&text).unwrap();
    let pid = &state["steps"]["spawn:p/r0"]["outputs"]["pid"];
    u32::try_from(pid.as_u64().expect("a recorded pid")).unwrap()
}

/// Kills what a test left running, even when it failed.
struct KillOnDrop(Vec<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in &self.0 {
            if alive(*pid) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
    }
}

fn two_state_files_in_one_runtime_dir() -> Result<(), Failed> {
    // Two projects, one runtime dir, each with its own state file, the same pool name (their
    // handoffs go to their own config dirs).
    let world = World::new(1);
    for project in ["a", "b"] {
        std::fs::create_dir_all(world.dir.path().join(project)).unwrap();
        let config = std::fs::read_to_string(world.dir.path().join("pools.yaml"))
            .unwrap()
            .replace(&format!("\"{BIND_DELAY_MS}\""), "\"0\"")
            .replace(
                "    provisioning:",
                "    handoff_path: ${config_dir}/handoff.json\n    provisioning:",
            )
            .replace("./model.gguf", "../model.gguf");
        std::fs::write(world.dir.path().join(project).join("pools.yaml"), config).unwrap();
    }
    let run = |args: &[&str]| {
        let out = world.command(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        out
    };
    let apply = |p: &str| {
        let (config, state) = (format!("{p}/pools.yaml"), format!("{p}.json"));
        run(&[
            "apply",
            "-c",
            &config,
            "--state",
            &state,
            "--cache-dir",
            "cache",
        ]);
        recorded_pid(&world, &state)
    };
    let a = apply("a");
    let mut cleanup = KillOnDrop(vec![a]);
    let b = apply("b");
    cleanup.0.push(b);
    assert_ne!(a, b);
    assert!(
        alive(a),
        "b's apply stopped a's server (pid {a}) as if it were b's orphan"
    );

    let out = run(&["down", "--state", "a.json"]);
    let since = Instant::now();
    while alive(a) {
        assert!(
            since.elapsed() < PATIENCE,
            "down of a left a's pid {a} running"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        alive(b),
        "down of a stopped b's server (pid {b}): {}",
        stderr(&out)
    );
    assert!(world.dir.path().join("b/handoff.json").exists());

    run(&["down", "--state", "b.json"]);
    let since = Instant::now();
    while alive(b) {
        assert!(since.elapsed() < PATIENCE, "down of b left pid {b} running");
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Two state files, one runtime dir, the same pool name and the default handoff path (one file
/// for both): the second apply fails before starting a server (exit 3), and the first one's
/// handoff still names the first one's server.
fn shared_default_handoff() -> Result<(), Failed> {
    let world = World::new(1);
    for project in ["a", "b"] {
        std::fs::create_dir_all(world.dir.path().join(project)).unwrap();
        let config = std::fs::read_to_string(world.dir.path().join("pools.yaml"))
            .unwrap()
            .replace(&format!("\"{BIND_DELAY_MS}\""), "\"0\"")
            .replace("./model.gguf", "../model.gguf");
        std::fs::write(world.dir.path().join(project).join("pools.yaml"), config).unwrap();
    }
    let apply = |p: &str| {
        let (config, state) = (format!("{p}/pools.yaml"), format!("{p}.json"));
        let args = [
            "apply",
            "-c",
            &config,
            "--state",
            &state,
            "--cache-dir",
            "cache",
        ];
        world.command(&args).output().unwrap()
    };
    let out = apply("a");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let a = recorded_pid(&world, "a.json");
    let mut cleanup = KillOnDrop(vec![a]);
    let engines = world.runtime().join("engines");
    let handoff = std::fs::read_dir(&engines)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .next()
        .expect("a's handoff");
    let before = std::fs::read(&handoff).unwrap();

    // Every marked process of this user (b's runtime id is not the one this test process
    // would derive: its state file is not the default).
    let marked = || -> BTreeSet<u32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| identity::marker_of(pid).is_some())
            .collect()
    };
    let servers_before = marked();
    let out = apply("b");
    let err = stderr(&out);
    let started: Vec<u32> = marked().difference(&servers_before).copied().collect();
    cleanup.0.extend(&started);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("another provision state sharing this runtime directory"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&handoff).unwrap(),
        before,
        "b replaced a's handoff"
    );
    assert!(alive(a), "b stopped a's server");
    assert!(
        started.is_empty(),
        "b started a server it could never hand off: {started:?}"
    );
    let out = world
        .command(&["down", "--state", "a.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!handoff.exists(), "down of a left its handoff");
    Ok(())
}

/// A supervisor opens the same session as apply: a server a killed apply never recorded is
/// stopped before it watches.
fn an_unrecorded_server_is_stopped_by_a_supervisor() -> Result<(), Failed> {
    let world = World::new(1);
    std::fs::create_dir_all(world.runtime()).unwrap();
    let runtime = std::fs::canonicalize(world.runtime()).unwrap();
    let orphan = unrecorded_server(&runtime, "p/r3");
    let _kill = KillOnDrop(vec![orphan]);
    let log = world.dir.path().join("supervise.log");
    let mut child = world
        .command(&["supervise", "-c", "pools.yaml", "--cache-dir", "cache"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let since = Instant::now();
    while !std::fs::read_to_string(&log).is_ok_and(|t| t.contains("supervise: watching")) {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("supervise ended ({status}) before it watched");
        }
        assert!(since.elapsed() < PATIENCE, "supervise never watched");
        std::thread::sleep(Duration::from_millis(10));
    }
    let orphan_alive = alive(orphan);
    // SAFETY: kill(2) on the child this test started and has not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(!orphan_alive, "the unrecorded server ran on: {err}");
    assert!(
        err.contains(&format!("spawn:p/r3: unrecorded pid {orphan}")),
        "the orphan is named: {err}"
    );
    assert_eq!(status.code(), Some(0), "{err}");
    Ok(())
}

/// `-q` is only errors on stderr, the session's notes included: an unrecorded server stopped
/// (and the lock of a dead apply taken over) goes unsaid.
fn a_quiet_apply_stops_an_unrecorded_server() -> Result<(), Failed> {
    let world = World::new(1);
    std::fs::create_dir_all(world.runtime()).unwrap();
    let runtime = std::fs::canonicalize(world.runtime()).unwrap();
    let orphan = unrecorded_server(&runtime, "p/r3");
    let _kill = KillOnDrop(vec![orphan]);
    let out = world
        .command(&["apply", "-q", "-c", "pools.yaml", "--cache-dir", "cache"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let since = Instant::now();
    while alive(orphan) {
        assert!(since.elapsed() < PATIENCE, "pid {orphan} was not stopped");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(err, "", "apply -q wrote to stderr");
    Ok(())
}

/// `status --format json` is the typed report: after an apply every replica is up with its
/// server's pid and URL; with one server killed, that replica is down and says why.
fn status_reports_each_replica() -> Result<(), Failed> {
    let world = World::new(2);
    let out = world.apply();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let status = || -> StatusReport {
        let out = world
            .command(&[
                "status",
                "-c",
                "pools.yaml",
                "--cache-dir",
                "cache",
                "--format",
                "json",
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    };
    let report = status();
    assert!(report.steps_to_run.is_empty(), "{report:?}");
    assert!(report.state.ends_with(".runtime/state.json"), "{report:?}");
    let [pool] = &report.pools[..] else {
        panic!("one pool: {report:?}")
    };
    assert_eq!(pool.pool, "p");
    let pids: BTreeSet<u32> = pool.replicas.iter().filter_map(|r| r.pid).collect();
    assert_eq!(pids, world.servers(), "{report:?}");
    for (n, r) in pool.replicas.iter().enumerate() {
        assert_eq!(r.replica, n as u32);
        assert_eq!(r.state, ReplicaState::Up, "{report:?}");
        assert!(r.matches_config && r.drift.is_empty(), "{report:?}");
        assert!(r
            .url
            .as_deref()
            .is_some_and(|u| u.starts_with("http://127.0.0.1:")));
    }
    let victim = pool.replicas[0].pid.unwrap();
    let _ = Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status();
    let since = Instant::now();
    while alive(victim) {
        assert!(since.elapsed() < PATIENCE, "pid {victim} outlived SIGKILL");
        std::thread::sleep(Duration::from_millis(5));
    }
    let report = status();
    let r0 = &report.pools[0].replicas[0];
    assert_eq!(r0.state, ReplicaState::DownOrOutOfDate, "{report:?}");
    assert!(!r0.matches_config && !r0.drift.is_empty(), "{report:?}");
    assert!(
        report.steps_to_run.iter().any(|s| s == "spawn:p/r0"),
        "{report:?}"
    );
    assert_eq!(
        report.pools[0].replicas[1].state,
        ReplicaState::Up,
        "{report:?}"
    );
    Ok(())
}
