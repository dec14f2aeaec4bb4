//! A plan read back from JSON and given its secrets from their sources
//! (`provision_plan::secrets::read_back`) has, step for step, the fingerprints of the in-memory
//! plan: nothing reruns or restarts because the plan went through JSON. Without its secrets it
//! would not (the secret digests differ), which is why the read-back path must restore them.

use std::collections::BTreeMap;

use provision_executor::fingerprint::{fingerprint, secret_digest, spec_value};
use provision_plan::{Document, Plan, PlanOptions, Roots, Step};

fn plan_of(yaml: &str) -> Plan {
    let doc = Document::parse("fp.yaml", yaml.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let valid = provision_plan::validate(&doc).unwrap_or_else(|e| panic!("{e}"));
    let roots = Roots {
        cache: "/cache".into(),
        runtime: "/run/p".into(),
        config_dir: "/config".into(),
    };
    provision_plan::plan(&valid, &PlanOptions { roots, pool: None }).unwrap()
}

const CONFIG: &str = "pools:
  - id: web
    engine: llamacpp
    model: https://bob:pw-0201@models.example/m.gguf?X-Amz-Signature=sig0202
    backend: cpu
    devices: []
    replicas: 2
    provisioning:
      mode: source
      source: {repo: 'https://ci:tok-0203@git.example/llama.cpp.git', ref: b4567}
      env: {DB_PASS: pass-0204, LOG_LEVEL: info}
      flags: [--api-key, sk-0205, --hf-token, hf_0206, --metrics]
  - id: ext
    engine: llamacpp
    model: ext
    devices: []
    provisioning:
      mode: external
      external: {url: 'https://ops:pw-0207@gw.example:8443'}
";

/// The fingerprint as the executor's `decide` computes it, with no facts or dependencies.
fn fp(plan: &Plan, step: &Step) -> String {
    let mut facts = BTreeMap::new();
    if let Some(d) = secret_digest(step, plan.secrets.for_step(&step.id)) {
        facts.insert("secrets".to_string(), d);
    }
    fingerprint(&spec_value(step), &facts, &BTreeMap::new())
}

fn fingerprints(plan: &Plan) -> Vec<(String, String)> {
    plan.steps
        .iter()
        .map(|s| (s.id.clone(), fp(plan, s)))
        .collect()
}

#[test]
fn every_step_of_a_plan_read_back_has_the_in_memory_fingerprint() {
    let plan = plan_of(CONFIG);
    let json = plan.to_json();
    let back = provision_plan::secrets::read_back(&json, &plan_of(CONFIG)).unwrap();
    assert_eq!(fingerprints(&back), fingerprints(&plan));

    // Read back bare, the secret digests differ: the spawns and the clone would run again.
    let bare: Plan = serde_json::from_str(&json).unwrap();
    let differ: Vec<String> = fingerprints(&bare)
        .into_iter()
        .zip(fingerprints(&plan))
        .filter(|(a, b)| a != b)
        .map(|(a, _)| a.0)
        .collect();
    assert!(
        differ.iter().any(|id| id.starts_with("spawn:web/r1")),
        "{differ:?}"
    );
    assert!(
        differ.iter().any(|id| id.starts_with("git-clone:")),
        "{differ:?}"
    );
}
