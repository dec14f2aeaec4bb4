//! The inputs a replica's steps take from the replica's *other* steps, copied into their specs
//! once the plan's steps are all known, so that no step reads the plan while it runs (and each
//! input is in the spec its fingerprint hashes):
//!
//! - spawn and probe: the path of the replica's handoff file (withdrawn while the server
//!   changes or is not ready);
//! - spawn with an automatic port: the ports the plan's other replicas are configured for;
//! - probe: the API key its server gets (by reference; a key given as a flag or env value
//!   only in the never-serialised `secret_api_key`), to ask `/metrics`.

use std::collections::{BTreeMap, BTreeSet};

use crate::redact::REDACTED;
use crate::step::{PortSpec, Step, StepSpec};

/// The variable llama-server reads its API key from.
pub const API_KEY_ENV: &str = "LLAMA_API_KEY";

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
    let keys: BTreeMap<(String, u32), ApiKey> = steps
        .iter()
        .filter_map(|s| match &s.spec {
            StepSpec::Spawn(sp) => Some(((sp.pool.clone(), sp.replica), api_key(sp))),
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
                if let Some(key) = keys.get(&me) {
                    p.api_key = key.reference.clone();
                    p.secret_api_key = key.value.clone();
                }
            }
            _ => {}
        }
    }
}

/// The API key a spawn gives its server: by reference, or its value from the secret env.
struct ApiKey {
    reference: Option<crate::config::SecretRef>,
    value: Option<String>,
}

fn api_key(sp: &crate::step::Spawn) -> ApiKey {
    match &sp.api_key {
        Some(reference) => ApiKey {
            reference: Some(reference.clone()),
            value: None,
        },
        None => ApiKey {
            reference: None,
            value: sp
                .secret_env
                .get(API_KEY_ENV)
                .or_else(|| sp.env.get(API_KEY_ENV))
                .filter(|k| *k != REDACTED)
                .cloned(),
        },
    }
}
