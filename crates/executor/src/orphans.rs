//! Commands left running by an apply that was killed (`kill -9`): a step's command runs in its
//! own process group, so it outlives a killed provision. While it runs, its process group is
//! recorded beside the step's log (`<step>.log.pgid`: pid, start time and boot id); the next
//! apply, holding the lock (so the old one is surely dead), kills what is still recorded.
//!
//! Only a leader proven to be the recorded process is signalled: a pidfd is opened on the pid,
//! then its start time and the boot are checked (a recycled pid, or a record from before a
//! reboot, is left alone), then the group it leads is signalled through that pidfd
//! (`PIDFD_SIGNAL_PROCESS_GROUP`, which names the group by the kernel's object, never by a
//! number that could be reused); on kernels before 6.9 only the leader is signalled. A record
//! of pid 0 or 1, or one without a boot id, is never acted on.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::pidfd::{valid_pid, Pidfd};

fn marker(log: &Path) -> PathBuf {
    let mut name = log
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".pgid");
    log.with_file_name(name)
}

/// The start time of a process (clock ticks since boot), from `/proc/<pid>/stat`.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The process exists and has not exited (a zombie has).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 1..].trim_start().chars().next()))
        .flatten()
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// This boot's id: start times are only comparable within one boot.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Record that `pid` (a process-group leader) runs for the step whose log is `log`.
pub fn register(log: &Path, pid: u32) {
    if let (Some(start), Some(boot)) = (start_time(pid), boot_id()) {
        // Written anew (0600, a link at the name replaced, never followed).
        let _ = crate::state::write_atomic(
            &marker(log),
            format!("{pid} {start} {boot}\n").as_bytes(),
            crate::state::Durability::NoSync,
        );
    }
}

/// The command of the step whose log is `log` finished.
pub fn unregister(log: &Path) {
    let _ = std::fs::remove_file(marker(log));
}

/// A recorded group leader: pid, start time, boot id.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    pid: u32,
    start: u64,
    boot: String,
}

/// `pid start boot`; `None` for anything else, a pid of 0 or 1 included.
fn parse(text: &str) -> Option<Record> {
    let mut parts = text.split_whitespace();
    let pid: u64 = parts.next()?.parse().ok()?;
    let start: u64 = parts.next()?.parse().ok()?;
    let boot = parts.next()?.to_string();
    if !valid_pid(pid) || parts.next().is_some() {
        return None;
    }
    Some(Record {
        pid: pid as u32,
        start,
        boot,
    })
}

/// Kill every process group recorded under `dir` whose leader is still the same process.
/// Returns what was killed, as `pid (file)`.
pub fn reap(dir: &Path) -> Vec<String> {
    let mut killed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return killed;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("pgid") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if let Some(record) = parse(&text) {
            if stop_group(&record) {
                killed.push(format!("{} ({})", record.pid, path.display()));
            }
        }
        let _ = std::fs::remove_file(&path);
    }
    killed
}

/// Stop the group `record` names, when its leader is proven to be the recorded process.
fn stop_group(record: &Record) -> bool {
    // The handle first, then the check: the check speaks for the process the handle signals.
    let Ok(leader) = Pidfd::open(record.pid) else {
        return false;
    };
    let same = boot_id().as_deref() == Some(record.boot.as_str())
        && start_time(record.pid) == Some(record.start)
        && running(record.pid);
    if !same {
        return false;
    }
    // SIGTERM first: ninja then stops the jobs it runs in groups of their own.
    signal(&leader, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(2);
    while running(record.pid)
        && start_time(record.pid) == Some(record.start)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    signal(&leader, libc::SIGKILL);
    true
}

/// Signal the group the leader leads, through its pidfd; only the leader on older kernels.
fn signal(leader: &Pidfd, sig: i32) {
    if let Err(e) = leader.signal_group(sig) {
        if e.kind() == std::io::ErrorKind::Unsupported {
            let _ = leader.signal(sig);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    /// A process group this test starts: `sh` leading it, a `sleep` in it.
    fn group() -> std::process::Child {
        let child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        for _ in 0..200 {
            if members(child.id()) >= 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(members(child.id()), 2);
        child
    }

    /// Running processes in process group `pgid`.
    fn members(pgid: u32) -> usize {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                    let rest = &s[s.rfind(')').unwrap() + 1..];
                    let f: Vec<&str> = rest.split_whitespace().collect();
                    f[2] == pgid.to_string() && f[0] != "Z"
                })
            })
            .count()
    }

    fn settle() {
        std::thread::sleep(Duration::from_millis(100));
    }

    #[test]
    fn a_recorded_group_is_killed_and_a_recycled_pid_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("step.log");
        let mut child = group();
        let pgid = child.id();
        register(&log, pgid);
        assert!(marker(&log).exists());
        // A stale marker whose pid now belongs to another process (start time differs).
        std::fs::write(
            dir.path().join("other.log.pgid"),
            format!("{} 1 {}\n", std::process::id(), boot_id().unwrap()),
        )
        .unwrap();
        let killed = reap(dir.path());
        assert_eq!(killed.len(), 1, "{killed:?}");
        let status = child.wait().unwrap();
        assert!(!status.success());
        settle();
        assert_eq!(members(pgid), 0, "the helper in its group went too");
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "markers removed"
        );
        unregister(&log);
    }

    #[test]
    fn a_record_from_another_boot_or_without_one_signals_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = group();
        let pid = child.id();
        let start = start_time(pid).unwrap();
        // Same pid and start time, another boot: after a reboot, another process.
        std::fs::write(
            dir.path().join("a.log.pgid"),
            format!("{pid} {start} 00000000-0000-0000-0000-000000000000\n"),
        )
        .unwrap();
        // Written without a boot id: not provable.
        std::fs::write(dir.path().join("b.log.pgid"), format!("{pid} {start}\n")).unwrap();
        assert!(reap(dir.path()).is_empty());
        settle();
        assert_eq!(members(pid), 2, "nothing was signalled");
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
        let _ = child.kill();
        // SAFETY: kill(2) on the group this test started.
        unsafe {
            libc::kill(-(pid as i32), libc::SIGKILL);
        }
        let _ = child.wait();
    }

    #[test]
    fn pids_0_and_1_and_malformed_records_are_never_acted_on() {
        for bad in [
            "1 5 boot",
            "0 5 boot",
            "-1 5 boot",
            "4294967295 5 boot",
            "12 5",
            "12 x boot",
            "12 5 boot extra",
            "",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(
            parse("12 5 b\n"),
            Some(Record {
                pid: 12,
                start: 5,
                boot: "b".into()
            })
        );
    }
}
