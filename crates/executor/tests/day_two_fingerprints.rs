//! Day two: after an upgrade, re-applying an unchanged config restarts nothing. The fingerprint
//! of every step of a config with an API key (as a flag, so given to the server in its
//! environment), a hugging-face token, a secret env entry, a credentialed and signed model URL,
//! a credentialed git URL and a credentialed external URL is the one an earlier provision
//! recorded in its state files (the values below were computed by the code before secrets moved
//! out of the specs into the plan's secrets table, issue 14 item 7). A change here restarts
//! every server of every user once: do not update these values unless that is the intent.

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
    model: https://bob:pw-0301@models.example/m.gguf?X-Amz-Credential=cred-0302&X-Amz-Signature=sig0303&page=2
    backend: cpu
    devices: []
    replicas: 2
    provisioning:
      mode: source
      source: {repo: 'https://ci:tok-0304@git.example/llama.cpp.git', ref: b4567}
      env: {DB_PASS: pass-0305, LOG_LEVEL: info, MIRROR: 'https://m:pw-0306@mirror.example/x'}
      flags: [--api-key, sk-0307, --hf-token, hf_0308, --metrics]
  - id: ext
    engine: llamacpp
    model: ext
    devices: []
    provisioning:
      mode: external
      external: {url: 'https://ops:pw-0309@gw.example:8443'}
";

/// The fingerprint as the executor's `decide` computes it, with no facts or dependencies.
fn fp(plan: &Plan, step: &Step) -> String {
    let mut facts = BTreeMap::new();
    if let Some(d) = secret_digest(step, plan.secrets.for_step(&step.id)) {
        facts.insert("secrets".to_string(), d);
    }
    fingerprint(&spec_value(step), &facts, &BTreeMap::new())
}

/// Recorded by the code before issue 14 item 7 (step id, fingerprint).
const RECORDED: &[(&str, &str)] = &[
    (
        "model-resolve:m.gguf",
        "39690bcce7869c29cf3158014f0655e7fef7bc8aa5584685f48adde31dbfe27e",
    ),
    (
        "preflight-tools",
        "803be5b84f327f35251714229280f46759b36a41d489a5b8606cdc63dfac36ea",
    ),
    (
        "git-clone:llama.cpp@b4567",
        "7c5ad550ffa696333bc3221d593b19fbf06c49562d658c61186ff2a762bd846c",
    ),
    (
        "cmake-configure:llama.cpp@b4567",
        "04ba136ab445e91f87b1090d91e29063d8b74c8ea10e3b441cbba237c33c3d15",
    ),
    (
        "cmake-build:llama.cpp@b4567",
        "7cc1a7ddbf634876c51a6eee0a1ff25e778df24167c8cb96c8ec623f5e59336e",
    ),
    (
        "probe:ext/r0",
        "6379070abb7cf230c33dd2a81b79133434658068861f893745438afd22c50c26",
    ),
    (
        "handoff:ext/r0",
        "3982581e4fc048a5cc338e837761649bb8aac7aee434ebc667c64db6ad58e5c0",
    ),
    (
        "spawn:web/r0",
        "1f1080827a37179c8bd52b537fd5a8ec2058e8a5b2181e71ff5742b06b63fd16",
    ),
    (
        "probe:web/r0",
        "59b1b7c128f8a6e51ad22abbe6eb246d8c66bbc04543748f2452b946baedc976",
    ),
    (
        "handoff:web/r0",
        "d3be25630678c26cdd5e9fe2a3b3b20585d18105b9f3dafd572e97cd5a401941",
    ),
    (
        "spawn:web/r1",
        "71d1b9e269db4eff3f2929f441f3a14030a52a4eae9aeec7e7aaafc50c73562e",
    ),
    (
        "probe:web/r1",
        "2a152aea43be6c74bc91812eacb633e4a119411730950cef7c0c19ae1255fb3a",
    ),
    (
        "handoff:web/r1",
        "ac90188cd1bb944bd2846b2203f25de75395f8b5e40cd1e3e3006ec101597953",
    ),
];

#[test]
fn an_unchanged_config_with_secrets_has_the_fingerprints_earlier_state_files_hold() {
    let plan = plan_of(CONFIG);
    let now: Vec<(String, String)> = plan
        .steps
        .iter()
        .map(|s| (s.id.clone(), fp(&plan, s)))
        .collect();
    let recorded: Vec<(String, String)> = RECORDED
        .iter()
        .map(|(i, f)| (i.to_string(), f.to_string()))
        .collect();
    assert_eq!(now, recorded);
}
