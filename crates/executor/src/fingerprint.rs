//! Fingerprints: the hash of what a step is. Canonical JSON of the step spec, the facts
//! resolved about the world, what its dependencies contributed, and a format version. No
//! timestamps or machine noise.

use std::collections::BTreeMap;

use provision_plan::secret_placeholder::shown_json;
use provision_plan::secrets::StepSecrets;
use provision_plan::Step;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use provision_plan::StepOutputs;

/// Bumped when the fingerprint inputs change meaning.
pub const FINGERPRINT_VERSION: u32 = 1;

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Canonical JSON: `serde_json::Value` keeps object keys sorted.
pub fn canonical(value: &Value) -> String {
    serde_json::to_string(value).expect("JSON values serialise")
}

/// The step as it goes into the fingerprint and the state file: its kind and spec, without the
/// list of pools that share it (a new pool sharing a build must not rebuild it), each
/// `${secret:NAME}` placeholder `<redacted>` (what specs held there before secrets moved into
/// the plan's secrets table: state files keep their fingerprints, and a secret's name is not
/// what the step is).
pub fn spec_value(step: &Step) -> Value {
    shown_json(&serde_json::to_value(&step.spec).expect("step specs serialise"))
}

/// A digest of the step's secrets (never stored themselves), so a changed `--api-key`
/// restarts the server without the key appearing anywhere. `secrets` is the step's entry of
/// the plan's secrets table.
pub fn secret_digest(step: &Step, secrets: &StepSecrets) -> Option<String> {
    let (field, secrets) = step.spec.secret_input(secrets)?;
    let mut v = json!({"domain": "provision-secret-v1", "id": step.id});
    v[field] = secrets;
    Some(sha256_hex(canonical(&v).as_bytes()))
}

/// A step's outputs as its contribution digests them: `{}` for none.
pub fn outputs_value(outputs: Option<&StepOutputs>) -> Value {
    outputs.map_or_else(
        || json!({}),
        |o| serde_json::to_value(o).expect("outputs serialise"),
    )
}

/// What a finished dependency contributes to its dependents' fingerprints: its own
/// fingerprint and its outputs ([`outputs_value`]: a rebuilt binary with a new digest dirties
/// the spawn).
pub fn dep_contribution(fingerprint: &str, outputs: &Value) -> String {
    let v = json!({"fingerprint": fingerprint, "outputs": outputs});
    sha256_hex(canonical(&v).as_bytes())
}

/// What a gate step ([`provision_plan::StepKind::is_gate`]) contributes to its dependents'
/// fingerprints, whatever it recorded: running it again changes none of them.
pub const GATE_CONTRIBUTION: &str = "gate";

/// What `step`, finished or fresh with `fingerprint` and `outputs`, contributes to its
/// dependents' fingerprints: [`dep_contribution`], or [`GATE_CONTRIBUTION`] for a gate.
pub fn contribution_of(step: &Step, fingerprint: &str, outputs: Option<&StepOutputs>) -> String {
    if step.spec.step_kind().is_gate() {
        return GATE_CONTRIBUTION.into();
    }
    dep_contribution(fingerprint, &outputs_value(outputs))
}

pub fn fingerprint(
    spec: &Value,
    facts: &BTreeMap<String, String>,
    deps: &BTreeMap<String, String>,
) -> String {
    let v = json!({
        "format": FINGERPRINT_VERSION,
        "spec": spec,
        "facts": facts,
        "deps": deps,
    });
    sha256_hex(canonical(&v).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_input_changes_the_fingerprint_and_order_does_not() {
        let spec = json!({"kind": "x", "a": 1, "b": 2});
        let spec_reordered: Value =
            serde_json::from_str(r#"{"b": 2, "kind": "x", "a": 1}"#).unwrap();
        let facts: BTreeMap<String, String> = [("commit".to_string(), "abc".to_string())].into();
        let deps = BTreeMap::new();
        let base = fingerprint(&spec, &facts, &deps);
        assert_eq!(base, fingerprint(&spec_reordered, &facts, &deps));
        assert_ne!(
            base,
            fingerprint(&json!({"kind": "x", "a": 1, "b": 3}), &facts, &deps)
        );
        assert_ne!(base, fingerprint(&spec, &BTreeMap::new(), &deps));
        let deps2: BTreeMap<String, String> = [("d".to_string(), "1".to_string())].into();
        assert_ne!(base, fingerprint(&spec, &facts, &deps2));
        assert_eq!(base.len(), 64);
    }
}
