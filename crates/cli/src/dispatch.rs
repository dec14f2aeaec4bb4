//! The one place where step kinds meet the crates that run them.

use provision_executor::{Dispatch, Outcome, StepContext, StepError};
use provision_plan::StepSpec;

/// Runs every step kind with its step crate.
pub struct StepDispatch;

fn not_yet(kind: &str) -> StepError {
    StepError::new(format!(
        "the `{kind}` step is not implemented yet in this version of provision"
    ))
    .hint("see the status table in README.md; `provision plan` shows what apply will do")
}

impl Dispatch for StepDispatch {
    fn run(&self, cx: &StepContext<'_>) -> Result<Outcome, StepError> {
        match &cx.step.spec {
            StepSpec::PreflightTools(_)
            | StepSpec::GpuCheck(_)
            | StepSpec::GitClone(_)
            | StepSpec::CmakeConfigure(_)
            | StepSpec::CmakeBuild(_)
            | StepSpec::ModelResolve(_)
            | StepSpec::VramFit(_)
            | StepSpec::Spawn(_)
            | StepSpec::Probe(_)
            | StepSpec::Handoff(_) => Err(not_yet(cx.step.kind())),
        }
    }
}
