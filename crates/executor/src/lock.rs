//! One apply per state file: an advisory file lock (`flock`) on `<state>.lock`, held for the
//! whole apply. The kernel drops the lock when its holder dies, so a lock left by a killed
//! apply is taken over safely; the holder (pid, host, start time) is written into the file so a
//! second apply can name it.
//!
//! The lock file is provision's own: opened without following a symbolic link, created 0600,
//! and never truncated unless it is empty or holds a provision holder record, so a `--state`
//! whose `.lock` neighbour is someone else's file (`--state Cargo` next to `Cargo.lock`) is
//! refused and that file left as it was.
//!
//! Removing or replacing the lock file under a running apply does not let a second one in: an
//! acquire checks after its `flock` that the path still names the file it locked (and tries
//! again when not), and refuses while a live process holds a `flock` on a removed file that had
//! this path (found through `/proc/locks` and that process's open files). The holder checks its
//! file too ([`ApplyLock::check`], before every state write): one that lost it stops.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::state::now_rfc3339;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    pub started_at: String,
    /// The lock file's absolute path when it was taken: a holder whose file was since renamed
    /// away is still found by it ([`crate::lock_holders`]). Absent in records of earlier
    /// versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
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
    #[error("another apply holds the lock {path}{}: {}",
        if *removed { " (through a lock file that was removed or renamed while it ran)" } else { "" },
        holder.as_ref().map_or("a provision that has not recorded itself yet".to_string(), |h| h.to_string()))]
    Held {
        path: PathBuf,
        holder: Option<Holder>,
        /// The holder locked a file that was since removed or replaced at `path`.
        removed: bool,
    },
    #[error("the lock file {path} was removed or replaced while this apply held it, so another apply may be running on the same state: stopped before writing anything more")]
    Lost { path: PathBuf },
    #[error("{path} is not a provision lock file ({why}); nothing was changed")]
    NotOurs { path: PathBuf, why: String },
    #[error("cannot lock {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl LockError {
    /// What to do about it.
    pub fn hint(&self) -> String {
        match self {
            LockError::Held { .. } => "wait for it to finish (apply --wait), or stop it first".into(),
            LockError::Lost { .. } => "do not remove lock files of a running apply; check that no other provision runs on this state, then run this command again".into(),
            LockError::NotOurs { path, .. } => format!(
                "provision never truncates a file it did not write: pass another --state (its lock file is the state path plus `.lock`), or, if {} is a leftover nobody needs, move it aside",
                path.display()
            ),
            LockError::Io { .. } => "check the path and its permissions, or pass another --state".into(),
        }
    }
}

/// Before anything is created for `state`: a lock file already at its lock path must be
/// provision's (empty, or a holder record), else [`LockError::NotOurs`]. A lock file held by a
/// running provision is left to [`acquire`] to report (its record may be half-written); a
/// missing one is fine. Reads only; creates nothing.
pub fn check_lock_file(state: &Path) -> Result<(), LockError> {
    let path = lock_path(state);
    let mut file = match crate::private_file::open_read(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(LockError::Io { path, source: e })
        }
        Err(e) => {
            return Err(LockError::NotOurs {
                path,
                why: e.to_string(),
            })
        }
    };
    match file.try_lock() {
        // Nobody writes it while we hold it: its content is what its last holder left.
        Ok(()) => check_ours(&mut file).map_err(|why| LockError::NotOurs { path, why }),
        Err(TryLockError::WouldBlock) => Ok(()),
        Err(TryLockError::Error(e)) => Err(LockError::Io { path, source: e }),
    }
}

/// The held lock; released when dropped.
#[derive(Debug)]
pub struct ApplyLock {
    file: File,
    pub path: PathBuf,
    /// The holder recorded by an apply that died without releasing the lock.
    pub took_over: Option<Holder>,
    guard: LockGuard,
}

/// What tells whether a held lock's file is still the one at its path: kept by the state file
/// ([`crate::StateFile::held_by`]) so that every write checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockGuard {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl LockGuard {
    /// `Ok` while `path` still names the locked file; [`LockError::Lost`] once it was removed or
    /// replaced (a second apply may then hold a lock on the new file).
    pub fn check(&self) -> Result<(), LockError> {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => Ok(()),
            _ => Err(LockError::Lost {
                path: self.path.clone(),
            }),
        }
    }
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

/// Whether the (locked) file is provision's: empty, released, or one holder record.
fn check_ours(file: &mut File) -> Result<(), String> {
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len == 0 || crate::lock_released::is_marker(file) {
        return Ok(());
    }
    if len > MAX_HOLDER || read_holder(file).is_none() {
        return Err("it is neither empty nor a provision lock holder record".into());
    }
    Ok(())
}

/// How often a lock that kept being replaced between its open and its `flock` is tried.
const ATTEMPTS: usize = 100;

/// Open `path` and `flock` it, as [`acquire`] says; returns the locked file, which `path` still
/// names.
fn lock_named(path: &Path, wait: bool) -> Result<File, LockError> {
    let io = |source| LockError::Io {
        path: path.to_path_buf(),
        source,
    };
    for _ in 0..ATTEMPTS {
        let mut file = match crate::private_file::open_rw(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(io(e)),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return Err(io(e)),
            Err(e) => {
                return Err(LockError::NotOurs {
                    path: path.to_path_buf(),
                    why: e.to_string(),
                })
            }
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                if wait {
                    file.lock().map_err(io)?;
                } else if !inherited_briefly(&mut file) {
                    // A released record (pid 0) names no holder: the lock was just taken
                    // by an apply that has not written its record yet.
                    let holder = read_holder(&mut file).filter(|h| h.pid != 0);
                    return Err(LockError::Held {
                        path: path.to_path_buf(),
                        holder,
                        removed: false,
                    });
                }
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        // Removed or replaced between the open and the lock: a lock on a file nobody else
        // will open guards nothing. Try again.
        if guard_of(path, &file).map_err(io)?.check().is_ok() {
            return Ok(file);
        }
    }
    Err(io(std::io::Error::other(format!(
        "it was replaced {ATTEMPTS} times while provision tried to lock it"
    ))))
}

/// How long a lock whose recorded holder is gone may stay held by a process it forked.
const INHERITED_FOR: Duration = Duration::from_secs(2);

/// The lock is held, but the holder its file names is gone (killed) or none (released): a
/// process it forked still has the descriptor between its fork and its exec (the descriptor
/// is close-on-exec), for a moment. `true` once this process took the lock within
/// [`INHERITED_FOR`]; `false` for a live holder (or one of another host), or a lock kept
/// longer.
fn inherited_briefly(file: &mut File) -> bool {
    let gone = match read_holder(file) {
        Some(h) if h.pid == 0 => true,
        Some(h) => h.host == hostname() && !Path::new(&format!("/proc/{}", h.pid)).exists(),
        None => true,
    };
    if !gone {
        return false;
    }
    let since = std::time::Instant::now();
    while since.elapsed() < INHERITED_FOR {
        std::thread::sleep(Duration::from_millis(10));
        match file.try_lock() {
            Ok(()) => return true,
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(_)) => return false,
        }
    }
    false
}

fn guard_of(path: &Path, file: &File) -> std::io::Result<LockGuard> {
    let meta = file.metadata()?;
    Ok(LockGuard {
        path: path.to_path_buf(),
        dev: meta.dev(),
        ino: meta.ino(),
    })
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
    let mut file = lock_named(&path, wait)?;
    // An apply that still holds the lock through a file removed from under it: it runs on.
    // (A lock file released cleanly and untouched since vouches that there is none.)
    let vouched = crate::lock_released::vouched(&file, &path);
    while let Some(pid) = (!vouched)
        .then(|| crate::lock_holders::removed_holder(&path))
        .flatten()
    {
        if !wait {
            let holder = Holder {
                pid,
                host: hostname(),
                started_at: "an unknown time".into(),
                lock: None,
            };
            return Err(LockError::Held {
                path,
                holder: Some(holder),
                removed: true,
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // We hold it: nobody writes it now. Only provision's own lock file is ever truncated.
    if let Err(why) = check_ours(&mut file) {
        return Err(LockError::NotOurs { path, why });
    }
    // A holder still written in the file died without cleaning up (pid 0: released cleanly).
    let took_over = read_holder(&mut file).filter(|h| h.pid != 0);
    let me = Holder {
        pid: std::process::id(),
        host: hostname(),
        started_at: now_rfc3339(),
        lock: crate::lock_holders::absolute(&path).map(|p| p.display().to_string()),
    };
    file.set_len(0).map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.write_all(serde_json::to_string(&me).expect("serialisable").as_bytes())
        .map_err(io)?;
    file.sync_all().map_err(io)?;
    let guard = guard_of(&path, &file).map_err(io)?;
    Ok(ApplyLock {
        file,
        path,
        took_over,
        guard,
    })
}

impl ApplyLock {
    /// `Ok` while the lock file is still the one this lock holds (see [`LockGuard::check`]).
    pub fn check(&self) -> Result<(), LockError> {
        self.guard.check()
    }

    /// The check, to keep beside the state file.
    pub fn guard(&self) -> LockGuard {
        self.guard.clone()
    }
}

impl Drop for ApplyLock {
    fn drop(&mut self) {
        // Clear the holder before the kernel releases the lock with the file.
        crate::lock_released::mark(&self.file, &self.path);
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

    #[test]
    fn a_lock_held_over_a_released_record_names_no_pid_0() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.json");
        drop(acquire(&state, false).unwrap());
        // Another apply has just locked the file and not yet written its record.
        let other = std::fs::File::open(lock_path(&state)).unwrap();
        other.lock().unwrap();
        let shown = acquire(&state, false).unwrap_err().to_string();
        assert!(!shown.contains("pid 0"), "{shown}");
        assert!(shown.contains("not recorded itself yet"), "{shown}");
    }

    #[test]
    fn a_holder_whose_lock_file_was_renamed_away_still_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.json");
        let first = acquire(&state, false).unwrap();
        std::fs::rename(lock_path(&state), dir.path().join("moved.lock")).unwrap();
        let err = acquire(&state, false).unwrap_err();
        assert!(
            matches!(err, LockError::Held { removed: true, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("removed or renamed"), "{err}");
        drop(first);
        // Released: the lock at the path is free again.
        drop(acquire(&state, false).unwrap());
    }
}
