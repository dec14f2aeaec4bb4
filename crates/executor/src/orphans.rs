//! Commands left running by an apply that was killed (`kill -9`): a step's command runs in its
//! own process group, so it outlives a killed provision. While it runs, its process group is
//! recorded beside the step's log (`<step>.log.pgid`: pid and start time); the next apply,
//! holding the lock (so the old one is surely dead), kills what is still recorded. The start
//! time guards against a recycled pid.

use std::path::{Path, PathBuf};

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

/// Record that `pid` (a process-group leader) runs for the step whose log is `log`.
pub fn register(log: &Path, pid: u32) {
    if let Some(start) = start_time(pid) {
        // Written anew (0600, a link at the name replaced, never followed).
        let _ = crate::state::write_atomic(
            &marker(log),
            format!("{pid} {start}").as_bytes(),
            crate::state::Durability::NoSync,
        );
    }
}

/// The command of the step whose log is `log` finished.
pub fn unregister(log: &Path) {
    let _ = std::fs::remove_file(marker(log));
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
        let mut parts = text.split_whitespace().map(str::parse::<u64>);
        if let (Some(Ok(pid)), Some(Ok(start))) = (parts.next(), parts.next()) {
            if let Ok(pid32) = u32::try_from(pid) {
                if start_time(pid32) == Some(start) {
                    // SIGTERM first: ninja then stops the jobs it runs in groups of their own.
                    // SAFETY: kill(2) on a process group we started; no memory is shared.
                    unsafe {
                        libc::kill(-(pid32 as i32), libc::SIGTERM);
                    }
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
                    while running(pid32) && std::time::Instant::now() < deadline {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    // SAFETY: as above.
                    unsafe {
                        libc::kill(-(pid32 as i32), libc::SIGKILL);
                    }
                    killed.push(format!("{pid} ({})", path.display()));
                }
            }
        }
        let _ = std::fs::remove_file(&path);
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn a_recorded_group_is_killed_and_a_recycled_pid_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("step.log");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        register(&log, child.id());
        assert!(marker(&log).exists());
        // A stale marker whose pid now belongs to another process (start time differs).
        std::fs::write(
            dir.path().join("other.log.pgid"),
            format!("{} 1\n", std::process::id()),
        )
        .unwrap();
        let killed = reap(dir.path());
        assert_eq!(killed.len(), 1, "{killed:?}");
        let status = child.wait().unwrap();
        assert!(!status.success());
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "markers removed"
        );
        unregister(&log);
    }
}
