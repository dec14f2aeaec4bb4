//! The kinds of step, by name: what a plan's `kind` field, a state record's `kind` and the
//! first part of a step id (`spawn:pool/r0`) say. [`crate::step_traits`] decides, per kind,
//! everything the executor needs to know about a step without matching on it.

use crate::step::StepSpec;

/// One kind of step. Adding one fails to compile until every trait in
/// [`crate::step_traits`] and [`crate::step_id::StepId`] decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StepKind {
    PreflightTools,
    GpuCheck,
    GitClone,
    CmakeConfigure,
    CmakeBuild,
    ModelResolve,
    VramFit,
    Spawn,
    Probe,
    Handoff,
}

impl StepKind {
    /// Every kind, in plan order.
    pub const ALL: [StepKind; 10] = [
        StepKind::PreflightTools,
        StepKind::GpuCheck,
        StepKind::GitClone,
        StepKind::CmakeConfigure,
        StepKind::CmakeBuild,
        StepKind::ModelResolve,
        StepKind::VramFit,
        StepKind::Spawn,
        StepKind::Probe,
        StepKind::Handoff,
    ];

    /// The name in plans, state files and step ids (`cmake-build`).
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::PreflightTools => "preflight-tools",
            StepKind::GpuCheck => "gpu-check",
            StepKind::GitClone => "git-clone",
            StepKind::CmakeConfigure => "cmake-configure",
            StepKind::CmakeBuild => "cmake-build",
            StepKind::ModelResolve => "model-resolve",
            StepKind::VramFit => "vram-fit",
            StepKind::Spawn => "spawn",
            StepKind::Probe => "probe",
            StepKind::Handoff => "handoff",
        }
    }

    /// The kind named `name` (a state record's `kind`); `None` for a name no kind has.
    pub fn parse(name: &str) -> Option<StepKind> {
        StepKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for StepKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl StepSpec {
    /// This spec's kind.
    pub fn step_kind(&self) -> StepKind {
        match self {
            StepSpec::PreflightTools(_) => StepKind::PreflightTools,
            StepSpec::GpuCheck(_) => StepKind::GpuCheck,
            StepSpec::GitClone(_) => StepKind::GitClone,
            StepSpec::CmakeConfigure(_) => StepKind::CmakeConfigure,
            StepSpec::CmakeBuild(_) => StepKind::CmakeBuild,
            StepSpec::ModelResolve(_) => StepKind::ModelResolve,
            StepSpec::VramFit(_) => StepKind::VramFit,
            StepSpec::Spawn(_) => StepKind::Spawn,
            StepSpec::Probe(_) => StepKind::Probe,
            StepSpec::Handoff(_) => StepKind::Handoff,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_parses_back_from_its_name_and_names_are_unique() {
        for k in StepKind::ALL {
            assert_eq!(StepKind::parse(k.as_str()), Some(k));
            assert_eq!(k.to_string(), k.as_str());
        }
        let mut names: Vec<_> = StepKind::ALL.iter().map(|k| k.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), StepKind::ALL.len());
        assert_eq!(StepKind::parse("spawn:a/r0"), None);
        assert_eq!(StepKind::parse(""), None);
    }

    #[test]
    fn the_kind_serialised_in_a_plan_is_the_kind_name() {
        let spec = StepSpec::CmakeBuild(crate::step::CmakeBuild {
            build_dir: "b".into(),
            target: "t".into(),
            argv: vec![],
            binary: "x".into(),
        });
        let v = serde_json::to_value(&spec).unwrap();
        assert_eq!(v["kind"], spec.step_kind().as_str());
    }
}
