//! Secrets never reach a plan (JSON or text), and never a server's argv: `--api-key` and
//! `--hf-token` go to the server's environment; URL credentials (userinfo, signed query
//! parameters) and secret env values are `${secret:NAME}` placeholders in the specs (their
//! values in the plan's secrets table, which is never serialised) and `<redacted>` where a
//! plan shows them to a person.

use provision_plan::{Document, Plan, PlanOptions, Roots, StepSpec};

const PASSWORD: &str = "pw-in-the-url-0001";
const SIGNATURE: &str = "f00dfeedsignature0002";
const DB_PASS: &str = "db-pass-value-0003";
const API_KEY: &str = "sk-api-key-0004";
const HF_TOKEN: &str = "hf_token_0005";
const EXTERNAL_PW: &str = "external-pw-0006";
const DECLARED: &str = "declared-secret-0007";

fn plan_of(yaml: &str) -> Plan {
    let doc = Document::parse("secrets.yaml", yaml.to_string()).unwrap_or_else(|e| panic!("{e}"));
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

fn config(extra_provisioning: &str) -> String {
    format!(
        "pools:
  - id: web
    engine: llamacpp
    model: https://bob:{PASSWORD}@models.example/m.gguf?X-Amz-Expires=60&X-Amz-Signature={SIGNATURE}
    backend: cpu
    devices: []
    provisioning:
      mode: binary
      binary: {{path: /opt/llama-server}}
      env: {{DB_PASS: {DB_PASS}, LOG_LEVEL: info}}
      flags: [--api-key, {API_KEY}, --hf-token, {HF_TOKEN}, --threads, '2']
{extra_provisioning}  - id: ext
    engine: llamacpp
    model: ext
    devices: []
    provisioning:
      mode: external
      external: {{url: 'https://ops:{EXTERNAL_PW}@gw.example:8443'}}
"
    )
}

/// The secret `name` of the first step whose id starts with `prefix`.
fn secret<'p>(plan: &'p Plan, prefix: &str, name: &str) -> Option<&'p str> {
    let step = plan.steps.iter().find(|s| s.id.starts_with(prefix))?;
    plan.secrets.for_step(&step.id).get(name)
}

fn spawn(plan: &Plan) -> provision_plan::step::Spawn {
    plan.steps
        .iter()
        .find_map(|s| match &s.spec {
            StepSpec::Spawn(sp) => Some(sp.clone()),
            _ => None,
        })
        .expect("a spawn step")
}

#[test]
fn url_credentials_and_secret_env_never_appear_in_plans() {
    let plan = plan_of(&config(""));
    let json = plan.to_json();
    let text = provision_plan::render_text(&plan);
    for secret in [PASSWORD, SIGNATURE, DB_PASS, API_KEY, HF_TOKEN, EXTERNAL_PW] {
        assert!(
            !json.contains(secret),
            "{secret} leaked into the JSON:\n{json}"
        );
        assert!(
            !text.contains(secret),
            "{secret} leaked into the text:\n{text}"
        );
    }
    assert!(json.contains("X-Amz-Signature=<redacted>"), "{json}");
    assert!(
        json.contains("X-Amz-Signature=${secret:source.X-Amz-Signature}"),
        "{json}"
    );
    assert!(
        json.contains("https://<redacted>@gw.example:8443"),
        "{json}"
    );
    assert!(
        json.contains("https://${secret:url.userinfo}@gw.example:8443"),
        "{json}"
    );
    assert!(!text.contains("${secret:"), "{text}");
    // Non-secrets stay readable.
    assert!(json.contains("X-Amz-Expires=60") && json.contains("\"LOG_LEVEL\": \"info\""));
}

#[test]
fn secret_flags_reach_the_server_in_its_environment_not_its_argv() {
    let plan = plan_of(&config(""));
    let sp = spawn(&plan);
    let argv = sp.argv.join(" ");
    assert!(
        !argv.contains("--api-key") && !argv.contains("--hf-token") && !argv.contains(API_KEY),
        "{argv}"
    );
    assert!(argv.contains("--threads 2"), "{argv}");
    assert_eq!(sp.env["LLAMA_API_KEY"], "${secret:env.LLAMA_API_KEY}");
    assert_eq!(sp.env["HF_TOKEN"], "${secret:env.HF_TOKEN}");
    assert_eq!(sp.env["DB_PASS"], "${secret:env.DB_PASS}");
    assert_eq!(secret(&plan, "spawn:", "env.LLAMA_API_KEY"), Some(API_KEY));
    assert_eq!(secret(&plan, "spawn:", "env.HF_TOKEN"), Some(HF_TOKEN));
    assert_eq!(secret(&plan, "spawn:", "env.DB_PASS"), Some(DB_PASS));
}

#[test]
fn secret_env_lists_more_names() {
    let plan = plan_of(&config("      secret_env: [DB_URL]\n").replace(
        "LOG_LEVEL: info",
        &format!("LOG_LEVEL: info, DB_URL: {DECLARED}"),
    ));
    assert!(!plan.to_json().contains(DECLARED));
    assert_eq!(secret(&plan, "spawn:", "env.DB_URL"), Some(DECLARED));
}

#[test]
fn the_real_values_stay_for_apply_and_the_redactor_knows_them() {
    let plan = plan_of(&config(""));
    let model = plan
        .steps
        .iter()
        .find_map(|s| match &s.spec {
            StepSpec::ModelResolve(m) => Some(m.clone()),
            _ => None,
        })
        .unwrap();
    match model.source {
        provision_plan::model_ref::ModelRef::Url { url } => assert_eq!(
            url,
            "https://${secret:source.userinfo}@models.example/m.gguf?X-Amz-Expires=60&X-Amz-Signature=${secret:source.X-Amz-Signature}"
        ),
        other => panic!("{other:?}"),
    }
    let userinfo = format!("bob:{PASSWORD}");
    assert_eq!(
        secret(&plan, "model-resolve:", "source.userinfo"),
        Some(userinfo.as_str())
    );
    assert_eq!(
        secret(&plan, "model-resolve:", "source.X-Amz-Signature"),
        Some(SIGNATURE)
    );
    let ops = format!("ops:{EXTERNAL_PW}");
    assert_eq!(
        secret(&plan, "probe:ext/", "url.userinfo"),
        Some(ops.as_str())
    );
    let r = provision_plan::redact::Redactor::for_plan(&plan);
    let line = format!("{API_KEY} {HF_TOKEN} {DB_PASS} {PASSWORD} {SIGNATURE} {EXTERNAL_PW}");
    assert_eq!(r.redact(&line), ["<redacted>"; 6].join(" "));
}

#[test]
fn an_env_value_holding_url_credentials_is_secret_whatever_its_name() {
    const MIRROR_PW: &str = "mirror-pw-0008";
    let plan = plan_of(&config("").replace(
        "LOG_LEVEL: info",
        &format!("LOG_LEVEL: info, MIRROR: 'https://u:{MIRROR_PW}@mirror.example/x'"),
    ));
    assert!(!plan.to_json().contains(MIRROR_PW), "{}", plan.to_json());
    assert!(!provision_plan::render_text(&plan).contains(MIRROR_PW));
    let sp = spawn(&plan);
    assert_eq!(sp.env["MIRROR"], "${secret:env.MIRROR}");
    assert_eq!(sp.env["LOG_LEVEL"], "info");
    assert!(secret(&plan, "spawn:", "env.MIRROR")
        .unwrap()
        .contains(MIRROR_PW));
    let redactor = provision_plan::redact::Redactor::for_plan(&plan);
    assert!(!redactor
        .redact(&format!("the server said {MIRROR_PW}"))
        .contains(MIRROR_PW));
}

#[test]
fn text_that_looks_like_a_placeholder_is_refused_wherever_it_is() {
    // Steps expand `${secret:…}`: as a literal it would never reach a server, a URL or a file
    // as written, and two such values would share a fingerprint.
    for (from, to, field) in [
        (
            "LOG_LEVEL: info",
            "LOG_LEVEL: info, TEMPLATE: 'x ${secret:env.LOG_LEVEL} y'",
            "env.TEMPLATE",
        ),
        ("LOG_LEVEL: info", "'K${secret:k}': v", "env.K${secret:k}"),
        (
            "--threads",
            "'--alias', 'al${secret:b}', --threads",
            "flags[5]",
        ),
    ] {
        let yaml = config("").replace(from, to);
        let doc = Document::parse("secrets.yaml", yaml).unwrap();
        let err = provision_plan::validate(&doc).unwrap_err().to_string();
        assert!(err.contains("reserves for the placeholders"), "{err}");
        assert!(err.contains(field), "{field}: {err}");
    }
    // A secret env name with odd characters is still a secret (by its name).
    let plan =
        plan_of(&config("").replace("LOG_LEVEL: info", "LOG_LEVEL: info, 'ODD}PASS': pw-0009"));
    let sp = spawn(&plan);
    let id = plan
        .steps
        .iter()
        .find(|s| s.id.starts_with("spawn:"))
        .unwrap()
        .id
        .clone();
    let secrets = plan.secrets.for_step(&id);
    assert_eq!(secrets.expand(&id, &sp.env["ODD}PASS"]).unwrap(), "pw-0009");
    assert!(!plan.to_json().contains("pw-0009"));
}
