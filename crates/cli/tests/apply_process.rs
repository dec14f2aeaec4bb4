//! The real `provision apply` as a process: killed with SIGKILL at random moments it always
//! leaves a readable state file and no stray commands, and the next applies converge to what
//! an uninterrupted apply gives; a second apply on a locked state file fails naming the holder,
//! or waits with `--wait`. The steps are real and cheap: git clone of a local repository and a
//! CMake build of `fixtures/cmake-hello`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use provision_executor::{StateFile, StepStatus};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@localhost"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A scratch world: a git repository holding the CMake fixture, a model file, a config.
struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        World::with_cmake_flags("[]")
    }

    fn with_cmake_flags(cmake_flags: &str) -> World {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("upstream");
        std::fs::create_dir_all(&src).unwrap();
        for entry in std::fs::read_dir(repo_root().join("fixtures/cmake-hello")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), src.join(entry.file_name())).unwrap();
        }
        git(&src, &["init", "-q"]);
        git(&src, &["add", "-A"]);
        git(&src, &["commit", "-q", "-m", "hello"]);
        git(&src, &["tag", "v1"]);
        std::fs::write(dir.path().join("model.gguf"), b"GGUF").unwrap();
        let config = format!(
            "pools:\n  - id: p\n    engine: llamacpp\n    model: m\n    backend: cpu\n    devices: []\n    provisioning:\n      source: {{repo: \"file://{}\", ref: v1, build: {{cmake_flags: {cmake_flags}}}}}\n      model: {{ref: ./model.gguf}}\n",
            src.display()
        );
        std::fs::write(dir.path().join("pools.yaml"), config).unwrap();
        World { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn apply_command(&self, extra: &[&str]) -> Command {
        self.command("apply", extra)
    }

    /// `provision <sub>` (apply or supervise) on the world's config.
    fn command(&self, sub: &str, extra: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_provision"));
        cmd.args([sub, "--config", "pools.yaml", "--cache-dir", "cache"])
            .args(extra)
            .current_dir(self.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn apply(&self) -> (i32, String) {
        let out = self.apply_command(&[]).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn state_file(&self) -> StateFile {
        StateFile::new(self.path().join(".runtime/state.json"))
    }

    /// Step id → status, the state file's verdict.
    fn statuses(&self) -> BTreeMap<String, StepStatus> {
        let state = self
            .state_file()
            .load()
            .expect("the state file always parses");
        state
            .steps
            .into_iter()
            .map(|(id, r)| (id, r.status))
            .collect()
    }
}

/// Processes whose command line mentions `dir` (stray git, cmake, ninja or compilers).
fn processes_under(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let cwd = std::fs::read_link(entry.path().join("cwd")).unwrap_or_default();
        if cmdline.contains(&needle) || cwd.starts_with(dir) {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

/// Wait until `done` holds, polling; panics naming `what` after `bound`. The bound is generous
/// (a loaded CI machine is slow): it only decides how long a failing test takes to say so.
fn wait_until(what: &str, bound: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < bound, "{what} (waited {bound:?})");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The slow build's `sleep`: far longer than any wait of these tests, so a build that is still
/// there after one was not stopped, and did not just end by itself.
const SLOW: &str = "[-DHELLO_SLOW_SECONDS=600]";
const SLOW_SLEEP: &str = "sleep 600";

/// How long a test waits for something that takes well under a second on an idle machine.
const PATIENCE: Duration = Duration::from_secs(90);

/// Kills (SIGKILL) every process still working under the world when dropped, so a failing
/// test leaves no `sleep 600` behind.
struct Reaper<'a>(&'a Path);

impl Drop for Reaper<'_> {
    fn drop(&mut self) {
        // Twice: a build tool killed in the first pass may have started a command meanwhile.
        for _ in 0..2 {
            for line in processes_under(self.0) {
                eprintln!("reaper: kill -9 {line}");
                if let Some(pid) = line.split(':').next() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
        }
    }
}

/// Wait until the world's state says `step` is running.
fn wait_running(world: &World, step: &str, what: &str) {
    wait_until(what, PATIENCE, || {
        world
            .statuses()
            .get(step)
            .is_some_and(|s| *s == StepStatus::Running)
    });
}

/// Start an apply of a slow-build world and wait until its build runs its `sleep`.
fn apply_in_slow_build(world: &World) -> std::process::Child {
    let child = world.apply_command(&[]).spawn().unwrap();
    wait_running(world, "cmake-build:upstream@v1", "the build never started");
    wait_until("the build never reached its sleep", PATIENCE, || {
        processes_under(world.path())
            .iter()
            .any(|p| p.contains(SLOW_SLEEP))
    });
    child
}

/// What still works under the world after its apply was SIGKILLed mid-build: its build, which
/// must have outlived it.
fn outliving_build(world: &World) -> Vec<String> {
    let orphans = processes_under(world.path());
    assert!(
        orphans.iter().any(|p| p.contains(SLOW_SLEEP)),
        "expected the build to outlive provision: {orphans:#?}"
    );
    orphans
}

/// Start the next apply and wait (bounded) until none of `orphans` is left: the apply, still
/// running, and the orphans left after the wait.
fn next_apply_stops(world: &World, orphans: &[String]) -> (std::process::Child, Vec<String>) {
    next_command_stops(world, "apply", orphans)
}

/// Start `provision <sub>` and wait (bounded) until none of `orphans` is left: the command,
/// still running, and the orphans left after the wait.
fn next_command_stops(
    world: &World,
    sub: &str,
    orphans: &[String],
) -> (std::process::Child, Vec<String>) {
    let next = world.command(sub, &[]).spawn().unwrap();
    let still = || -> Vec<String> {
        processes_under(world.path())
            .into_iter()
            .filter(|p| orphans.contains(p))
            .collect()
    };
    let started = Instant::now();
    while !still().is_empty() && started.elapsed() < PATIENCE {
        std::thread::sleep(Duration::from_millis(50));
    }
    (next, still())
}

/// Wait for an apply to end: its status and its stderr.
fn finished(mut child: std::process::Child) -> (std::process::ExitStatus, String) {
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status, err)
}

/// Nothing works under the world any more (a SIGKILLed process may take a moment to go).
fn assert_nothing_left(world: &World) {
    let started = Instant::now();
    while !processes_under(world.path()).is_empty() && started.elapsed() < PATIENCE {
        std::thread::sleep(Duration::from_millis(50));
    }
    let stray = processes_under(world.path());
    assert!(stray.is_empty(), "left running: {stray:#?}");
}

/// A small deterministic generator, so a failing run can be replayed from its seed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound.max(1)
    }
}

#[test]
fn killed_at_random_moments_it_converges_and_leaves_nothing_running() {
    // What an uninterrupted apply gives, and how long it takes.
    let reference = World::new();
    let t = Instant::now();
    let (code, err) = reference.apply();
    let full = t.elapsed();
    let expected = reference.statuses();
    assert!(expected.contains_key("cmake-build:upstream@v1"), "{err}");
    assert_eq!(
        expected["cmake-build:upstream@v1"],
        StepStatus::Passed,
        "{err}"
    );

    let world = World::new();
    let seed = std::env::var("KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let mut rng = Lcg(seed);
    let window = (full.as_millis() as u64).max(50);
    for round in 0..20 {
        let mut child = world.apply_command(&[]).spawn().unwrap();
        let wait = rng.next(window);
        std::thread::sleep(Duration::from_millis(wait));
        // SIGKILL: no handler runs, nothing is cleaned up.
        let _ = child.kill();
        let _ = child.wait();
        let state = world.state_file().load();
        assert!(
            state.is_ok(),
            "round {round} (seed {seed}, killed after {wait} ms): {:?}",
            state.err()
        );
    }
    // The next apply reaps what the killed ones left running and converges.
    let (code2, err2) = world.apply();
    assert_eq!(code2, code, "seed {seed}: {err2}");
    assert_eq!(world.statuses(), expected, "seed {seed}: {err2}");
    let (code3, _) = world.apply();
    assert_eq!(code3, code);
    let stray = processes_under(world.path());
    assert!(stray.is_empty(), "seed {seed}: left running: {stray:#?}");
}

#[test]
fn a_second_apply_fails_naming_the_holder_or_waits() {
    let world = World::new();
    std::fs::create_dir_all(world.path().join(".runtime")).unwrap();
    let state = world.path().join(".runtime/state.json");
    let held = provision_executor::acquire(&state, false).unwrap();

    let out = world.apply_command(&[]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    assert!(err.contains("--wait"), "{err}");
    assert!(!state.exists(), "the locked-out apply wrote nothing");

    let waiting = world.apply_command(&["--wait"]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(held);
    let out = waiting.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cmake-build:upstream@v1"), "{err}");
    assert_eq!(
        world.statuses()["cmake-build:upstream@v1"],
        StepStatus::Passed
    );
}

#[test]
fn a_corrupt_state_file_is_an_error_and_is_kept() {
    let world = World::new();
    std::fs::create_dir_all(world.path().join(".runtime")).unwrap();
    let state = world.path().join(".runtime/state.json");
    std::fs::write(&state, "{ not json").unwrap();
    let (code, err) = world.apply();
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("unreadable") && err.contains("mv "), "{err}");
    assert_eq!(std::fs::read_to_string(&state).unwrap(), "{ not json");
}

#[test]
fn a_second_apply_skips_and_plan_says_so() {
    let world = World::new();
    let (first, _) = world.apply();
    let (second, err) = world.apply();
    assert_eq!(first, second);
    assert!(err.contains("0 ran"), "{err}");
    let plan = Command::new(env!("CARGO_BIN_EXE_provision"))
        .args([
            "plan",
            "--config",
            "pools.yaml",
            "--cache-dir",
            "cache",
            "--detailed-exitcode",
        ])
        .current_dir(world.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(text.contains("= skip git-clone:upstream@v1"), "{text}");
    // The failing (not yet implemented or broken) steps would run again.
    let expected = if first == 0 { 0 } else { 2 };
    assert_eq!(plan.status.code(), Some(expected), "{text}");
}

#[test]
fn sigterm_stops_running_steps_writes_state_and_exits_130() {
    let world = World::with_cmake_flags(SLOW);
    let _reaper = Reaper(world.path());
    let child = apply_in_slow_build(&world);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    // It stops long before the build would have ended (600 s).
    let (status, err) = finished(child);
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("cancelled cmake-build:upstream@v1"), "{err}");
    assert_eq!(
        world.statuses()["cmake-build:upstream@v1"],
        StepStatus::Cancelled
    );
    // The build's `sleep 600` went with it (a SIGKILLed process may take a moment to go).
    assert_nothing_left(&world);
    // The next apply picks the build up again and says why.
    let mut next = world.apply_command(&["-v"]).spawn().unwrap();
    wait_running(
        &world,
        "cmake-build:upstream@v1",
        "the next apply never ran the build",
    );
    let _ = next.kill();
    let _ = next.wait();
    let state = world.state_file().load().unwrap();
    let reason = state.steps["cmake-build:upstream@v1"]
        .reason
        .as_ref()
        .map(|r| r.to_string());
    assert_eq!(reason.as_deref(), Some("last run was cancelled"));
}

#[test]
fn a_build_left_running_by_a_killed_apply_is_stopped_by_the_next() {
    let world = World::with_cmake_flags(SLOW);
    let _reaper = Reaper(world.path());
    let mut child = apply_in_slow_build(&world);
    let _ = child.kill(); // SIGKILL: provision cannot stop its build.
    let _ = child.wait();
    let orphans = outliving_build(&world);

    // The next apply stops them: within the bound, long before the `sleep 600` would end.
    let (mut next, left) = next_apply_stops(&world, &orphans);
    let _ = next.kill();
    let _ = next.wait();
    assert!(
        left.is_empty(),
        "the next apply left the old build running: {left:#?}"
    );
    // Whatever the second (killed) apply started goes too: the reaper.
}

#[test]
fn a_build_left_running_by_a_killed_apply_is_stopped_by_a_supervisor() {
    let world = World::with_cmake_flags(SLOW);
    let _reaper = Reaper(world.path());
    let mut child = apply_in_slow_build(&world);
    let _ = child.kill(); // SIGKILL: provision cannot stop its build.
    let _ = child.wait();
    let orphans = outliving_build(&world);

    // A supervisor opens the same session as apply: it stops them before its first apply.
    let (mut next, left) = next_command_stops(&world, "supervise", &orphans);
    let _ = next.kill();
    let _ = next.wait();
    assert!(
        left.is_empty(),
        "the supervisor left the old build running: {left:#?}"
    );
    // Whatever the (killed) supervisor started goes too: the reaper.
}

/// Send `signal` to the build tools (ninja, make) working under `dir`.
fn signal_build_tools(dir: &Path, signal: &str) -> usize {
    let mut sent = 0;
    for line in processes_under(dir) {
        let Some((pid, cmdline)) = line.split_once(": ") else {
            continue;
        };
        let program = cmdline.split(' ').next().unwrap_or_default();
        let name = Path::new(program).file_name().and_then(|n| n.to_str());
        if matches!(name, Some("ninja" | "make" | "gmake")) {
            let _ = Command::new("kill").args(["-s", signal, pid]).status();
            sent += 1;
        }
    }
    sent
}

#[test]
fn a_build_job_whose_build_tool_cannot_pass_a_signal_on_is_stopped_by_the_next_apply() {
    // ninja runs each job in a process group of its own and stops its jobs when it gets
    // SIGTERM. Here it cannot (it is stopped), so only what finds the job itself stops it.
    let world = World::with_cmake_flags(SLOW);
    let _reaper = Reaper(world.path());
    let mut child = apply_in_slow_build(&world);
    let _ = child.kill(); // SIGKILL: provision cannot stop its build.
    let _ = child.wait();
    assert!(
        signal_build_tools(world.path(), "STOP") > 0,
        "no build tool found: {:#?}",
        processes_under(world.path())
    );
    let orphans = outliving_build(&world);

    let (mut next, left) = next_apply_stops(&world, &orphans);
    signal_build_tools(world.path(), "CONT");
    let _ = next.kill();
    let _ = next.wait();
    assert!(
        left.is_empty(),
        "the next apply left the old build running: {left:#?}"
    );
}

#[test]
fn an_apply_whose_lock_file_is_removed_stops_and_writes_no_more() {
    let world = World::with_cmake_flags(SLOW);
    let _reaper = Reaper(world.path());
    let mut child = apply_in_slow_build(&world);
    let lock = world.path().join(".runtime/state.json.lock");
    let before = std::fs::read(world.path().join(".runtime/state.json")).unwrap();
    std::fs::remove_file(&lock).unwrap();
    // It stops long before its build would end (600 s), without a signal.
    wait_until("the apply ran on without its lock file", PATIENCE, || {
        child.try_wait().unwrap().is_some()
    });
    let (status, err) = finished(child);
    assert_eq!(status.code(), Some(5), "{err}");
    assert!(err.contains(".runtime/state.json.lock"), "{err}");
    assert!(err.contains("removed or replaced"), "{err}");
    assert_eq!(
        std::fs::read(world.path().join(".runtime/state.json")).unwrap(),
        before,
        "nothing was written after the lock was lost"
    );
    // Its build was stopped with it.
    assert_nothing_left(&world);
}
