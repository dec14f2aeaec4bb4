//! The state file: what every step did last, with its fingerprint. Versioned, written
//! atomically (temp file, rename: a reader never sees a partial file), fsynced when a record
//! that a power loss must not undo changed, never silently discarded.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dirty_reason::DirtyReason;

/// Bumped when the state file changes incompatibly. Version 2: typed step outputs (version 1's
/// untyped maps are read, see `state_v1`).
pub const STATE_VERSION: u32 = 2;

/// `.runtime/state.json`: the record of every step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "provision state")]
pub struct State {
    pub state_version: u32,
    /// By step id.
    pub steps: BTreeMap<String, StepRecord>,
}

impl Default for State {
    fn default() -> Self {
        State {
            state_version: STATE_VERSION,
            steps: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StepStatus {
    /// Started and not finished (an apply that was killed leaves this).
    Running,
    Passed,
    Failed,
    Cancelled,
}

/// What one step did last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StepRecord {
    pub kind: String,
    pub status: StepStatus,
    /// Set only after the step passed; cleared before a dirty step runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// The step as planned (no secrets), to tell which field changed.
    pub spec: Value,
    /// Facts resolved before it ran (commit, tool versions, digests).
    #[serde(default)]
    pub facts: BTreeMap<String, String>,
    /// What each dependency contributed to the fingerprint.
    #[serde(default)]
    pub deps: BTreeMap<String, String>,
    /// What it produced, typed by its kind (none once undone, or before it passed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<provision_plan::StepOutputs>,
    /// Files that must still exist for the step to stay fresh.
    #[serde(default)]
    pub artifacts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Why it ran last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<DirtyReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("the state file {path} is unreadable: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("the state file {path} has version {found}, newer than this provision understands ({STATE_VERSION})")]
    TooNew { path: PathBuf, found: u32 },
    #[error("cannot {action} the state file {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The apply's lock file was removed or replaced: it writes no more.
    #[error(transparent)]
    LockLost(crate::lock::LockError),
}

impl StateError {
    pub fn hint(&self) -> String {
        match self {
            StateError::Corrupt { path, .. } => format!(
                "provision never discards a state file: if {0} is not one, pass another --state; otherwise inspect it, or move it aside (`mv {0} {0}.bad`) to start over; steps then rerun and running servers are checked again",
                path.display()
            ),
            StateError::TooNew { .. } => "use the provision version that wrote it, or pass another --state".into(),
            StateError::Io { .. } => "check the path and its permissions, or pass another --state".into(),
            StateError::LockLost(_) => "do not remove lock files of a running apply; check that no other provision runs on this state, then run this command again".into(),
        }
    }
}

/// The state file at a path.
#[derive(Debug, Clone)]
pub struct StateFile {
    pub path: PathBuf,
    /// Shared by clones: every write through any of them counts.
    counts: Arc<Counts>,
    /// The lock this file is written under: checked before every write.
    held: Option<crate::lock::LockGuard>,
}

#[derive(Debug, Default)]
struct Counts {
    saves: AtomicU64,
    synced: AtomicU64,
}

/// How often a [`StateFile`] (or a clone of it) was written, and how many of those writes were
/// fsynced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SaveCounts {
    pub saves: u64,
    pub synced: u64,
}

impl StateFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StateFile {
            path: path.into(),
            counts: Arc::default(),
            held: None,
        }
    }

    /// This file, written only while `lock` still holds: a write after its lock file was
    /// removed or replaced fails with [`StateError::LockLost`] and writes nothing.
    pub fn held_by(mut self, lock: &crate::lock::ApplyLock) -> Self {
        self.held = Some(lock.guard());
        self
    }

    /// `Ok` unless the lock this file is written under was lost (see [`Self::held_by`]).
    pub fn check_held(&self) -> Result<(), StateError> {
        match &self.held {
            Some(guard) => guard.check().map_err(StateError::LockLost),
            None => Ok(()),
        }
    }

    /// Writes so far through this file and its clones.
    pub fn save_counts(&self) -> SaveCounts {
        SaveCounts {
            saves: self.counts.saves.load(Ordering::Relaxed),
            synced: self.counts.synced.load(Ordering::Relaxed),
        }
    }

    /// Read the state; a missing file is an empty state, anything unreadable is an error:
    /// [`StateError::Corrupt`] when the path is not a regular file (a directory, a symbolic
    /// link, which provision does not follow) or its content is not a provision state.
    pub fn load(&self) -> Result<State, StateError> {
        let corrupt = |detail: String| StateError::Corrupt {
            path: self.path.clone(),
            detail,
        };
        let mut file = match crate::private_file::open_read(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(StateError::Io {
                    action: "read",
                    path: self.path.clone(),
                    source: e,
                })
            }
            Err(e) => return Err(corrupt(e.to_string())),
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|source| StateError::Io {
                action: "read",
                path: self.path.clone(),
                source,
            })?;
        let text = String::from_utf8(bytes)
            .map_err(|_| corrupt("it is not UTF-8 text, so not a provision state file".into()))?;
        let mut value: Value = serde_json::from_str(&text).map_err(|e| {
            corrupt(format!(
                "it is not a provision state file, or a damaged one: {e}"
            ))
        })?;
        let version = value.get("state_version").and_then(Value::as_u64);
        match version {
            Some(v) if v > u64::from(STATE_VERSION) => {
                return Err(StateError::TooNew {
                    path: self.path.clone(),
                    found: v as u32,
                })
            }
            None => {
                return Err(corrupt(
                    "it is not a provision state file (no `state_version`)".into(),
                ))
            }
            Some(1) => value = crate::state_v1::migrate(value),
            _ => {}
        }
        let state: State = serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
        crate::state_pids::check_pids(&state).map_err(corrupt)?;
        Ok(state)
    }

    /// Write the state atomically and durably: a reader sees the old file or the new one, never
    /// a mix, and a power loss after this returns does not undo it.
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        self.save_with(state, Durability::Fsync)
    }

    /// Write the state atomically; fsynced or not as `durability` says.
    ///
    /// Pretty JSON, as before: a person is told to inspect this file when it cannot be read,
    /// and compact output would not change the number of writes, which is what costs.
    pub fn save_with(&self, state: &State, durability: Durability) -> Result<(), StateError> {
        self.check_held()?;
        write_atomic(
            &self.path,
            serde_json::to_string_pretty(state)
                .expect("state serialises")
                .as_bytes(),
            durability,
        )
        .map_err(|source| StateError::Io {
            action: "write",
            path: self.path.clone(),
            source,
        })?;
        self.counts.saves.fetch_add(1, Ordering::Relaxed);
        if durability == Durability::Fsync {
            self.counts.synced.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Whether [`write_atomic`] waits for the bytes to reach the disk. Either way the write is
/// atomic for readers (temp file, then rename).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync the file before the rename and the directory after it: once the write returns, a
    /// power loss leaves the new content (state records of builds, caches keyed by digests).
    Fsync,
    /// No fsync: for content that describes the running world (a handoff or pid file, state
    /// records of servers and probes), which a power loss ends too, so losing the last writes
    /// costs nothing. Saves the two fsyncs, milliseconds each on a busy disk. A filesystem
    /// without rename-over-existing ordering (ext4 and btrfs have it) may leave an empty file
    /// after a power loss instead of the previous one.
    NoSync,
}

/// Write `bytes` and a newline to `path` through a temp file in the same directory and a
/// rename, creating the directory (0700) when missing; with [`Durability::Fsync`], fsync the
/// file before the rename and the directory after it. A failed write leaves no temp file
/// behind. The file is 0600 (see [`write_atomic_mode`]).
pub fn write_atomic(path: &Path, bytes: &[u8], durability: Durability) -> std::io::Result<()> {
    write_atomic_mode(path, bytes, durability, crate::private_file::FILE_MODE)
}

/// [`write_atomic`] giving the file `mode` exactly. The temp file is created new (`O_EXCL`,
/// `O_NOFOLLOW`): a file or link already at its name is removed, never written through; a
/// symbolic link at `path` itself is replaced by the rename, its target untouched.
pub fn write_atomic_mode(
    path: &Path,
    bytes: &[u8],
    durability: Durability,
    mode: u32,
) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    crate::private_file::create_dir_all(&dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = match crate::private_file::create_new(&tmp, mode) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // Left by a killed writer of this pid, or planted: removed (a link itself, not
                // its target), then created anew.
                std::fs::remove_file(&tmp)?;
                crate::private_file::create_new(&tmp, mode)?
            }
            other => other?,
        };
        f.write_all(bytes)?;
        f.write_all(b"\n")?;
        if durability == Durability::Fsync {
            f.sync_all()?;
        }
        drop(f);
        std::fs::rename(&tmp, path)?;
        if durability == Durability::Fsync {
            std::fs::File::open(&dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Current time as RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_is_empty_corrupt_is_an_error_and_saves_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path().join("sub/state.json"));
        assert_eq!(file.load().unwrap(), State::default());
        let mut state = State::default();
        state.steps.insert(
            "a".into(),
            StepRecord {
                kind: "git-clone".into(),
                status: StepStatus::Passed,
                fingerprint: Some("f".into()),
                spec: serde_json::json!({"x": 1}),
                facts: BTreeMap::new(),
                deps: BTreeMap::new(),
                outputs: None,
                artifacts: vec![],
                started_at: None,
                finished_at: None,
                duration_ms: None,
                reason: Some(DirtyReason::NeverRun),
                error: None,
            },
        );
        file.save(&state).unwrap();
        assert_eq!(file.load().unwrap(), state);
        file.save_with(&state, Durability::NoSync).unwrap();
        assert_eq!(file.load().unwrap(), state);
        assert_eq!(
            file.clone().save_counts(),
            SaveCounts {
                saves: 2,
                synced: 1
            }
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("sub")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp files left behind");

        std::fs::write(&file.path, "{\"state_version\": 1, \"steps\": ").unwrap();
        let err = file.load().unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
        assert!(err.hint().contains("never discards"));
        std::fs::write(&file.path, "{\"state_version\": 99, \"steps\": {}}").unwrap();
        assert!(matches!(
            file.load().unwrap_err(),
            StateError::TooNew { found: 99, .. }
        ));
    }

    #[test]
    fn either_durability_replaces_whole_files_and_leaves_no_temp_file() {
        for durability in [Durability::Fsync, Durability::NoSync] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("engines/h.json");
            write_atomic(&path, b"{\"a\": 1}", durability).unwrap();
            assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\": 1}\n");
            write_atomic(&path, b"2", durability).unwrap();
            assert_eq!(std::fs::read_to_string(&path).unwrap(), "2\n");
            let names: Vec<_> = std::fs::read_dir(dir.path().join("engines"))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, ["h.json"], "{durability:?}: no temp file left");
        }
    }

    #[test]
    fn a_failed_rename_leaves_the_old_file_and_no_temp_file() {
        for durability in [Durability::Fsync, Durability::NoSync] {
            let dir = tempfile::tempdir().unwrap();
            // A directory where the file should be: the rename fails.
            let path = dir.path().join("taken");
            std::fs::create_dir(&path).unwrap();
            std::fs::write(path.join("keep"), "x").unwrap();
            assert!(write_atomic(&path, b"new", durability).is_err());
            let names: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, ["taken"], "{durability:?}");
            assert_eq!(std::fs::read_to_string(path.join("keep")).unwrap(), "x");
        }
    }
}
