//! What a replica's spawn and probe take from its other steps is in their specs (issue 14,
//! item 1): the handoff path, the API key (by reference; a flag's key never serialised) and
//! the ports other replicas fix. A changed input changes the spec the fingerprint hashes.

use std::collections::BTreeSet;

use provision_plan::config::SecretRef;
use provision_plan::step::{Probe, Spawn};
use provision_plan::{Document, Plan, PlanOptions, Roots, StepSpec};

fn plan_of(yaml: &str) -> Plan {
    let doc = Document::parse("pools.yaml", yaml.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let valid = provision_plan::validate(&doc).unwrap_or_else(|e| panic!("{e}"));
    provision_plan::plan(
        &valid,
        &PlanOptions {
            roots: Roots {
                cache: "/cache".into(),
                runtime: "/run/p".into(),
                config_dir: "/config".into(),
            },
            pool: None,
        },
    )
    .unwrap()
}

/// Pool `a` (`pool_extra` added to it, two replicas, automatic ports) and pool `b` (fixed
/// `ports`).
fn config(pool_extra: &str, flags: &str, b_port: u16) -> String {
    format!(
        "pools:
  - id: a
    engine: llamacpp
    model: m
    backend: cpu
    devices: []
    replicas: 2
{pool_extra}    provisioning:
      mode: binary
      binary: {{path: /opt/llama-server}}
      model: {{ref: /models/m.gguf}}
      flags: [--threads, '2'{flags}]
  - id: b
    engine: llamacpp
    model: m
    backend: cpu
    devices: []
    provisioning:
      mode: binary
      binary: {{path: /opt/llama-server}}
      model: {{ref: /models/m.gguf}}
      ports: [{b_port}]
"
    )
}

fn spawn(plan: &Plan, id: &str) -> Spawn {
    match &plan.steps.iter().find(|s| s.id == id).expect(id).spec {
        StepSpec::Spawn(s) => s.clone(),
        other => panic!("{id} is a {}", other.kind()),
    }
}

fn probe(plan: &Plan, id: &str) -> Probe {
    match &plan.steps.iter().find(|s| s.id == id).expect(id).spec {
        StepSpec::Probe(p) => p.clone(),
        other => panic!("{id} is a {}", other.kind()),
    }
}

/// The spec as the fingerprint hashes it (the executor's `spec_value`).
fn hashed(plan: &Plan, id: &str) -> serde_json::Value {
    let step = plan.steps.iter().find(|s| s.id == id).expect(id);
    serde_json::to_value(&step.spec).unwrap()
}

#[test]
fn spawn_and_probe_carry_the_handoff_path_of_their_replica() {
    let plan = plan_of(&config("    handoff_path: /srv/h/a.json\n", "", 9000));
    for r in 0..2 {
        let handoff = match &plan
            .steps
            .iter()
            .find(|s| s.id == format!("handoff:a/r{r}"))
            .unwrap()
            .spec
        {
            StepSpec::Handoff(h) => h.path.clone(),
            _ => unreachable!(),
        };
        assert_eq!(
            spawn(&plan, &format!("spawn:a/r{r}")).handoff_path,
            Some(handoff.clone())
        );
        assert_eq!(
            probe(&plan, &format!("probe:a/r{r}")).handoff_path,
            Some(handoff)
        );
    }
    // Another path: another spawn and probe (they withdraw the file there).
    let moved = plan_of(&config("    handoff_path: /srv/other/a.json\n", "", 9000));
    for id in ["spawn:a/r0", "probe:a/r0"] {
        assert_ne!(hashed(&plan, id), hashed(&moved, id), "{id}");
    }
}

#[test]
fn an_automatic_port_spawn_reserves_the_ports_other_replicas_fix() {
    let plan = plan_of(&config("", "", 9000));
    for id in ["spawn:a/r0", "spawn:a/r1"] {
        assert_eq!(
            spawn(&plan, id).reserved_ports,
            BTreeSet::from([9000]),
            "{id}"
        );
    }
    assert!(spawn(&plan, "spawn:b/r0").reserved_ports.is_empty());
}

#[test]
fn the_probe_carries_the_api_key_reference_and_a_changed_reference_changes_it() {
    let by_env = plan_of(&config("    api_key: {env: A_KEY}\n", "", 9000));
    let p = probe(&by_env, "probe:a/r1");
    assert_eq!(p.api_key, Some(SecretRef::Env("A_KEY".into())));
    assert_eq!(by_env.secrets.for_step("probe:a/r1").get("api_key"), None);
    assert_eq!(probe(&by_env, "probe:b/r0").api_key, None);
    let by_file = plan_of(&config("    api_key: {file: keys/a}\n", "", 9000));
    assert_eq!(
        probe(&by_file, "probe:a/r1").api_key,
        Some(SecretRef::File("${config_dir}/keys/a".into()))
    );
    assert_ne!(
        hashed(&by_env, "probe:a/r1"),
        hashed(&by_file, "probe:a/r1")
    );
}

#[test]
fn a_key_given_as_a_flag_reaches_the_probe_but_never_its_serialised_spec() {
    let key = "sk-probe-key-0001";
    let plan = plan_of(&config("", &format!(", --api-key, {key}"), 9000));
    let p = probe(&plan, "probe:a/r0");
    assert_eq!(p.api_key, None);
    assert_eq!(
        plan.secrets.for_step("probe:a/r0").get("api_key"),
        Some(key)
    );
    assert!(!plan.to_json().contains(key));
}

#[test]
fn a_plan_read_back_from_json_gets_its_reserved_ports_again_from_link() {
    // `reserved_ports` is not serialised (not identity): whoever applies a plan read back
    // from JSON links it again, and gets what the planner gave.
    let plan = plan_of(&config("", "", 9000));
    let mut back: Plan = serde_json::from_str(&plan.to_json()).unwrap();
    assert!(spawn(&back, "spawn:a/r0").reserved_ports.is_empty());
    provision_plan::replica_inputs::link(&mut back.steps);
    assert_eq!(
        spawn(&back, "spawn:a/r0").reserved_ports,
        BTreeSet::from([9000])
    );
    assert_eq!(back.to_json(), plan.to_json());
}
