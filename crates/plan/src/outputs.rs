//! What each kind of step produces, typed: one struct per kind, one [`StepOutputs`] variant
//! per struct. The state file records them (with their schema), dependents read them by the
//! producing step's id (`cx.dep::<SpawnOutputs>(&StepId::spawn(pool, r))`), and liveness
//! checks read a step's own previous ones. The executor stores and passes them without
//! looking inside.
//!
//! Serialised field names are those of the untyped maps of state version 1, so a version-1
//! record reads as its kind's struct ([`StepOutputs::from_v1`]); the copies some kinds passed
//! on from their dependencies (configure's `commit`, vram-fit's and spawn's `model_path`, the
//! probe's spawn keys) are dropped: dependents read the producer.

mod build;
mod host;
mod ledger;
mod model;
mod replica;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use build::{CmakeBuildOutputs, CmakeConfigureOutputs, GitCloneOutputs};
pub use host::{Gpu, GpuCheckOutputs, PreflightToolsOutputs};
pub use ledger::{ComputeApp, LedgerDevice, LedgerShare};
pub use model::{DeviceFit, FitEstimate, FitInputs, ModelResolveOutputs, VramFitOutputs};
pub use replica::{DeviceMemory, HandoffOutputs, ProbeOutputs, ServerIdentity, SpawnOutputs};

use crate::step_kind::StepKind;

/// The outputs of one step, tagged with its kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum StepOutputs {
    PreflightTools(PreflightToolsOutputs),
    GpuCheck(GpuCheckOutputs),
    GitClone(GitCloneOutputs),
    CmakeConfigure(CmakeConfigureOutputs),
    CmakeBuild(CmakeBuildOutputs),
    ModelResolve(ModelResolveOutputs),
    VramFit(VramFitOutputs),
    Spawn(SpawnOutputs),
    Probe(ProbeOutputs),
    Handoff(HandoffOutputs),
}

/// The outputs struct of one kind: how a dependent asks for it and how it is told apart.
pub trait KindOutputs: Sized + Into<StepOutputs> {
    /// The kind whose outputs these are.
    const KIND: StepKind;
    /// These outputs, when `outputs` are of [`Self::KIND`].
    fn of(outputs: &StepOutputs) -> Option<&Self>;
}

macro_rules! kind_outputs {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        $(
            impl KindOutputs for $ty {
                const KIND: StepKind = StepKind::$variant;
                fn of(outputs: &StepOutputs) -> Option<&Self> {
                    match outputs {
                        StepOutputs::$variant(o) => Some(o),
                        _ => None,
                    }
                }
            }
            impl From<$ty> for StepOutputs {
                fn from(o: $ty) -> StepOutputs {
                    StepOutputs::$variant(o)
                }
            }
        )*
    };
}

kind_outputs!(
    PreflightTools(PreflightToolsOutputs),
    GpuCheck(GpuCheckOutputs),
    GitClone(GitCloneOutputs),
    CmakeConfigure(CmakeConfigureOutputs),
    CmakeBuild(CmakeBuildOutputs),
    ModelResolve(ModelResolveOutputs),
    VramFit(VramFitOutputs),
    Spawn(SpawnOutputs),
    Probe(ProbeOutputs),
    Handoff(HandoffOutputs),
);

impl StepOutputs {
    pub fn kind(&self) -> StepKind {
        match self {
            StepOutputs::PreflightTools(_) => StepKind::PreflightTools,
            StepOutputs::GpuCheck(_) => StepKind::GpuCheck,
            StepOutputs::GitClone(_) => StepKind::GitClone,
            StepOutputs::CmakeConfigure(_) => StepKind::CmakeConfigure,
            StepOutputs::CmakeBuild(_) => StepKind::CmakeBuild,
            StepOutputs::ModelResolve(_) => StepKind::ModelResolve,
            StepOutputs::VramFit(_) => StepKind::VramFit,
            StepOutputs::Spawn(_) => StepKind::Spawn,
            StepOutputs::Probe(_) => StepKind::Probe,
            StepOutputs::Handoff(_) => StepKind::Handoff,
        }
    }

    /// These outputs as `T`, when they are of `T`'s kind.
    pub fn get<T: KindOutputs>(&self) -> Option<&T> {
        T::of(self)
    }

    /// The value these outputs give the `${placeholder}` of a dependent: `${model_path}` is
    /// the model-resolve step's `path`.
    pub fn placeholder(&self, name: &str) -> Option<&str> {
        match (self, name) {
            (StepOutputs::ModelResolve(m), "model_path") => Some(&m.path),
            _ => None,
        }
    }

    /// The processes these outputs name, by field (`pid`, `pgid`): a state file is corrupt
    /// when one of them is 0 or 1.
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        match self {
            StepOutputs::Spawn(s) => vec![("pid", s.server.pid), ("pgid", s.server.pgid)],
            StepOutputs::Handoff(h) => h.pid.map(|p| ("pid", p)).into_iter().collect(),
            StepOutputs::PreflightTools(_)
            | StepOutputs::GpuCheck(_)
            | StepOutputs::GitClone(_)
            | StepOutputs::CmakeConfigure(_)
            | StepOutputs::CmakeBuild(_)
            | StepOutputs::ModelResolve(_)
            | StepOutputs::VramFit(_)
            | StepOutputs::Probe(_) => Vec::new(),
        }
    }

    /// A state-version-1 record's outputs (an untyped map, `{}` for none) as its kind's
    /// struct: `Ok(None)` for no outputs, `Err` for a map its kind's struct cannot read. Keys a
    /// kind no longer records (copies of a dependency's) are dropped.
    pub fn from_v1(kind: &str, map: &serde_json::Value) -> Result<Option<StepOutputs>, String> {
        match map.as_object() {
            Some(m) if m.is_empty() => return Ok(None),
            Some(_) => {}
            None if map.is_null() => return Ok(None),
            None => return Err(format!("the outputs of a `{kind}` step are not an object")),
        }
        let mut tagged = map.clone();
        tagged["kind"] = serde_json::Value::String(kind.to_string());
        serde_json::from_value(tagged)
            .map(Some)
            .map_err(|e| format!("the outputs of a `{kind}` step: {e}"))
    }
}

#[cfg(test)]
mod tests;
