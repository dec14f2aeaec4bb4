//! The inputs a replica's steps take from the replica's *other* steps, copied into their specs
//! once the plan's steps are all known, so that no step reads the plan while it runs (and each
//! input is in the spec its fingerprint hashes):
//!
//! - spawn and probe: the path of the replica's handoff file (withdrawn while the server
//!   changes or is not ready);
//! - spawn with an automatic port: the ports the plan's other replicas are configured for;
//! - probe: the API key its server gets, to ask `/metrics`: by reference in its spec, or, given
//!   as a flag or env value, as its secret `api_key` in the plan's secrets table
//!   ([`link_secrets`]).

use std::collections::{BTreeMap, BTreeSet};

use crate::secret_placeholder::names_in;
use crate::secrets::Secrets;
use crate::step::{PortSpec, Step, StepSpec};
use crate::step_id::StepId;

/// Fill in the replica inputs of every spawn and probe step of `steps`.
pub fn link(steps: &mut [Step]) {
    let handoffs: BTreeMap<(String, u32), String> = steps
        .iter()
        .filter_map(|s| match &s.spec {
            StepSpec::Handoff(h) => Some(((h.pool.clone(), h.replica), h.path.clone())),
            _ => None,
        })
        .collect();
    let fixed: Vec<((String, u32), u16)> = steps
        .iter()
        .filter_map(|s| match &s.spec {
            StepSpec::Spawn(sp) => match sp.port {
                PortSpec::Fixed { port } => Some(((sp.pool.clone(), sp.replica), port)),
                PortSpec::Auto { .. } => None,
            },
            _ => None,
        })
        .collect();
    let keys: BTreeMap<(String, u32), crate::config::SecretRef> = steps
        .iter()
        .filter_map(|s| match &s.spec {
            StepSpec::Spawn(sp) => Some(((sp.pool.clone(), sp.replica), sp.api_key.clone()?)),
            _ => None,
        })
        .collect();
    for step in steps.iter_mut() {
        match &mut step.spec {
            StepSpec::Spawn(sp) => {
                let me = (sp.pool.clone(), sp.replica);
                sp.handoff_path = handoffs.get(&me).cloned();
                if let PortSpec::Auto { .. } = sp.port {
                    sp.reserved_ports = fixed
                        .iter()
                        .filter(|(other, _)| *other != me)
                        .map(|(_, port)| *port)
                        .collect::<BTreeSet<u16>>();
                }
            }
            StepSpec::Probe(p) => {
                let me = (p.pool.clone(), p.replica);
                p.handoff_path = handoffs.get(&me).cloned();
                p.api_key = keys.get(&me).cloned();
            }
            _ => {}
        }
    }
}

/// Give each probe whose server gets its API key as a flag or env value (not by reference)
/// that key as its secret `api_key`, from its spawn's secrets.
pub fn link_secrets(steps: &[Step], secrets: &mut Secrets) {
    for step in steps {
        let StepSpec::Spawn(sp) = &step.spec else {
            continue;
        };
        let key_env = crate::engine::planned(sp.engine).api_key_env();
        let Some(shown) = sp.env.get(key_env).filter(|_| sp.api_key.is_none()) else {
            continue;
        };
        let key = secrets.for_step(&step.id).expand_known(shown);
        if !names_in(&key).is_empty() {
            continue;
        }
        let probe = StepId::probe(&sp.pool, sp.replica).to_string();
        let mut entry = secrets.for_step(&probe).clone();
        entry.insert(PROBE_API_KEY, key);
        secrets.set(probe, entry);
    }
}

/// The name of a probe's secret API key.
pub const PROBE_API_KEY: &str = "api_key";
