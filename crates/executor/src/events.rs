//! What the executor reports while it works. The cli turns events into progress lines, a TTY
//! display or one JSON object per line (`--json`).

use serde::Serialize;

use crate::dirty_reason::DirtyReason;
use crate::failed_command::FailedCommand;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// A dirty step started.
    Started {
        step: String,
        kind: String,
        reason: DirtyReason,
        log: String,
    },
    /// A fresh step was skipped; `kept` for a liveness step whose world was checked.
    Skipped {
        step: String,
        kind: String,
        kept: bool,
    },
    Finished {
        step: String,
        kind: String,
        duration_ms: u64,
    },
    Failed {
        step: String,
        kind: String,
        error: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        hint: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        tail: Option<String>,
        log: String,
        duration_ms: u64,
        /// The command that failed, as fields of the event: `command`, `cwd`, `exit_code` or
        /// `signal`, `output_log` ([`FailedCommand`]).
        #[serde(flatten, skip_serializing_if = "Option::is_none")]
        failed_command: Option<Box<FailedCommand>>,
    },
    /// Not run because a dependency failed or was blocked.
    Blocked {
        step: String,
        kind: String,
        by: String,
    },
    /// Stopped by Ctrl-C, SIGTERM or `--fail-fast`.
    Cancelled { step: String, kind: String },
    /// A step of a pool or replica no longer in the config was undone (server stopped,
    /// handoff removed).
    Retired {
        step: String,
        kind: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

impl Event {
    pub fn step(&self) -> &str {
        match self {
            Event::Started { step, .. }
            | Event::Skipped { step, .. }
            | Event::Finished { step, .. }
            | Event::Failed { step, .. }
            | Event::Blocked { step, .. }
            | Event::Cancelled { step, .. }
            | Event::Retired { step, .. } => step,
        }
    }
}

/// Receives events, from the executor's thread.
pub trait EventSink: Sync {
    fn emit(&self, event: Event);
}

/// Keeps every event (tests).
#[derive(Default)]
pub struct Recorder(pub std::sync::Mutex<Vec<(std::time::Instant, Event)>>);

impl EventSink for Recorder {
    fn emit(&self, event: Event) {
        self.0
            .lock()
            .expect("not poisoned")
            .push((std::time::Instant::now(), event));
    }
}

impl Recorder {
    pub fn events(&self) -> Vec<Event> {
        self.0
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|(_, e)| e.clone())
            .collect()
    }
}
