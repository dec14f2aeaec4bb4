//! Process identity: provision signals only a server it can prove it started (pid, start time,
//! boot and the `PROVISION_INSTANCE` marker it put in the server's environment), never the group
//! of a process that failed that check, and finds its servers by the marker when the state file
//! and the pid files are gone. Pid reuse is simulated safely: the "stranger" is a `setsid`
//! process group this test starts, described by a record that does not match it.

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{assert_gone, spawn_record, Pool, Rig};
use provision_executor::State;
use provision_plan::outputs::ServerIdentity;
use provision_plan::StepOutputs;
use provision_steps_spawn as spawn;
use provision_steps_spawn::identity;
use provision_steps_spawn::process::{self, group_members, ProcStat, ServerProcess, Stopped};
use serde_json::json;

/// A process group this test owns: `sh` leading its own session with helpers in its group.
struct Stranger {
    child: Child,
    pid: u32,
}

impl Stranger {
    /// `script` runs under `sh -c` in a new session, with `env` added to its environment.
    fn start(script: &str, env: &[(&str, &str)], members: usize) -> Stranger {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: setsid(2) between fork and exec; async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        let pid = child.id();
        for _ in 0..500 {
            if group_members(pid).len() >= members {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(group_members(pid).len(), members, "the stranger's group");
        Stranger { child, pid }
    }

    /// The members of its group that are running (not zombies).
    fn alive(&self) -> Vec<u32> {
        // A SIGKILL takes effect at once; a short pause lets the kernel finish an exit.
        std::thread::sleep(Duration::from_millis(100));
        let _ = self.child.id();
        group_members(self.pid)
    }

    /// The process as it really is: pid, group, start time, boot.
    fn real(&self) -> ServerProcess {
        ServerProcess::of_pid(self.pid).unwrap()
    }
}

impl Drop for Stranger {
    fn drop(&mut self) {
        // The test started this group: it ends it.
        // SAFETY: kill(2) on the group of a child this test started and still holds.
        unsafe {
            libc::kill(-(self.pid as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

fn record(pid: u32, start_time: u64, boot_id: &str, instance: Option<&str>) -> StepOutputs {
    let server = ServerIdentity {
        pid,
        pgid: pid,
        start_time,
        boot_id: boot_id.into(),
        instance: instance.map(String::from),
    };
    spawn_record(server, "")
}

fn stop(outputs: &StepOutputs) -> Stopped {
    let server = ServerProcess::from_outputs(outputs).expect("a valid record");
    process::stop(&server, Duration::from_millis(300)).unwrap()
}

#[test]
fn a_pid_reused_by_another_session_is_not_signalled_nor_its_group() {
    let stranger = Stranger::start("sleep 600 & sleep 601 & wait", &[], 3);
    let real = stranger.real();
    // The record of a server that exited; its pid now leads the stranger's session.
    let how = stop(&record(
        real.pid,
        real.start_time + 1,
        &real.boot_id,
        Some("0123456789abcdef/fake/r0"),
    ));
    assert!(
        matches!(&how, Stopped::NotRunning(why) if why.contains("another process")),
        "{how:?}"
    );
    assert_eq!(
        stranger.alive().len(),
        3,
        "nothing of the stranger was signalled"
    );
}

#[test]
fn a_record_from_before_a_reboot_signals_nothing() {
    let stranger = Stranger::start("sleep 600 & wait", &[], 2);
    let real = stranger.real();
    let how = stop(&record(
        real.pid,
        real.start_time,
        "00000000-0000-0000-0000-000000000000",
        Some("0123456789abcdef/fake/r0"),
    ));
    assert!(
        matches!(&how, Stopped::NotRunning(why) if why.contains("rebooted")),
        "{how:?}"
    );
    assert_eq!(stranger.alive().len(), 2, "nothing was signalled");
}

#[test]
fn a_process_without_the_recorded_marker_is_not_signalled() {
    // Same pid, start time and boot: only the marker tells it is not ours.
    let stranger = Stranger::start("sleep 600 & wait", &[], 2);
    let real = stranger.real();
    let how = stop(&record(
        real.pid,
        real.start_time,
        &real.boot_id,
        Some("0123456789abcdef/fake/r0"),
    ));
    assert!(
        matches!(&how, Stopped::NotRunning(why) if why.contains("PROVISION_INSTANCE")),
        "{how:?}"
    );
    assert_eq!(stranger.alive().len(), 2, "nothing was signalled");

    // Another runtime dir's marker is not ours either.
    let other = Stranger::start(
        "sleep 600 & wait",
        &[("PROVISION_INSTANCE", "fedcba9876543210/fake/r0")],
        2,
    );
    let real = other.real();
    let how = stop(&record(
        real.pid,
        real.start_time,
        &real.boot_id,
        Some("0123456789abcdef/fake/r0"),
    ));
    assert!(matches!(how, Stopped::NotRunning(_)), "{how:?}");
    assert_eq!(other.alive().len(), 2, "nothing was signalled");
}

#[test]
fn the_group_sweep_spares_members_without_the_marker() {
    let marker = "0123456789abcdef/fake/r0";
    // The leader and one helper carry the marker; a process that joined the group without it
    // (here: its environment cleared) is not provably ours.
    let stranger = Stranger::start(
        "trap '' TERM; sleep 600 & env -u PROVISION_INSTANCE sleep 601 & wait",
        &[("PROVISION_INSTANCE", marker)],
        3,
    );
    let real = stranger.real();
    // Once `env` has exec'd `sleep 601` and both sleeps show their environment.
    let mut unmarked = Vec::new();
    for _ in 0..500 {
        let members = group_members(real.pid);
        unmarked = members
            .iter()
            .copied()
            .filter(|&p| {
                std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| c.starts_with("sleep\x00601"))
            })
            .collect();
        let marked = members
            .iter()
            .filter(|&&p| identity::carries(p, marker))
            .count();
        if unmarked.len() == 1 && marked == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(unmarked.len(), 1);
    let how = stop(&record(
        real.pid,
        real.start_time,
        &real.boot_id,
        Some(marker),
    ));
    assert!(matches!(how, Stopped::Killed { .. }), "{how:?}");
    assert_eq!(
        stranger.alive(),
        unmarked,
        "only the unmarked member is left"
    );
}

#[test]
fn a_record_without_a_marker_stops_its_verified_leader_only() {
    // Written by a provision before markers: the leader is proven by pid, start time and boot;
    // its group is not swept (membership cannot be proven).
    let stranger = Stranger::start("sleep 600 & wait", &[], 2);
    let real = stranger.real();
    let helper: Vec<u32> = group_members(real.pid)
        .into_iter()
        .filter(|&p| p != real.pid)
        .collect();
    let how = stop(&record(real.pid, real.start_time, &real.boot_id, None));
    assert!(matches!(how, Stopped::Terminated { .. }), "{how:?}");
    assert_eq!(
        stranger.alive(),
        helper,
        "the leader went, the helper was not signalled"
    );
}

#[test]
fn pids_0_and_1_are_never_a_server() {
    for pid in [0, 1] {
        let o = record(pid, 1, "", None);
        assert_eq!(ServerProcess::from_outputs(&o), None, "pid {pid}");
    }
    // A group id of 0 or 1 neither.
    let o = spawn_record(
        ServerIdentity {
            pid: 4242,
            pgid: 1,
            start_time: 1,
            boot_id: String::new(),
            instance: None,
        },
        "",
    );
    assert_eq!(ServerProcess::from_outputs(&o), None);
}

#[test]
fn a_pid_file_naming_pid_1_is_ignored_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("x.pid");
    let log = dir.path().join("x.log");
    std::fs::write(&log, "").unwrap();
    for bad in ["1", "0", "-1"] {
        std::fs::write(&pid_file, bad).unwrap();
        let found = process::find_by_pid_file(&pid_file, &log, "x/p/r0");
        let warning = found.expect_err(bad);
        assert!(
            warning.contains(&pid_file.display().to_string()) && warning.contains("ignored"),
            "{warning}"
        );
    }
}

#[test]
fn the_server_carries_the_marker_and_the_record_names_it() {
    let mut rig = Rig::new(&Pool::default());
    rig.up(0).unwrap();
    let server = rig.server(0);
    let instance = rig
        .spawned(0)
        .server
        .instance
        .expect("the marker is recorded");
    assert!(instance.ends_with("/fake/r0"), "{instance}");
    let environ = std::fs::read(format!("/proc/{}/environ", server.pid)).unwrap();
    let wanted = format!("PROVISION_INSTANCE={instance}");
    assert!(
        environ.split(|&b| b == 0).any(|e| e == wanted.as_bytes()),
        "the server's environment holds {wanted}"
    );
    assert!(ProcStat::read(server.pid).is_some());
}

#[test]
fn a_server_whose_state_and_pid_file_are_gone_is_found_by_its_marker() {
    let mut rig = Rig::new(&Pool::default());
    rig.up(0).unwrap();
    let old = rig.server(0);
    // An apply killed at the wrong moment, or a clumsy operator: no record, no pid file.
    std::fs::remove_file(&rig.file.path).unwrap();
    std::fs::remove_file(rig.runtime().join("run/fake-r0.pid")).unwrap();
    rig.state = State::default();

    // apply starts the replica again: the previous server goes first.
    rig.up(0).unwrap();
    assert_gone(&old);
    let new = rig.server(0);
    assert_ne!(new.pid, old.pid);

    // down, with no state at all, finds it too.
    std::fs::remove_file(&rig.file.path).unwrap();
    std::fs::remove_file(rig.runtime().join("run/fake-r0.pid")).unwrap();
    rig.state = State::default();
    let mut empty = State::default();
    let report = spawn::down(
        &rig.file,
        &mut empty,
        None,
        Duration::from_millis(300),
        Some(&rig.ws.plan.roots),
    )
    .unwrap();
    assert_gone(&new);
    assert!(
        report
            .stopped
            .iter()
            .any(|s| s.step == "spawn:fake/r0" && s.what.contains(&new.pid.to_string())),
        "{report:?}"
    );
}

#[test]
fn down_by_marker_leaves_other_runtime_dirs_and_other_pools_alone() {
    let mut a = Rig::new(&Pool::default());
    let mut b = Rig::new(&Pool::default());
    a.up(0).unwrap();
    b.up(0).unwrap();
    let (sa, sb) = (a.server(0), b.server(0));
    std::fs::remove_file(&a.file.path).unwrap();
    a.state = State::default();
    // Another pool of the same runtime dir is not this pool.
    let report = spawn::down(
        &a.file,
        &mut State::default(),
        Some("other"),
        Duration::from_millis(300),
        Some(&a.ws.plan.roots),
    )
    .unwrap();
    assert!(report.stopped.is_empty(), "{report:?}");
    assert!(sa.is_running());
    let report = spawn::down(
        &a.file,
        &mut State::default(),
        None,
        Duration::from_millis(300),
        Some(&a.ws.plan.roots),
    )
    .unwrap();
    let servers = report
        .stopped
        .iter()
        .filter(|s| s.step.starts_with("spawn:"));
    assert_eq!(servers.count(), 1, "{report:?}");
    assert_gone(&sa);
    assert!(
        sb.is_running(),
        "the other runtime dir's server is untouched"
    );
}

#[test]
fn down_by_marker_removes_the_handoff_of_the_server_it_stopped_and_no_other() {
    let mut rig = Rig::new(&Pool::default());
    rig.up(0).unwrap();
    let server = rig.server(0);
    let handoff = rig.handoff_file(0);
    assert!(handoff.is_file());
    // Beside it: a handoff of this replica naming another pid, and a file of someone else's.
    let engines = handoff.parent().unwrap().to_path_buf();
    let text = std::fs::read_to_string(&handoff).unwrap();
    let mut other: serde_json::Value = serde_json::from_str(&text).unwrap();
    other["pid"] = json!(server.pid + 1);
    let other_pid = engines.join("copy-other-pid.json");
    std::fs::write(&other_pid, other.to_string()).unwrap();
    let foreign = engines.join("notes.json");
    std::fs::write(&foreign, text.replace("\"provision\"", "\"someone\"")).unwrap();
    // The state and pid file are gone: down finds the server by its marker only.
    std::fs::remove_file(&rig.file.path).unwrap();
    std::fs::remove_file(rig.runtime().join("run/fake-r0.pid")).unwrap();
    rig.state = State::default();
    let report = spawn::down(
        &rig.file,
        &mut State::default(),
        None,
        Duration::from_millis(300),
        Some(&rig.ws.plan.roots),
    )
    .unwrap();
    assert_gone(&server);
    assert!(
        !handoff.exists(),
        "a handoff naming a stopped server is left behind: {report:?}"
    );
    assert!(
        report
            .stopped
            .iter()
            .any(|s| s.step == "handoff:fake/r0" && s.what.contains("removed")),
        "{report:?}"
    );
    assert!(other_pid.is_file() && foreign.is_file(), "{report:?}");
}
