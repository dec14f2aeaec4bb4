//! Why a step runs (or reruns), as data: printed with `-v`, stored in the state file.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::state::{StepRecord, StepStatus};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum DirtyReason {
    /// No record of the step.
    NeverRun,
    /// `--force`.
    Forced,
    /// The last run did not pass (failed, cancelled, or killed while running).
    LastRunDidNotPass { status: StepStatus },
    /// The step's spec changed; the fields that differ.
    SpecChanged { fields: Vec<String> },
    /// A resolved fact changed (a moved branch, a new tool version, a changed secret).
    FactChanged { facts: Vec<String> },
    /// A dependency produced something new.
    DependencyChanged { deps: Vec<String> },
    /// A dependency runs in this apply (only in `plan` previews).
    DependencyWillRun { deps: Vec<String> },
    /// An output recorded by the step is gone.
    OutputMissing { path: String },
    /// A liveness step's world changed (a server died, a GPU disappeared).
    NotAlive { detail: String },
    /// The fingerprint format changed.
    FormatChanged,
}

impl fmt::Display for DirtyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DirtyReason::NeverRun => write!(f, "never run"),
            DirtyReason::Forced => write!(f, "forced"),
            DirtyReason::LastRunDidNotPass { status } => {
                let s = match status {
                    StepStatus::Running => "was interrupted",
                    StepStatus::Failed => "failed",
                    StepStatus::Cancelled => "was cancelled",
                    StepStatus::Passed => "passed",
                };
                write!(f, "last run {s}")
            }
            DirtyReason::SpecChanged { fields } => write!(f, "spec changed: {}", fields.join(", ")),
            DirtyReason::FactChanged { facts } => write!(f, "changed: {}", facts.join(", ")),
            DirtyReason::DependencyChanged { deps } => {
                write!(f, "dependency changed: {}", deps.join(", "))
            }
            DirtyReason::DependencyWillRun { deps } => {
                write!(f, "dependency will run: {}", deps.join(", "))
            }
            DirtyReason::OutputMissing { path } => write!(f, "output missing: {path}"),
            DirtyReason::NotAlive { detail } => write!(f, "not alive: {detail}"),
            DirtyReason::FormatChanged => write!(f, "fingerprint format changed"),
        }
    }
}

/// What is known about a step now, to compare with its record.
pub struct Current<'a> {
    pub fingerprint: &'a str,
    pub spec: &'a Value,
    pub facts: &'a BTreeMap<String, String>,
    pub deps: &'a BTreeMap<String, String>,
}

/// Is the record fresh for `current`? The first reason it is not. (Output and liveness checks
/// are the caller's: they touch the world.)
pub fn compare(record: Option<&StepRecord>, current: &Current<'_>) -> Result<(), DirtyReason> {
    let Some(record) = record else {
        return Err(DirtyReason::NeverRun);
    };
    if record.status != StepStatus::Passed {
        return Err(DirtyReason::LastRunDidNotPass {
            status: record.status,
        });
    }
    if record.fingerprint.as_deref() == Some(current.fingerprint) {
        return Ok(());
    }
    let fields = diff_paths(&record.spec, current.spec);
    if !fields.is_empty() {
        return Err(DirtyReason::SpecChanged { fields });
    }
    let facts = changed_keys(&record.facts, current.facts);
    if !facts.is_empty() {
        return Err(DirtyReason::FactChanged { facts });
    }
    let deps = changed_keys(&record.deps, current.deps);
    if !deps.is_empty() {
        return Err(DirtyReason::DependencyChanged { deps });
    }
    Err(DirtyReason::FormatChanged)
}

fn changed_keys(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> Vec<String> {
    old.keys()
        .chain(new.keys())
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Paths of the leaves that differ between two JSON values (`argv[3]`, `env.FOO`), at most 8.
pub fn diff_paths(old: &Value, new: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(old, new, String::new(), &mut out);
    out.truncate(8);
    out
}

fn walk(old: &Value, new: &Value, path: String, out: &mut Vec<String>) {
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                    child,
                    out,
                );
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                walk(x, y, format!("{path}[{i}]"), out);
            }
        }
        _ => out.push(if path.is_empty() {
            "(whole step)".into()
        } else {
            path
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diff_names_the_fields() {
        let a = json!({"argv": ["x", "--port", "1"], "env": {"A": "1"}, "port": 1});
        let b = json!({"argv": ["x", "--port", "2"], "env": {"A": "1", "B": "2"}, "port": 1});
        assert_eq!(diff_paths(&a, &b), ["argv[2]", "env.B"]);
        assert_eq!(diff_paths(&json!({"l": [1]}), &json!({"l": [1, 2]})), ["l"]);
    }
}
