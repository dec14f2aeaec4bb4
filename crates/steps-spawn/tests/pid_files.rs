//! `down` removes a pid file only while it is one provision wrote for the recorded server: a
//! regular file holding that pid. A state file naming another file as a replica's `pid_file`
//! (edited by hand, copied from elsewhere, the file replaced since) never makes it delete that
//! file.

mod common;

use std::time::Duration;

use common::{spawn_record, Pool, Rig};
use provision_plan::outputs::ServerIdentity;
use provision_steps_spawn::down::stop_server;

/// A spawn record of process `pid` with its pid file at `pid_file`.
fn record(pid: u32, pid_file: &std::path::Path) -> provision_plan::StepOutputs {
    let server = ServerIdentity {
        pid,
        pgid: pid,
        start_time: 1,
        boot_id: String::new(),
        instance: None,
    };
    spawn_record(server, &pid_file.display().to_string())
}

#[test]
fn a_recorded_pid_file_that_is_not_the_servers_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let precious = dir.path().join("precious.txt");
    let other_pid = dir.path().join("other.pid");
    let target = dir.path().join("target.pid");
    let link = dir.path().join("link.pid");
    std::fs::write(&precious, "someone's data\n").unwrap();
    std::fs::write(&other_pid, "4242\n").unwrap();
    std::fs::write(&target, "4243\n").unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    // A pid no process has (above the kernel's pid_max): nothing is signalled.
    let dead = 4_194_304 + 7;
    for path in [&precious, &other_pid, &link] {
        stop_server(&record(dead, path), Duration::from_millis(10)).unwrap();
        assert!(
            path.symlink_metadata().is_ok(),
            "{} was removed",
            path.display()
        );
    }
    // A record with no valid process (pid 0) names a pid file: kept too.
    stop_server(&record(0, &precious), Duration::from_millis(10)).unwrap();
    assert!(precious.is_file());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "4243\n");
}

#[test]
fn the_servers_own_pid_file_is_removed() {
    let mut rig = Rig::new(&Pool::default());
    rig.up(0).unwrap();
    let spawned = rig.spawned(0);
    let pid_file = std::path::PathBuf::from(&spawned.pid_file);
    assert!(pid_file.is_file());
    stop_server(&spawned.into(), Duration::from_secs(5)).unwrap();
    assert!(!pid_file.exists());
}
