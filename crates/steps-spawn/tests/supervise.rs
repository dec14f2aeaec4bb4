//! Supervision against real processes: a replica that crashes after it was ready loses its
//! handoff at once, is restarted with exponential backoff, gets its handoff back, and everything
//! stops when supervision is cancelled.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{assert_gone, Pool, Rig};
use provision_executor::{Cancel, StepStatus};
use provision_steps_spawn::{supervise, SuperviseEvent, SuperviseOptions};

fn opts(base_ms: u64) -> SuperviseOptions {
    SuperviseOptions {
        backoff_base: Duration::from_millis(base_ms),
        backoff_cap: Duration::from_millis(base_ms * 4),
        reset_after: Duration::from_secs(60),
        poll: Duration::from_millis(20),
        grace: Duration::from_secs(2),
    }
}

#[test]
fn a_crashed_replica_loses_its_handoff_is_restarted_and_all_stop_on_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let once = dir.path().join("crashed-once");
    let once = once.display().to_string();
    let mut rig = Rig::new(&Pool {
        replicas: 2,
        env: &[
            ("FAKE_CRASH_AFTER_READY_MS", "300"),
            ("FAKE_CRASH_ONCE_FILE", &once),
        ],
        ..Pool::default()
    });
    rig.up(0).unwrap();
    // r1 must not crash: the once-file exists by now, since r0 crashes first… unless r1 gets
    // there first, so start r1 only after r0 wrote it.
    while !std::path::Path::new(&once).exists() {
        std::thread::sleep(Duration::from_millis(5));
    }
    rig.up(1).unwrap();
    let first0 = rig.server(0);
    let s1 = rig.server(1);
    let h0 = rig.handoff_file(0);
    let file = rig.file.clone();
    let cancel = Cancel::new();
    let seen: Arc<Mutex<Vec<SuperviseEvent>>> = Arc::default();
    let handoff_gone_when_down = Arc::new(Mutex::new(None));
    let report = {
        let cancel2 = cancel.clone();
        let seen2 = Arc::clone(&seen);
        let gone = Arc::clone(&handoff_gone_when_down);
        let h0b = h0.clone();
        let mut restart = |k: &(String, u32)| {
            rig.reload();
            rig.up(k.1).map_err(|e| e.message)
        };
        let mut events = |e: SuperviseEvent| {
            if matches!(e, SuperviseEvent::Down { .. }) {
                *gone.lock().unwrap() = Some(!h0b.exists());
            }
            if matches!(e, SuperviseEvent::Up { .. }) {
                cancel2.cancel();
            }
            seen2.lock().unwrap().push(e);
        };
        supervise(
            &file,
            &[("fake".into(), 0), ("fake".into(), 1)],
            &opts(50),
            &cancel,
            &mut restart,
            &mut events,
        )
        .unwrap()
    };
    let seen = seen.lock().unwrap().clone();
    let names: Vec<&str> = seen
        .iter()
        .map(|e| match e {
            SuperviseEvent::Down { replica, .. } => {
                assert_eq!(replica, "fake/r0");
                "down"
            }
            SuperviseEvent::Restarting { .. } => "restarting",
            SuperviseEvent::Up { .. } => "up",
            SuperviseEvent::RestartFailed { .. } => "failed",
            SuperviseEvent::Stopping => "stopping",
        })
        .collect();
    assert_eq!(names, ["down", "restarting", "up", "stopping"], "{seen:?}");
    let SuperviseEvent::Down { why, .. } = &seen[0] else {
        unreachable!()
    };
    assert!(
        why.contains("exited with signal 6 (SIGABRT); restarting in 50 ms"),
        "{why}"
    );
    assert_eq!(
        *handoff_gone_when_down.lock().unwrap(),
        Some(true),
        "the handoff is removed as soon as the crash is seen"
    );
    assert_gone(&first0);
    // After cancel: everything stopped, no handoff left, state says so.
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_gone(&s1);
    let saved = rig.file.load().unwrap();
    let second0 = provision_steps_spawn::process::ServerProcess::of_record(
        rig.state.steps["spawn:fake/r0"].outputs.as_ref(),
    );
    let second0 = second0.expect("the restart recorded a server");
    assert_ne!(second0.pid, first0.pid, "restarted: a new process");
    assert_gone(&second0);
    assert_eq!(saved.steps["spawn:fake/r0"].status, StepStatus::Cancelled);
    assert!(!h0.exists() && !rig.handoff_file(1).exists());
}

#[test]
fn a_crash_loop_backs_off_exponentially_up_to_the_cap() {
    let mut rig = Rig::new(&Pool {
        // Long enough after ready for the probe and the handoff on a loaded machine.
        env: &[("FAKE_CRASH_AFTER_READY_MS", "300")],
        ..Pool::default()
    });
    rig.up(0).unwrap();
    let file = rig.file.clone();
    let cancel = Cancel::new();
    let mut delays = Vec::new();
    let mut pids = Vec::new();
    {
        let cancel2 = cancel.clone();
        let pids_ref = &mut pids;
        let mut restart = |k: &(String, u32)| {
            rig.reload();
            let r = rig.up(k.1).map_err(|e| e.message);
            pids_ref.push(rig.server(0));
            r
        };
        let mut events = |e: SuperviseEvent| {
            if let SuperviseEvent::Down { why, .. } = &e {
                let ms: String = why
                    .rsplit("restarting in ")
                    .next()
                    .unwrap()
                    .chars()
                    .take_while(|c| c.is_ascii_digit())
                    .collect();
                delays.push(ms.parse::<u64>().unwrap());
                if delays.len() == 5 {
                    cancel2.cancel();
                }
            }
        };
        supervise(
            &file,
            &[("fake".into(), 0)],
            &opts(40),
            &cancel,
            &mut restart,
            &mut events,
        )
        .unwrap();
    }
    assert_eq!(delays, [40, 80, 160, 160, 160]);
    for p in &pids {
        assert_gone(p);
    }
}

#[test]
fn a_supervisor_whose_lock_file_is_removed_stops_touching_anything() {
    let mut rig = Rig::new(&Pool::default());
    rig.up(0).unwrap();
    let server = rig.server(0);
    let handoff = rig.handoff_file(0);
    let lock = provision_executor::acquire(&rig.file.path, false).unwrap();
    let file = rig.file.clone().held_by(&lock);
    let before = std::fs::read(&file.path).unwrap();
    // Another provision may hold the state from now on.
    std::fs::remove_file(&lock.path).unwrap();
    let cancel = Cancel::new();
    // Only for a supervisor that does not notice: it is stopped after a while, and fails.
    let stopper = {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(2));
            cancel.cancel();
        })
    };
    let result = supervise(
        &file,
        &[("fake".into(), 0)],
        &opts(50),
        &cancel,
        &mut |_| Err("not expected".into()),
        &mut |_| {},
    );
    cancel.cancel();
    stopper.join().unwrap();
    assert!(
        matches!(result, Err(provision_executor::StateError::LockLost(_))),
        "{result:?}"
    );
    assert!(
        server.is_running(),
        "the server is left to the state's new holder"
    );
    assert!(handoff.exists(), "its handoff too");
    assert_eq!(std::fs::read(&file.path).unwrap(), before, "no write");
}

#[test]
fn a_replica_whose_port_another_process_took_is_restarted_and_never_handed_that_listener() {
    let mut rig = Rig::new(&Pool {
        // Ready, handed off, then its listener goes and someone else takes the port.
        env: &[("FAKE_CLOSE_LISTENER_AFTER_READY_MS", "300")],
        ..Pool::default()
    });
    rig.up(0).unwrap();
    let first = rig.server(0);
    let port = rig.spawned(0).port;
    let handoff = rig.handoff_file(0);
    assert!(handoff.exists());
    // The foreign listener: taken as soon as the server let the port go.
    let started = std::time::Instant::now();
    let foreign = loop {
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            break l;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the server never let port {port} go"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let file = rig.file.clone();
    let cancel = Cancel::new();
    // Only for a supervisor that never notices: stopped after a while, and the test fails.
    let stopper = {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            let since = std::time::Instant::now();
            while !cancel.is_cancelled() && since.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(20));
            }
            cancel.cancel();
        })
    };
    let mut seen = Vec::new();
    let mut handoff_gone_when_down = None;
    let mut handed_off_port = None;
    {
        let cancel2 = cancel.clone();
        let mut restart = |k: &(String, u32)| {
            rig.reload();
            let r = rig.up(k.1).map_err(|e| e.message);
            handed_off_port = std::fs::read_to_string(&handoff)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v["url"].as_str().map(str::to_string));
            r
        };
        let mut events = |e: SuperviseEvent| {
            if matches!(e, SuperviseEvent::Down { .. }) {
                handoff_gone_when_down = Some(!handoff.exists());
            }
            if matches!(e, SuperviseEvent::Up { .. }) {
                cancel2.cancel();
            }
            seen.push(e);
        };
        supervise(
            &file,
            &[("fake".into(), 0)],
            &opts(50),
            &cancel,
            &mut restart,
            &mut events,
        )
        .unwrap();
    }
    stopper.join().unwrap();
    drop(foreign);
    let Some(SuperviseEvent::Down { why, .. }) = seen.first() else {
        panic!("the replica was kept with another process on its port: {seen:?}");
    };
    assert!(why.contains(&format!("port {port}")), "{why}");
    assert_eq!(
        handoff_gone_when_down,
        Some(true),
        "its handoff went at once"
    );
    assert!(
        matches!(seen.get(2), Some(SuperviseEvent::Up { .. })),
        "{seen:?}"
    );
    // The server that lost its port was stopped; the new one serves elsewhere.
    assert_gone(&first);
    let url = handed_off_port.expect("the restart wrote a handoff");
    assert!(
        !url.ends_with(&format!(":{port}")),
        "{url} is the foreign listener's"
    );
}
