//! Step ids: `<kind>` or `<kind>:<name>`, e.g. `gpu-check`, `git-clone:llama.cpp@b4567`,
//! `cmake-build:llama.cpp@b4567#1a2b3c4d`, `vram-fit:pool-a`, `spawn:pool-a/r0`. Every id is
//! built and taken apart here; plans and state files hold its string.

use std::fmt;

use crate::step_kind::StepKind;

/// One replica of a pool: `pool/rN`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplicaId {
    pub pool: String,
    pub replica: u32,
}

impl ReplicaId {
    pub fn new(pool: &str, replica: u32) -> Self {
        ReplicaId {
            pool: pool.to_string(),
            replica,
        }
    }

    /// What the name of every replica of `pool` starts with (`pool/r`).
    pub fn prefix_of_pool(pool: &str) -> String {
        format!("{pool}/r")
    }

    /// `pool/rN` taken apart; `None` unless `N` is a number written without leading zeros.
    pub fn parse(s: &str) -> Option<Self> {
        let (pool, n) = s.rsplit_once("/r")?;
        let canonical = !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
            && (n == "0" || !n.starts_with('0'));
        if pool.is_empty() || !canonical {
            return None;
        }
        Some(ReplicaId::new(pool, n.parse().ok()?))
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/r{}", self.pool, self.replica)
    }
}

/// What a step is, as its id says.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StepId {
    PreflightTools,
    GpuCheck,
    /// `<repo name>@<ref>`, `#<hash>` appended when two clones would share it.
    GitClone(String),
    /// `<repo name>@<ref>`, `#<hash>` appended when two builds would share it.
    CmakeConfigure(String),
    CmakeBuild(String),
    /// The model's file name, `#<hash>` appended when two models would share it.
    ModelResolve(String),
    /// The pool.
    VramFit(String),
    Spawn(ReplicaId),
    Probe(ReplicaId),
    Handoff(ReplicaId),
}

impl StepId {
    pub fn spawn(pool: &str, replica: u32) -> Self {
        StepId::Spawn(ReplicaId::new(pool, replica))
    }

    pub fn probe(pool: &str, replica: u32) -> Self {
        StepId::Probe(ReplicaId::new(pool, replica))
    }

    pub fn handoff(pool: &str, replica: u32) -> Self {
        StepId::Handoff(ReplicaId::new(pool, replica))
    }

    pub fn vram_fit(pool: &str) -> Self {
        StepId::VramFit(pool.to_string())
    }

    /// The step of `kind` for `replica`; `None` for a kind that is not a replica's.
    pub fn of_replica(kind: StepKind, replica: ReplicaId) -> Option<Self> {
        match kind {
            StepKind::Spawn => Some(StepId::Spawn(replica)),
            StepKind::Probe => Some(StepId::Probe(replica)),
            StepKind::Handoff => Some(StepId::Handoff(replica)),
            StepKind::PreflightTools
            | StepKind::GpuCheck
            | StepKind::GitClone
            | StepKind::CmakeConfigure
            | StepKind::CmakeBuild
            | StepKind::ModelResolve
            | StepKind::VramFit => None,
        }
    }

    pub fn kind(&self) -> StepKind {
        match self {
            StepId::PreflightTools => StepKind::PreflightTools,
            StepId::GpuCheck => StepKind::GpuCheck,
            StepId::GitClone(_) => StepKind::GitClone,
            StepId::CmakeConfigure(_) => StepKind::CmakeConfigure,
            StepId::CmakeBuild(_) => StepKind::CmakeBuild,
            StepId::ModelResolve(_) => StepKind::ModelResolve,
            StepId::VramFit(_) => StepKind::VramFit,
            StepId::Spawn(_) => StepKind::Spawn,
            StepId::Probe(_) => StepKind::Probe,
            StepId::Handoff(_) => StepKind::Handoff,
        }
    }

    /// The replica a spawn, probe or handoff step is of.
    pub fn replica(&self) -> Option<&ReplicaId> {
        match self {
            StepId::Spawn(r) | StepId::Probe(r) | StepId::Handoff(r) => Some(r),
            StepId::PreflightTools
            | StepId::GpuCheck
            | StepId::GitClone(_)
            | StepId::CmakeConfigure(_)
            | StepId::CmakeBuild(_)
            | StepId::ModelResolve(_)
            | StepId::VramFit(_) => None,
        }
    }

    /// The part after `<kind>:`; `None` for the kinds whose id is the kind alone.
    fn name(&self) -> Option<String> {
        match self {
            StepId::PreflightTools | StepId::GpuCheck => None,
            StepId::GitClone(n)
            | StepId::CmakeConfigure(n)
            | StepId::CmakeBuild(n)
            | StepId::ModelResolve(n)
            | StepId::VramFit(n) => Some(n.clone()),
            StepId::Spawn(r) | StepId::Probe(r) | StepId::Handoff(r) => Some(r.to_string()),
        }
    }

    /// An id taken apart; `None` for a string no [`StepId`] writes.
    pub fn parse(s: &str) -> Option<Self> {
        let (kind, name) = match s.split_once(':') {
            Some((k, n)) => (StepKind::parse(k)?, Some(n)),
            None => (StepKind::parse(s)?, None),
        };
        let named = |f: fn(String) -> StepId| name.filter(|n| !n.is_empty()).map(|n| f(n.into()));
        match kind {
            StepKind::PreflightTools => name.is_none().then_some(StepId::PreflightTools),
            StepKind::GpuCheck => name.is_none().then_some(StepId::GpuCheck),
            StepKind::GitClone => named(StepId::GitClone),
            StepKind::CmakeConfigure => named(StepId::CmakeConfigure),
            StepKind::CmakeBuild => named(StepId::CmakeBuild),
            StepKind::ModelResolve => named(StepId::ModelResolve),
            StepKind::VramFit => named(StepId::VramFit),
            StepKind::Spawn | StepKind::Probe | StepKind::Handoff => {
                StepId::of_replica(kind, ReplicaId::parse(name?)?)
            }
        }
    }

    /// The kind an id string names, without taking the rest apart.
    pub fn kind_of(s: &str) -> Option<StepKind> {
        StepKind::parse(s.split_once(':').map_or(s, |(k, _)| k))
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind().as_str())?;
        match self.name() {
            Some(name) => write!(f, ":{name}"),
            None => Ok(()),
        }
    }
}

impl From<StepId> for String {
    fn from(id: StepId) -> String {
        id.to_string()
    }
}

/// Serialised as its string, as in plans and state files.
impl serde::Serialize for StepId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for StepId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        StepId::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not a step id")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_of_each() -> Vec<(StepId, &'static str)> {
        vec![
            (StepId::PreflightTools, "preflight-tools"),
            (StepId::GpuCheck, "gpu-check"),
            (
                StepId::GitClone("llama.cpp@b4567".into()),
                "git-clone:llama.cpp@b4567",
            ),
            (
                StepId::CmakeConfigure("llama.cpp@refs/heads/x#0a1b2c3d".into()),
                "cmake-configure:llama.cpp@refs/heads/x#0a1b2c3d",
            ),
            (
                StepId::CmakeBuild("llama.cpp@b4567".into()),
                "cmake-build:llama.cpp@b4567",
            ),
            (
                StepId::ModelResolve("m.gguf".into()),
                "model-resolve:m.gguf",
            ),
            (StepId::vram_fit("pool-a"), "vram-fit:pool-a"),
            (StepId::spawn("pool-a", 0), "spawn:pool-a/r0"),
            (StepId::probe("p.1", 12), "probe:p.1/r12"),
            (StepId::handoff("a_b", 3), "handoff:a_b/r3"),
        ]
    }

    #[test]
    fn every_kind_round_trips_through_its_string() {
        let all = one_of_each();
        let kinds: Vec<StepKind> = all.iter().map(|(id, _)| id.kind()).collect();
        assert_eq!(kinds, StepKind::ALL, "one example per kind, in order");
        for (id, text) in all {
            assert_eq!(id.to_string(), text);
            assert_eq!(String::from(id.clone()), text);
            assert_eq!(StepId::parse(text), Some(id.clone()), "{text}");
            assert_eq!(StepId::kind_of(text), Some(id.kind()));
            let json = serde_json::to_string(&id).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<StepId>(&json).unwrap(), id);
        }
    }

    #[test]
    fn replica_ids_take_apart() {
        let id = StepId::parse("spawn:pool-a/r7").unwrap();
        assert_eq!(id.replica(), Some(&ReplicaId::new("pool-a", 7)));
        assert_eq!(ReplicaId::new("pool-a", 7).to_string(), "pool-a/r7");
        assert!("pool-a/r7".starts_with(&ReplicaId::prefix_of_pool("pool-a")));
        assert!(!"pool-ab/r7".starts_with(&ReplicaId::prefix_of_pool("pool-a")));
        assert_eq!(StepId::GpuCheck.replica(), None);
        assert_eq!(
            StepId::of_replica(StepKind::Probe, ReplicaId::new("x", 1)),
            Some(StepId::probe("x", 1))
        );
        assert_eq!(
            StepId::of_replica(StepKind::VramFit, ReplicaId::new("x", 1)),
            None
        );
    }

    #[test]
    fn strings_no_id_writes_do_not_parse() {
        for bad in [
            "",
            "spawn",
            "spawn:",
            "spawn:pool",
            "spawn:/r0",
            "spawn:p/r",
            "spawn:p/r01",
            "spawn:p/r-1",
            "spawn:p/r1x",
            "gpu-check:x",
            "preflight-tools:",
            "git-clone",
            "git-clone:",
            "vram-fit",
            "unknown:x",
            "Spawn:p/r0",
        ] {
            assert_eq!(StepId::parse(bad), None, "{bad:?}");
        }
        assert_eq!(StepId::kind_of("unknown:x"), None);
        let err = serde_json::from_str::<StepId>("\"spawn:p\"").unwrap_err();
        assert!(
            err.to_string().contains("`spawn:p` is not a step id"),
            "{err}"
        );
        assert_eq!(StepId::kind_of("gpu-check"), Some(StepKind::GpuCheck));
    }
}
