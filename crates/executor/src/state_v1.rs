//! Reading a state file of version 1, whose step outputs were untyped maps. Each record's
//! map becomes its kind's [`StepOutputs`] (the copies of a dependency's outputs some kinds
//! kept are dropped), and since a dependency's outputs are part of its dependents'
//! fingerprints, every fingerprint that the record itself reproduces is computed again over
//! the typed outputs, dependencies first. An unchanged config over running servers is then
//! as fresh after the upgrade as before it: nothing reruns, no server restarts.

use std::collections::{BTreeMap, HashMap};

use provision_plan::StepOutputs;
use serde_json::{Map, Value};

use crate::fingerprint::{dep_contribution, fingerprint};

/// What one record contributed to its dependents' fingerprints, before and after.
#[derive(Clone)]
struct Contribution {
    old: String,
    new: String,
}

/// A version-1 state (as JSON) as a version-2 one. Records are kept; what cannot be
/// read as typed outputs loses its fingerprint (the step runs again) and says why.
pub(crate) fn migrate(mut state: Value) -> Value {
    let Some(steps) = state.get_mut("steps").and_then(Value::as_object_mut) else {
        return state;
    };
    let mut typed: HashMap<String, Option<StepOutputs>> = HashMap::new();
    let mut old_outputs: HashMap<String, Value> = HashMap::new();
    for (id, record) in steps.iter_mut() {
        let kind = record["kind"].as_str().unwrap_or_default().to_string();
        let old = record.get("outputs").cloned().unwrap_or(Value::Null);
        let outputs = match StepOutputs::from_v1(&kind, &old) {
            Ok(o) => o,
            Err(why) => {
                tracing::warn!(step = %id, "state version 1: {why}; the step runs again");
                if let Some(r) = record.as_object_mut() {
                    r.remove("fingerprint");
                }
                None
            }
        };
        old_outputs.insert(id.clone(), outputs_of_v1(&old));
        typed.insert(id.clone(), outputs);
    }
    let ids: Vec<String> = steps.keys().cloned().collect();
    let mut done: HashMap<String, Contribution> = HashMap::new();
    for id in &ids {
        refingerprint(id, steps, &typed, &old_outputs, &mut done, &mut Vec::new());
    }
    for (id, record) in steps.iter_mut() {
        let r = record.as_object_mut().expect("records are objects");
        match typed.remove(id).flatten() {
            Some(o) => r.insert(
                "outputs".into(),
                serde_json::to_value(o).expect("serialises"),
            ),
            None => r.remove("outputs"),
        };
    }
    state["state_version"] = Value::from(2);
    state
}

/// Version 1's outputs as its contributions digested them (`{}` when absent).
fn outputs_of_v1(old: &Value) -> Value {
    match old {
        Value::Object(_) => old.clone(),
        _ => Value::Object(Map::new()),
    }
}

/// The record's fingerprint computed again over its dependencies' typed outputs, when its
/// recorded inputs reproduce the recorded fingerprint; its contribution, before and after.
fn refingerprint(
    id: &str,
    steps: &mut Map<String, Value>,
    typed: &HashMap<String, Option<StepOutputs>>,
    old_outputs: &HashMap<String, Value>,
    done: &mut HashMap<String, Contribution>,
    visiting: &mut Vec<String>,
) -> Option<Contribution> {
    if let Some(c) = done.get(id) {
        return Some(c.clone());
    }
    if visiting.iter().any(|v| v == id) {
        return None;
    }
    let record = steps.get(id)?.clone();
    let recorded = record
        .get("fingerprint")
        .and_then(Value::as_str)?
        .to_string();
    let deps: BTreeMap<String, String> =
        serde_json::from_value(record.get("deps").cloned().unwrap_or_default()).unwrap_or_default();
    let facts: BTreeMap<String, String> =
        serde_json::from_value(record.get("facts").cloned().unwrap_or_default())
            .unwrap_or_default();
    let spec = record.get("spec").cloned().unwrap_or(Value::Null);
    let new_fp = if fingerprint(&spec, &facts, &deps) == recorded {
        visiting.push(id.to_string());
        let mut new_deps = deps.clone();
        for (dep, contribution) in new_deps.iter_mut() {
            match refingerprint(dep, steps, typed, old_outputs, done, visiting) {
                Some(c) if c.old == *contribution => *contribution = c.new,
                _ => {}
            }
        }
        visiting.pop();
        let fp = fingerprint(&spec, &facts, &new_deps);
        let r = steps.get_mut(id)?.as_object_mut()?;
        r.insert(
            "deps".into(),
            serde_json::to_value(&new_deps).expect("serialises"),
        );
        r.insert("fingerprint".into(), Value::String(fp.clone()));
        fp
    } else {
        recorded.clone()
    };
    let new_outputs = crate::fingerprint::outputs_value(typed.get(id).and_then(Option::as_ref));
    // A gate contributes a constant now (its dependents' fingerprints do not include it).
    let gate = record
        .get("kind")
        .and_then(Value::as_str)
        .and_then(provision_plan::StepKind::parse)
        .is_some_and(provision_plan::StepKind::is_gate);
    let c = Contribution {
        old: dep_contribution(&recorded, old_outputs.get(id)?),
        new: if gate {
            crate::fingerprint::GATE_CONTRIBUTION.into()
        } else {
            dep_contribution(&new_fp, &new_outputs)
        },
    };
    done.insert(id.to_string(), c.clone());
    Some(c)
}

#[cfg(test)]
mod tests {
    use crate::fingerprint::{dep_contribution, fingerprint, outputs_value};
    use crate::state::{StateFile, StepStatus, STATE_VERSION};

    /// A state file main (fe34448) wrote over running servers: one record of every kind.
    const V1: &str = include_str!("../../../fixtures/state/v1-main.json");

    #[test]
    fn a_v1_state_reads_typed_and_every_fingerprint_is_what_a_fresh_apply_computes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, V1).unwrap();
        let state = StateFile::new(&path).load().unwrap();
        assert_eq!(state.state_version, STATE_VERSION);
        assert_eq!(state.steps.len(), 13);
        for (id, record) in &state.steps {
            assert_eq!(record.status, StepStatus::Passed, "{id}");
            let outputs = record.outputs.as_ref().expect("typed outputs");
            assert_eq!(outputs.kind().as_str(), record.kind, "{id}");
            // What apply computes for the step when its dependencies are fresh: their
            // contributions over their typed outputs, then its fingerprint.
            for (dep, contribution) in &record.deps {
                let d = &state.steps[dep];
                let gate = provision_plan::StepKind::parse(&d.kind).is_some_and(|k| k.is_gate());
                let expected = if gate {
                    crate::fingerprint::GATE_CONTRIBUTION.to_string()
                } else {
                    dep_contribution(
                        d.fingerprint.as_deref().unwrap(),
                        &outputs_value(d.outputs.as_ref()),
                    )
                };
                assert_eq!(*contribution, expected, "{id} <- {dep}");
            }
            let fp = fingerprint(&record.spec, &record.facts, &record.deps);
            assert_eq!(record.fingerprint.as_deref(), Some(fp.as_str()), "{id}");
        }
        // A step with no dependencies keeps its fingerprint; a dependent's changes with its
        // dependencies' outputs (now tagged with their kind).
        let old: serde_json::Value = serde_json::from_str(V1).unwrap();
        let fp = |id: &str| state.steps[id].fingerprint.clone().unwrap();
        let old_fp = |id: &str| {
            old["steps"][id]["fingerprint"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(fp("gpu-check"), old_fp("gpu-check"));
        assert_ne!(fp("git-clone:repo@v1"), old_fp("git-clone:repo@v1"));
        // Saved, it reads back as it is: the migration runs once.
        StateFile::new(&path).save(&state).unwrap();
        assert_eq!(StateFile::new(&path).load().unwrap(), state);
    }

    #[test]
    fn a_v1_record_whose_outputs_do_not_read_runs_again() {
        let mut old: serde_json::Value = serde_json::from_str(V1).unwrap();
        old["steps"]["spawn:c/r0"]["outputs"]["port"] = serde_json::json!("not a port");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, old.to_string()).unwrap();
        let state = StateFile::new(&path).load().unwrap();
        let spawn = &state.steps["spawn:c/r0"];
        assert_eq!(
            (spawn.fingerprint.as_ref(), spawn.outputs.as_ref()),
            (None, None)
        );
        assert!(state.steps["spawn:g/r0"].fingerprint.is_some());
    }
}
