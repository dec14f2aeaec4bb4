//! One apply per state file: an advisory file lock (`flock`) on `<state>.lock`, held for the
//! whole apply. The kernel drops the lock when its holder dies, so a lock left by a killed
//! apply is taken over safely; the holder (pid, host, start time) is written into the file so a
//! second apply can name it.
//!
//! The lock file is provision's own: opened without following a symbolic link, created 0600,
//! and never truncated unless it is empty or holds a provision holder record, so a `--state`
//! whose `.lock` neighbour is someone else's file (`--state Cargo` next to `Cargo.lock`) is
//! refused and that file left as it was.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::state::now_rfc3339;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    pub started_at: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} on {} since {}",
            self.pid, self.host, self.started_at
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another apply holds the lock {path}: {}", holder.as_ref().map_or("holder unknown".to_string(), |h| h.to_string()))]
    Held {
        path: PathBuf,
        holder: Option<Holder>,
    },
    #[error("{path} is not a provision lock file ({why}); nothing was changed")]
    NotOurs { path: PathBuf, why: String },
    #[error("cannot lock {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The held lock; released when dropped.
#[derive(Debug)]
pub struct ApplyLock {
    file: File,
    pub path: PathBuf,
    /// The holder recorded by an apply that died without releasing the lock.
    pub took_over: Option<Holder>,
}

pub fn lock_path(state: &Path) -> PathBuf {
    let mut name = state
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".lock");
    state.with_file_name(name)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into())
}

/// The most a holder record takes, with room to spare.
const MAX_HOLDER: u64 = 4096;

fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(MAX_HOLDER).read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

/// Whether the (locked) file is provision's: empty, or one holder record.
fn check_ours(file: &mut File) -> Result<(), String> {
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len == 0 {
        return Ok(());
    }
    if len > MAX_HOLDER || read_holder(file).is_none() {
        return Err("it is neither empty nor a provision lock holder record".into());
    }
    Ok(())
}

/// Take the lock for `state`. With `wait`, block until the holder is done; otherwise fail at
/// once naming the holder.
pub fn acquire(state: &Path, wait: bool) -> Result<ApplyLock, LockError> {
    let path = lock_path(state);
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    crate::private_file::create_parent(&path).map_err(io)?;
    let mut file = match crate::private_file::open_rw(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(io(e)),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return Err(io(e)),
        Err(e) => {
            return Err(LockError::NotOurs {
                path,
                why: e.to_string(),
            })
        }
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            if !wait {
                let holder = read_holder(&mut file);
                return Err(LockError::Held { path, holder });
            }
            file.lock().map_err(io)?;
        }
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    // We hold it: nobody writes it now. Only provision's own lock file is ever truncated.
    if let Err(why) = check_ours(&mut file) {
        return Err(LockError::NotOurs { path, why });
    }
    // A holder still written in the file died without cleaning up.
    let took_over = read_holder(&mut file);
    let me = Holder {
        pid: std::process::id(),
        host: hostname(),
        started_at: now_rfc3339(),
    };
    file.set_len(0).map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.write_all(serde_json::to_string(&me).expect("serialisable").as_bytes())
        .map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(ApplyLock {
        file,
        path,
        took_over,
    })
}

impl Drop for ApplyLock {
    fn drop(&mut self) {
        // Clear the holder before the kernel releases the lock with the file.
        let _ = self.file.set_len(0);
        let _ = self.file.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_fails_naming_the_holder_and_a_dead_holder_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.json");
        let first = acquire(&state, false).unwrap();
        assert!(first.took_over.is_none());
        let err = acquire(&state, false).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.contains(&format!("pid {}", std::process::id())),
            "{shown}"
        );
        drop(first);
        // A holder recorded by a process that is gone: the lock is free, and says so.
        std::fs::write(
            lock_path(&state),
            r#"{"pid":999999,"host":"h","started_at":"t"}"#,
        )
        .unwrap();
        let second = acquire(&state, false).unwrap();
        assert_eq!(second.took_over.as_ref().map(|h| h.pid), Some(999999));
    }
}
