//! What the executor needs to know about each kind of step, decided in one place. Every trait
//! is one exhaustive `match` (no catch-all arm), so a new kind fails to compile until each is
//! decided for it; the executor asks these and matches no kind and no id prefix.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::secret_placeholder::names_in;
use crate::secrets::StepSecrets;
use crate::step::StepSpec;
use crate::step_kind::StepKind;

impl StepKind {
    /// Liveness steps check the world every apply; a state file alone never makes them fresh.
    pub fn is_liveness(self) -> bool {
        match self {
            StepKind::GpuCheck | StepKind::Spawn | StepKind::Probe | StepKind::VramFit => true,
            StepKind::PreflightTools
            | StepKind::GitClone
            | StepKind::CmakeConfigure
            | StepKind::CmakeBuild
            | StepKind::ModelResolve
            | StepKind::Handoff => false,
        }
    }

    /// A check that lets its dependents start or stops them, and passes nothing on: its
    /// dependents' fingerprints do not include it, so running it again (free memory is read
    /// on every apply, the pools beside it changed) never restarts a server. What it checked
    /// must reach the dependents through their own specs and other dependencies.
    pub fn is_gate(self) -> bool {
        match self {
            StepKind::VramFit => true,
            StepKind::PreflightTools
            | StepKind::GpuCheck
            | StepKind::GitClone
            | StepKind::CmakeConfigure
            | StepKind::CmakeBuild
            | StepKind::ModelResolve
            | StepKind::Spawn
            | StepKind::Probe
            | StepKind::Handoff => false,
        }
    }

    /// A record that describes the running world rather than an artifact: a state write that
    /// changes only such records is not fsynced (a lost one is checked again next apply).
    pub fn is_volatile(self) -> bool {
        match self {
            StepKind::GpuCheck
            | StepKind::Spawn
            | StepKind::Probe
            | StepKind::Handoff
            | StepKind::VramFit => true,
            StepKind::PreflightTools
            | StepKind::GitClone
            | StepKind::CmakeConfigure
            | StepKind::CmakeBuild
            | StepKind::ModelResolve => false,
        }
    }

    /// A step that saturates the machine on its own (a compile): at most one runs at a time.
    pub fn is_heavy(self) -> bool {
        match self {
            StepKind::CmakeBuild => true,
            StepKind::PreflightTools
            | StepKind::GpuCheck
            | StepKind::GitClone
            | StepKind::CmakeConfigure
            | StepKind::ModelResolve
            | StepKind::VramFit
            | StepKind::Spawn
            | StepKind::Probe
            | StepKind::Handoff => false,
        }
    }

    /// A step of one replica (`spawn`, `probe`, `handoff` of `pool/rN`): what `down` stops and
    /// `supervise` restarts.
    pub fn is_replica(self) -> bool {
        match self {
            StepKind::Spawn | StepKind::Probe | StepKind::Handoff => true,
            StepKind::PreflightTools
            | StepKind::GpuCheck
            | StepKind::GitClone
            | StepKind::CmakeConfigure
            | StepKind::CmakeBuild
            | StepKind::ModelResolve
            | StepKind::VramFit => false,
        }
    }

    /// The order steps are retired or taken down in, lowest first: endpoints go first
    /// (handoffs, then probes), then servers, then everything else.
    pub fn retire_rank(self) -> u8 {
        match self {
            StepKind::Handoff => 0,
            StepKind::Probe => 1,
            StepKind::Spawn => 2,
            StepKind::PreflightTools
            | StepKind::GpuCheck
            | StepKind::GitClone
            | StepKind::CmakeConfigure
            | StepKind::CmakeBuild
            | StepKind::ModelResolve
            | StepKind::VramFit => RETIRE_RANK_LAST,
        }
    }
}

/// The retire rank of every kind that is not a replica's, and of a recorded kind this
/// version does not know.
pub const RETIRE_RANK_LAST: u8 = 3;

/// The retire rank of a recorded kind name (a state file may come from another version).
pub fn retire_rank_of(kind: &str) -> u8 {
    StepKind::parse(kind).map_or(RETIRE_RANK_LAST, StepKind::retire_rank)
}

impl StepSpec {
    /// The secrets the fingerprint digests (never stores): a field name and the spec's
    /// secret-holding field with `secrets` filled in, `None` when the step has no secret or
    /// they need not rerun it. (The same values as before secrets moved out of the specs, so
    /// state files keep their fingerprints: a spawn's whole environment, the clone's URL.)
    pub fn secret_input(&self, secrets: &StepSecrets) -> Option<(&'static str, Value)> {
        let holds = |text: &str| !names_in(text).is_empty();
        match self {
            // A changed `--api-key`, `--hf-token` or secret env entry restarts the server.
            StepSpec::Spawn(s) => s.env.values().any(|v| holds(v)).then(|| {
                let env: BTreeMap<&String, String> = s
                    .env
                    .iter()
                    .map(|(k, v)| (k, secrets.expand_known(v)))
                    .collect();
                ("env", json!(env))
            }),
            // Changed credentials in the repository URL fetch again.
            StepSpec::GitClone(g) => {
                holds(&g.repo).then(|| ("url", json!(secrets.expand_known(&g.repo))))
            }
            // The file is kept by its digest: a new signature or token for the same file
            // downloads nothing.
            StepSpec::ModelResolve(_) => None,
            // Liveness: it runs every apply anyway.
            StepSpec::Probe(_) => None,
            StepSpec::PreflightTools(_)
            | StepSpec::GpuCheck(_)
            | StepSpec::CmakeConfigure(_)
            | StepSpec::CmakeBuild(_)
            | StepSpec::VramFit(_)
            | StepSpec::Handoff(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds_where(f: impl Fn(StepKind) -> bool) -> Vec<&'static str> {
        StepKind::ALL
            .into_iter()
            .filter(|k| f(*k))
            .map(StepKind::as_str)
            .collect()
    }

    #[test]
    fn liveness_volatile_heavy_and_replica_tables() {
        assert_eq!(
            kinds_where(StepKind::is_liveness),
            ["gpu-check", "vram-fit", "spawn", "probe"]
        );
        assert_eq!(
            kinds_where(StepKind::is_volatile),
            ["gpu-check", "vram-fit", "spawn", "probe", "handoff"]
        );
        assert_eq!(kinds_where(StepKind::is_gate), ["vram-fit"]);
        assert_eq!(kinds_where(StepKind::is_heavy), ["cmake-build"]);
        assert_eq!(
            kinds_where(StepKind::is_replica),
            ["spawn", "probe", "handoff"]
        );
        // Every liveness step is volatile.
        for k in StepKind::ALL {
            assert!(!k.is_liveness() || k.is_volatile(), "{k}");
        }
    }

    #[test]
    fn retire_order_is_handoffs_probes_servers_then_the_rest() {
        let ranks: Vec<(&str, u8)> = StepKind::ALL
            .into_iter()
            .map(|k| (k.as_str(), k.retire_rank()))
            .collect();
        assert_eq!(
            ranks,
            [
                ("preflight-tools", 3),
                ("gpu-check", 3),
                ("git-clone", 3),
                ("cmake-configure", 3),
                ("cmake-build", 3),
                ("model-resolve", 3),
                ("vram-fit", 3),
                ("spawn", 2),
                ("probe", 1),
                ("handoff", 0),
            ]
        );
        assert_eq!(retire_rank_of("handoff"), 0);
        assert_eq!(retire_rank_of("a-kind-from-elsewhere"), RETIRE_RANK_LAST);
    }
}
