//! The marker provision puts in the environment of every server it starts:
//! `PROVISION_INSTANCE=<runtime id>/<pool>/r<N>`, where the runtime id is derived from the
//! resolved runtime directory and the resolved state file (two projects sharing a runtime dir
//! with their own `--state` have different ids). Read back from `/proc/<pid>/environ` (readable
//! only by the process's owner and root), it proves a process is a replica provision started
//! for this runtime dir and state file (together with pid, start time and boot), lets a stop
//! sweep only the group members that carry it, and finds servers whose state and pid files are
//! gone.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use sha2::{Digest, Sha256};

/// The environment variable that carries the marker.
pub const MARKER_VAR: &str = "PROVISION_INSTANCE";

/// The largest `environ` read: a server's environment is small; a larger one is not ours.
const ENVIRON_CAP: u64 = 1 << 20;

/// The state file this process works on, when the command said (see [`use_state_file`]).
static STATE_FILE: RwLock<Option<PathBuf>> = RwLock::new(None);

/// Say which state file this process's commands work on (`apply`, `down`, `supervise` do, once,
/// before any marker is made or looked for): every runtime id from then on includes it. Unset,
/// the default `<runtime>/state.json` is meant.
pub fn use_state_file(state: &Path) {
    *STATE_FILE.write().unwrap_or_else(|e| e.into_inner()) = Some(state.to_path_buf());
}

/// `path` resolved: its directory's links and `..` resolved, or as given when that fails.
fn resolved(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match (std::fs::canonicalize(dir), path.file_name()) {
        (Ok(d), Some(name)) => d.join(name),
        _ => std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
    }
}

/// The id of a runtime dir (and the state file set by [`use_state_file`]): see
/// [`runtime_id_with`].
pub fn runtime_id(runtime: &str) -> String {
    let state = STATE_FILE.read().unwrap_or_else(|e| e.into_inner()).clone();
    runtime_id_with(runtime, state.as_deref())
}

/// 16 hex digits of the sha256 of the resolved runtime dir (so `./.runtime` and its absolute or
/// symlinked spelling agree), and of the resolved `state` file unless that is the default
/// `<runtime>/state.json` (so servers started before the state counted keep their id).
pub fn runtime_id_with(runtime: &str, state: Option<&Path>) -> String {
    let runtime = resolved(Path::new(runtime));
    let mut text = runtime.display().to_string();
    if let Some(state) = state.map(resolved) {
        if state != runtime.join("state.json") {
            text.push_str("\nstate=");
            text.push_str(&state.display().to_string());
        }
    }
    let digest = Sha256::digest(text.as_bytes());
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
        Some(p) => format!(
            "{}/{}",
            runtime_id(runtime),
            provision_plan::ReplicaId::prefix_of_pool(p)
        ),
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
        assert_eq!(
            provision_plan::ReplicaId::parse(replica_of(&a)),
            Some(provision_plan::ReplicaId::new("p", 0))
        );
        assert_eq!(a.len(), 16 + 1 + 4);
    }

    #[test]
    fn each_state_file_of_a_runtime_dir_has_its_own_id() {
        let dir = tempfile::tempdir().unwrap();
        let rt = dir.path().join("rt");
        std::fs::create_dir(&rt).unwrap();
        let runtime = rt.display().to_string();
        let plain = runtime_id_with(&runtime, None);
        // The default state file is the runtime dir's id as before, in any spelling.
        assert_eq!(
            plain,
            runtime_id_with(&runtime, Some(&rt.join("state.json")))
        );
        assert_eq!(
            plain,
            runtime_id_with(&runtime, Some(&dir.path().join("rt/../rt/state.json")))
        );
        let a = runtime_id_with(&runtime, Some(&dir.path().join("a.json")));
        let b = runtime_id_with(&runtime, Some(&dir.path().join("b.json")));
        assert!(a != b && a != plain && b != plain);
        assert_eq!(a, runtime_id_with(&runtime, Some(&rt.join("../a.json"))));
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
