//! Step commands left running by an apply that was killed (`kill -9`): the record naming a
//! command's token is on disk before the command starts, every descendant carries the token in
//! its environment whatever process group or session it is in, and the next apply's reap stops
//! exactly the processes carrying a recorded token. Cancelling a command stops its descendants
//! in sessions of their own too.
//!
//! The "apply" that is killed is this test binary run again as a helper process (the test
//! `runner_helper`), so that it can be SIGKILLed without killing the test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use provision_executor::command::StepCommand;
use provision_executor::{orphans, Cancel};

/// The variable that tags every process a test starts (inherited by all descendants), so the
/// test finds them, and its guard kills them, without looking at anything else.
const TAG: &str = "ORPHAN_TEST_TAG";

/// How long a test waits for something that takes well under a second on an idle machine.
const PATIENCE: Duration = Duration::from_secs(60);

/// The value of `name` in the environment of process `pid`.
fn env_of(pid: u32, name: &str) -> Option<String> {
    let bytes = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{name}=");
    bytes
        .split(|&b| b == 0)
        .find_map(|e| e.strip_prefix(prefix.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Alive (not zombie) processes whose environment carries `TAG=tag`, with their command lines.
fn tagged(tag: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || env_of(pid, TAG).as_deref() != Some(tag) {
            continue;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].trim_start().chars().next());
        if matches!(state, Some('Z') | Some('X') | None) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        found.push((pid, String::from_utf8_lossy(&cmdline).replace('\0', " ")));
    }
    found
}

/// The process group and session of `pid`.
fn group_and_session(pid: u32) -> (u32, u32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .collect();
    (rest[2].parse().unwrap(), rest[3].parse().unwrap())
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < PATIENCE, "{what} (waited {PATIENCE:?})");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A unique tag for one test; kills (SIGKILL) whatever still carries it when dropped, so a
/// failing test leaves no `sleep 600` behind.
struct Tag(String);

impl Tag {
    fn new(name: &str) -> Tag {
        Tag(format!(
            "{name}-{}-{:?}",
            std::process::id(),
            Instant::now()
        ))
    }
}

impl Drop for Tag {
    fn drop(&mut self) {
        for _ in 0..3 {
            for (pid, _) in tagged(&self.0) {
                // SAFETY: kill(2) on a process this test started (it carries the test's tag).
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                }
            }
        }
    }
}

/// Run by `runner_helper` in a helper process: the step command given by the environment,
/// logged to `ORPHAN_TEST_LOG`, as an apply would run it.
fn helper_command() -> Option<(PathBuf, StepCommand)> {
    let log = std::env::var_os("ORPHAN_TEST_LOG")?;
    let script = std::env::var("ORPHAN_TEST_SCRIPT").unwrap();
    let tag = std::env::var(TAG).unwrap();
    let command = StepCommand::new(["sh", "-c", &script]).env(TAG, tag);
    Some((PathBuf::from(log), command))
}

#[test]
fn runner_helper() {
    // Does nothing unless started by `start_runner`.
    if let Some((log, command)) = helper_command() {
        let _ = command.run_logged(&log, &Cancel::new());
    }
}

/// This test binary as a process that runs `script` as a step command logged to `log`.
fn start_runner(log: &Path, script: &str, tag: &Tag) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "runner_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("ORPHAN_TEST_LOG", log)
        .env("ORPHAN_TEST_SCRIPT", script)
        .env(TAG, &tag.0)
        .spawn()
        .unwrap()
}

#[test]
fn the_record_is_on_disk_before_the_command_starts_and_names_the_token_it_carries() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("steps/build.log");
    let out = StepCommand::new([
        "sh",
        "-c",
        "printf '%s\\n' \"$PROVISION_STEP_TOKEN\"; for f in \"$0\".*; do cat \"$f\"; done",
        &log.display().to_string(),
    ])
    .read_logged(&log, &Cancel::new())
    .unwrap();
    let mut lines = out.lines();
    let token = lines.next().unwrap_or_default();
    assert!(token.len() >= 32, "the command carries a token: {out:?}");
    let record = lines.collect::<Vec<_>>().join("\n");
    assert!(
        record.contains(token),
        "the record names the token before the command runs: {out:?}"
    );
    // The command finished: its record is gone.
    let left: Vec<_> = std::fs::read_dir(log.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("build.log")]);
}

#[test]
fn the_next_reap_stops_a_killed_runner_s_command_and_its_descendant_in_a_session_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("steps");
    let tag = Tag::new("killed-runner");
    // A build tool and a job it started in a session (so a process group) of its own, as
    // ninja runs its jobs.
    let script = "setsid sleep 600 & sleep 600; wait";
    let mut runner = start_runner(&logs.join("build.log"), script, &tag);
    wait_until("the command never started both sleeps", || {
        tagged(&tag.0)
            .iter()
            .filter(|(_, c)| c.starts_with("sleep 600"))
            .count()
            == 2
    });
    let sleeps: Vec<u32> = tagged(&tag.0)
        .into_iter()
        .filter(|(_, c)| c.starts_with("sleep 600"))
        .map(|(pid, _)| pid)
        .collect();
    assert_ne!(
        group_and_session(sleeps[0]),
        group_and_session(sleeps[1]),
        "one sleep runs in a session of its own"
    );
    runner.kill().unwrap(); // SIGKILL: the runner cannot stop its command.
    runner.wait().unwrap();
    let left = tagged(&tag.0);
    assert!(left.len() >= 3, "the command outlived its runner: {left:?}");

    let stopped = orphans::reap(&logs);
    assert!(!stopped.is_empty(), "reap reports what it stopped");
    wait_until("a process was left running", || tagged(&tag.0).is_empty());
    assert!(
        std::fs::read_dir(&logs)
            .unwrap()
            .flatten()
            .all(|e| e.file_name() == "build.log"),
        "the record is removed"
    );
}

#[test]
fn cancelling_a_command_stops_its_descendant_in_a_session_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("steps/build.log");
    let tag = Tag::new("cancelled");
    let cancel = Cancel::new();
    let command =
        StepCommand::new(["sh", "-c", "setsid sleep 600 & sleep 600; wait"]).env(TAG, &tag.0);
    let runner = {
        let (log, cancel) = (log.clone(), cancel.clone());
        std::thread::spawn(move || command.run_logged(&log, &cancel))
    };
    wait_until("the command never started both sleeps", || {
        tagged(&tag.0)
            .iter()
            .filter(|(_, c)| c.starts_with("sleep 600"))
            .count()
            == 2
    });
    cancel.cancel();
    // Bounded: a descendant left running would hold the log pipe open for 600 s.
    wait_until("cancelling did not return", || runner.is_finished());
    let result = runner.join().unwrap();
    assert!(result.is_err(), "{result:?}");
    wait_until("a process was left running", || tagged(&tag.0).is_empty());
}
