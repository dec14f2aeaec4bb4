//! A step's external command that did not succeed, as typed fields: what ran, where, how it
//! ended and where its output went. A [`crate::StepError`] carries it, and the `failed` event
//! of `apply --format json` has its fields (`command`, `cwd`, `exit_code` or `signal`,
//! `output_log`) next to the message, hint and tail.

use std::fmt;
use std::process::ExitStatus;

use serde::{Deserialize, Serialize};

/// How a command ended: an exit code, or the signal that killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitState {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

impl From<ExitStatus> for ExitState {
    fn from(status: ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        ExitState {
            exit_code: status.code(),
            signal: status.signal(),
        }
    }
}

impl fmt::Display for ExitState {
    /// `exit status 2` or `signal 9`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.exit_code, self.signal) {
            (Some(code), _) => write!(f, "exit status {code}"),
            (None, Some(sig)) => write!(f, "signal {sig}"),
            (None, None) => f.write_str("an unknown status"),
        }
    }
}

/// A command that failed to start or ended unsuccessfully.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedCommand {
    /// The argv as shown in logs: shell-quoted, every secret redacted.
    pub command: String,
    /// Its working directory, when provision chose or knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// How it ended; absent when it never started.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub status: Option<ExitState>,
    /// Where its output went, when that is not the step's log (a server's own log).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_log: Option<String>,
}

impl FailedCommand {
    /// With every secret of the plan redacted: what the events and the terminal get.
    pub fn redacted(self, r: &provision_plan::redact::Redactor) -> Self {
        FailedCommand {
            command: r.redact(&self.command),
            cwd: self.cwd.map(|c| r.redact(&c)),
            status: self.status,
            output_log: self.output_log.map(|l| r.redact(&l)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_serialise_flat_and_absent_ones_are_left_out() {
        let failed = FailedCommand {
            command: "git ls-remote x".into(),
            cwd: Some("/w".into()),
            status: Some(ExitState {
                exit_code: Some(128),
                signal: None,
            }),
            output_log: None,
        };
        assert_eq!(
            serde_json::to_value(&failed).unwrap(),
            json!({"command": "git ls-remote x", "cwd": "/w", "exit_code": 128})
        );
        let killed = ExitState {
            exit_code: None,
            signal: Some(9),
        };
        assert_eq!(killed.to_string(), "signal 9");
        let never_started = FailedCommand {
            status: None,
            cwd: None,
            output_log: Some("/r/logs/s.log".into()),
            ..failed
        };
        assert_eq!(
            serde_json::to_value(&never_started).unwrap(),
            json!({"command": "git ls-remote x", "output_log": "/r/logs/s.log"})
        );
        let signalled = FailedCommand {
            status: Some(killed),
            ..never_started
        };
        assert_eq!(serde_json::to_value(&signalled).unwrap()["signal"], 9);
    }
}
