//! The marker provision puts in the environment of every server it starts:
//! `PROVISION_INSTANCE=<runtime id>/<pool>/r<N>`, where the runtime id is derived from the
//! resolved runtime directory. Read back from `/proc/<pid>/environ` (readable only by the
//! process's owner and root), it proves a process is a replica provision started for this
//! runtime dir (together with pid, start time and boot), lets a stop sweep only the group
//! members that carry it, and finds servers whose state and pid files are gone.

use std::os::unix::fs::MetadataExt;

use sha2::{Digest, Sha256};

/// The environment variable that carries the marker.
pub const MARKER_VAR: &str = "PROVISION_INSTANCE";

/// The largest `environ` read: a server's environment is small; a larger one is not ours.
const ENVIRON_CAP: u64 = 1 << 20;

/// The id of a runtime dir: 16 hex digits of the sha256 of its resolved path (so
/// `./.runtime` and its absolute or symlinked spelling agree).
pub fn runtime_id(runtime: &str) -> String {
    let resolved = std::fs::canonicalize(runtime)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| runtime.to_string());
    let digest = Sha256::digest(resolved.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The marker of replica `replica` (`pool/rN`) started from runtime dir `runtime`.
pub fn instance_id(runtime: &str, replica: &str) -> String {
    format!("{}/{replica}", runtime_id(runtime))
}

/// The marker in the environment of process `pid` (`None`: none, unreadable, or gone).
pub fn marker_of(pid: u32) -> Option<String> {
    use std::io::Read;
    let file = std::fs::File::open(format!("/proc/{pid}/environ")).ok()?;
    let mut bytes = Vec::new();
    file.take(ENVIRON_CAP).read_to_end(&mut bytes).ok()?;
    let prefix = format!("{MARKER_VAR}=");
    bytes
        .split(|&b| b == 0)
        .find_map(|e| e.strip_prefix(prefix.as_bytes()))
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_string)
}

/// Does process `pid` carry exactly `marker`?
pub fn carries(pid: u32, marker: &str) -> bool {
    marker_of(pid).is_some_and(|m| m == marker)
}

/// Wait until process `pid` shows `marker` (bounded by `limit`): the parent of a fresh process
/// resumes while `execve` is still filling in the new environment, which reads empty until then.
/// `false` when it never does (it exited, or the environment is not readable).
pub fn await_marker(pid: u32, marker: &str, limit: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if carries(pid, marker) {
            return true;
        }
        let alive = crate::process::ProcStat::read(pid).is_some_and(|s| s.alive());
        if !alive || std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Running processes of this user whose marker says they belong to runtime dir `runtime`
/// (and to `pool`, when given): `(pid, marker)`, group leaders first.
pub fn find_by_marker(runtime: &str, pool: Option<&str>) -> Vec<(u32, String)> {
    let prefix = match pool {
        Some(p) => format!("{}/{p}/r", runtime_id(runtime)),
        None => format!("{}/", runtime_id(runtime)),
    };
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    // SAFETY: geteuid(2) cannot fail.
    let me = unsafe { libc::geteuid() };
    let mut found: Vec<(bool, u32, String)> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid > 1 && pid != std::process::id())
        // Only this user's processes: provision never claims another user's.
        .filter(|&pid| std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == me))
        .filter_map(|pid| {
            let marker = marker_of(pid)?;
            let rest = marker.strip_prefix(&prefix)?;
            if pool.is_some() && (rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit())) {
                return None;
            }
            let stat = crate::process::ProcStat::read(pid).filter(|s| s.alive())?;
            Some((stat.pgrp != pid, pid, marker))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, pid, m)| (pid, m)).collect()
}

/// The replica name (`pool/rN`) in a marker.
pub fn replica_of(marker: &str) -> &str {
    marker.split_once('/').map_or(marker, |(_, r)| r)
}

/// The pool in a replica name (`pool/rN`).
pub fn pool_of(replica: &str) -> &str {
    replica.rsplit_once('/').map_or(replica, |(p, _)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_follows_the_resolved_runtime_dir() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("rt");
        std::fs::create_dir(&real).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let a = instance_id(&real.display().to_string(), "p/r0");
        assert_eq!(a, instance_id(&link.display().to_string(), "p/r0"));
        assert_ne!(a, instance_id(&dir.path().display().to_string(), "p/r0"));
        assert_eq!(replica_of(&a), "p/r0");
        assert_eq!(pool_of(replica_of(&a)), "p");
        assert_eq!(a.len(), 16 + 1 + 4);
    }

    #[test]
    fn the_marker_is_read_from_the_environment() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env(MARKER_VAR, "abc/p/r1")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(await_marker(
            pid,
            "abc/p/r1",
            std::time::Duration::from_secs(5)
        ));
        assert_eq!(marker_of(pid).as_deref(), Some("abc/p/r1"));
        assert!(carries(pid, "abc/p/r1") && !carries(pid, "abc/p/r2"));
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(marker_of(pid), None, "gone");
    }
}
