//! A plan written as JSON never holds a secret, so a plan read back from JSON has none: it
//! must get them again from their sources (the config, the environment, files: planning the
//! config again, as apply does) and then be exactly the in-memory plan, or be refused naming
//! each step and secret it lacks. It never runs without them.

use provision_plan::secrets::{missing, read_back, Secrets};
use provision_plan::{Document, Plan, PlanOptions, Roots};

const PASSWORD: &str = "pw-in-the-url-0101";
const SIGNATURE: &str = "f00dfeedsignature0102";
const DB_PASS: &str = "db-pass-value-0103";
const API_KEY: &str = "sk-api-key-0104";
const HF_TOKEN: &str = "hf_token_0105";
const EXTERNAL_PW: &str = "external-pw-0106";
const GIT_TOKEN: &str = "git-token-0107";

fn plan_of(yaml: &str) -> Plan {
    let doc = Document::parse("read-back.yaml", yaml.to_string()).unwrap_or_else(|e| panic!("{e}"));
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

/// Every kind of secret a plan carries: URL credentials of a model, a repository and an
/// external server, secret env values, `--api-key` and `--hf-token`; and two replicas with
/// automatic and fixed ports (the derived `reserved_ports`).
fn config() -> String {
    format!(
        "pools:
  - id: web
    engine: llamacpp
    model: https://bob:{PASSWORD}@models.example/m.gguf?X-Amz-Expires=60&X-Amz-Signature={SIGNATURE}
    backend: cpu
    devices: []
    replicas: 2
    provisioning:
      mode: source
      source: {{repo: 'https://ci:{GIT_TOKEN}@git.example/llama.cpp.git', ref: b4567}}
      env: {{DB_PASS: {DB_PASS}, LOG_LEVEL: info}}
      flags: [--api-key, {API_KEY}, --hf-token, {HF_TOKEN}, --threads, '2']
  - id: fixed
    engine: llamacpp
    model: /models/m.gguf
    backend: cpu
    devices: []
    provisioning:
      mode: binary
      binary: {{path: /opt/llama-server}}
      ports: [8091]
  - id: ext
    engine: llamacpp
    model: ext
    devices: []
    provisioning:
      mode: external
      external: {{url: 'https://ops:{EXTERNAL_PW}@gw.example:8443'}}
"
    )
}

fn from_json(json: &str) -> Plan {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}\n{json}"))
}

#[test]
fn a_plan_read_back_from_json_and_given_its_secrets_is_the_in_memory_plan() {
    let plan = plan_of(&config());
    let json = plan.to_json();
    for secret in [
        PASSWORD,
        SIGNATURE,
        DB_PASS,
        API_KEY,
        HF_TOKEN,
        EXTERNAL_PW,
        GIT_TOKEN,
    ] {
        assert!(!json.contains(secret), "{secret} in the JSON:\n{json}");
    }
    // From the sources, as apply gets them: the config planned again.
    let back = read_back(&json, &plan_of(&config())).unwrap_or_else(|e| panic!("{e}"));
    // `Plan`'s equality compares every field, the never-serialised ones included (secret
    // values, reserved ports): what the steps run with, their fingerprints, argv and env.
    assert_eq!(back, plan);
    for (a, b) in back.steps.iter().zip(&plan.steps) {
        assert_eq!(
            a.spec.secret_input(back.secrets.for_step(&a.id)),
            b.spec.secret_input(plan.secrets.for_step(&b.id)),
            "{}",
            a.id
        );
    }
}

#[test]
fn the_secrets_table_is_keyed_by_step_id_and_names_without_values_in_its_debug() {
    let plan = plan_of(&config());
    let table = Secrets::of(&plan);
    let names = table.names();
    let has = |step: &str, name: &str| {
        names
            .iter()
            .any(|(s, n)| s.starts_with(step) && n.as_str() == name)
    };
    assert!(has("spawn:web/r0", "env.LLAMA_API_KEY"), "{names:?}");
    assert!(has("spawn:web/r1", "env.HF_TOKEN"), "{names:?}");
    assert!(has("spawn:web/r0", "env.DB_PASS"), "{names:?}");
    assert!(has("git-clone:", "repo.userinfo"), "{names:?}");
    assert!(has("model-resolve:", "source.userinfo"), "{names:?}");
    assert!(has("model-resolve:", "source.X-Amz-Signature"), "{names:?}");
    assert!(has("probe:ext/", "url.userinfo"), "{names:?}");
    assert!(has("probe:web/r0", "api_key"), "{names:?}");
    assert!(!has("spawn:web/r0", "env.LOG_LEVEL"), "{names:?}");
    // Neither the table's nor the plan's `Debug` (a failed assertion, a log) shows a value.
    let debug = format!("{table:?} {plan:?} {plan:#?}");
    assert!(
        debug.contains("env.LLAMA_API_KEY") && debug.contains("reserved_ports: {8091}"),
        "{}",
        debug.len()
    );
    for secret in [
        PASSWORD,
        SIGNATURE,
        DB_PASS,
        API_KEY,
        HF_TOKEN,
        EXTERNAL_PW,
        GIT_TOKEN,
    ] {
        assert!(!debug.contains(secret), "{secret} in the Debug text");
    }
}

#[test]
fn a_plan_read_back_without_its_secrets_names_every_one_it_lacks() {
    let plan = plan_of(&config());
    let mut bare = from_json(&plan.to_json());
    provision_plan::replica_inputs::link(&mut bare.steps);
    let lacking: Vec<String> = missing(&bare).iter().map(|m| m.to_string()).collect();
    let all = lacking.join("\n");
    for want in [
        "git-clone:",
        "model-resolve:",
        "spawn:web/r0",
        "secret `env.LLAMA_API_KEY`",
        "secret `env.DB_PASS`",
        "probe:ext/",
    ] {
        assert!(all.contains(want), "{want} not in:\n{all}");
    }
    // Sources that no longer have them (the config changed): refused, naming what is missing.
    let other = plan_of(
        &config()
            .replace(&format!("DB_PASS: {DB_PASS}, "), "")
            .replace(&format!("ci:{GIT_TOKEN}@"), ""),
    );
    let err = read_back(&plan.to_json(), &other).unwrap_err().to_string();
    assert!(err.contains("DB_PASS"), "{err}");
    assert!(err.contains("git-clone:"), "{err}");
    assert!(err.contains("plan again"), "{err}");
    assert!(!err.contains(DB_PASS) && !err.contains(GIT_TOKEN), "{err}");
}

#[test]
fn a_plan_without_secrets_reads_back_as_it_is() {
    let yaml = "pools:
  - id: a
    engine: llamacpp
    model: /models/m.gguf
    backend: cpu
    devices: []
    provisioning:
      mode: source
      source: {repo: 'https://git.example/llama.cpp.git', ref: b4567}
      env: {LOG_LEVEL: info}
";
    let plan = plan_of(yaml);
    assert!(Secrets::of(&plan).names().is_empty());
    let back = read_back(&plan.to_json(), &plan_of(yaml)).unwrap();
    assert_eq!(back, plan);
}

#[test]
fn a_plan_of_another_version_or_not_a_plan_is_refused() {
    let plan = plan_of(&config());
    let json = plan
        .to_json()
        .replacen("\"plan_version\": 2", "\"plan_version\": 99", 1);
    let err = read_back(&json, &plan).unwrap_err().to_string();
    assert!(
        err.contains("plan_version 99") && err.contains("plan again"),
        "{err}"
    );
    let err = read_back("{\"pools\": 1}", &plan).unwrap_err().to_string();
    assert!(err.contains("not a provision plan"), "{err}");
}

#[test]
fn a_secret_url_for_another_address_than_the_saved_plan_shows_is_not_taken() {
    let plan = plan_of(&config());
    // Same step ids, other hosts behind the credentials.
    let moved = plan_of(
        &config()
            .replace("git.example", "other-git.example")
            .replace("models.example", "other-models.example")
            .replace("gw.example", "other-gw.example"),
    );
    let err = read_back(&plan.to_json(), &moved).unwrap_err().to_string();
    for step in ["git-clone:", "probe:ext/r0"] {
        assert!(err.contains(step), "{step} not in {err}");
    }
    assert!(
        !err.contains(GIT_TOKEN) && !err.contains(EXTERNAL_PW),
        "{err}"
    );
}
