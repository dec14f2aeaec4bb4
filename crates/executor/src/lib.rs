//! Runs a provision plan: a ready set over the step DAG, independent steps in parallel, a
//! versioned state file with fingerprints so a second apply skips what is still valid, and a
//! lock so that one apply runs per state file.

pub mod apply;
pub mod cache_file;
mod checkers;
pub mod command;
pub mod dirty_reason;
pub mod dispatch;
pub mod events;
pub mod failed_command;
pub mod file_identity;
pub mod fingerprint;
pub mod lock;
mod lock_holders;
mod lock_released;
pub mod orphans;
pub mod pidfd;
pub mod private_file;
pub mod retire;
mod scheduler;
pub mod state;
pub mod state_pids;
mod state_v1;
mod unsaved;

pub use apply::{apply, is_volatile, preview, ApplyOptions, ApplyReport, Preview, StepResult};
pub use dirty_reason::DirtyReason;
pub use dispatch::{log_tail, Cancel, Dispatch, Facts, Outcome, StepContext, StepError};
pub use events::{Event, EventSink};
pub use failed_command::{ExitState, FailedCommand};
pub use lock::{acquire, ApplyLock, Holder, LockError, LockGuard};
pub use provision_plan::outputs::{KindOutputs, StepOutputs};
pub use retire::retire_removed;
pub use state::{
    Durability, SaveCounts, State, StateError, StateFile, StepRecord, StepStatus, STATE_VERSION,
};

/// The JSON Schema of the state file, as written to `schemas/state.schema.json`.
pub fn state_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(State)).expect("schema serialises")
}
