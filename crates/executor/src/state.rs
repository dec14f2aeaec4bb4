//! The state file: what every step did last, with its fingerprint. Versioned, written
//! atomically (temp file, fsync, rename, fsync of the directory), never silently discarded.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dirty_reason::DirtyReason;

/// Bumped when the state file changes incompatibly.
pub const STATE_VERSION: u32 = 1;

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
    #[serde(default)]
    pub outputs: BTreeMap<String, Value>,
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
}

impl StateError {
    pub fn hint(&self) -> String {
        match self {
            StateError::Corrupt { path, .. } => format!(
                "provision never discards a state file: inspect it, or move it aside (`mv {0} {0}.bad`) to start over; steps then rerun and running servers are checked again",
                path.display()
            ),
            StateError::TooNew { .. } => "use the provision version that wrote it, or pass another --state".into(),
            StateError::Io { .. } => "check the path and its permissions, or pass another --state".into(),
        }
    }
}

/// The state file at a path.
#[derive(Debug, Clone)]
pub struct StateFile {
    pub path: PathBuf,
}

impl StateFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StateFile { path: path.into() }
    }

    /// Read the state; a missing file is an empty state, anything unreadable is an error.
    pub fn load(&self) -> Result<State, StateError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(source) => {
                return Err(StateError::Io {
                    action: "read",
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let corrupt = |detail: String| StateError::Corrupt {
            path: self.path.clone(),
            detail,
        };
        let value: Value = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
        let version = value.get("state_version").and_then(Value::as_u64);
        match version {
            Some(v) if v > u64::from(STATE_VERSION) => {
                return Err(StateError::TooNew {
                    path: self.path.clone(),
                    found: v as u32,
                })
            }
            None => return Err(corrupt("no `state_version`".into())),
            _ => {}
        }
        serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))
    }

    /// Write the state atomically: a reader sees the old file or the new one, never a mix.
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        write_atomic(
            &self.path,
            serde_json::to_string_pretty(state)
                .expect("state serialises")
                .as_bytes(),
        )
        .map_err(|source| StateError::Io {
            action: "write",
            path: self.path.clone(),
            source,
        })
    }
}

/// Write `bytes` to `path` through a temp file in the same directory, fsync, rename, fsync dir.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
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
                outputs: BTreeMap::new(),
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
}
