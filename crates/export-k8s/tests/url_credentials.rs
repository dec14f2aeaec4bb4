//! A model URL with credentials (userinfo, a signed query) is a secret: the manifests carry
//! it neither in the Deployment's annotation nor in the download container's `MODEL_URL`,
//! which comes from the pool's Secret; a URL without credentials stays inline.

mod common;

use common::*;
use provision_export_k8s::ExportOptions;
use provision_plan::Document;

const SECRETS: &[&str] = &["hunter2", "SIGVALUE", "CREDVALUE"];

fn export_of(url: &str) -> (String, Vec<serde_json::Value>, provision_export_k8s::Export) {
    let text = format!(
        "pools:
  - id: web
    engine: llamacpp
    model: tiny
    backend: cpu
    devices: []
    provisioning:
      mode: binary
      binary: {{path: /opt/llama-server}}
      model: {{ref: \"{url}\"}}
"
    );
    let doc = Document::parse("url.yaml", text).unwrap();
    let valid = provision_plan::validate(&doc).unwrap_or_else(|e| panic!("{e}"));
    let export = export_with(&valid, &ExportOptions::default()).unwrap();
    let values = json_values(&export);
    let all = values
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    (all, values, export)
}

fn model_url_env(values: &[serde_json::Value]) -> serde_json::Value {
    let d = values
        .iter()
        .find(|v| v["kind"] == "Deployment")
        .expect("a Deployment");
    let init = &d["spec"]["template"]["spec"]["initContainers"][0];
    init["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "MODEL_URL")
        .unwrap_or_else(|| panic!("no MODEL_URL in {init}"))
        .clone()
}

#[test]
fn a_model_url_with_credentials_comes_from_the_secret() {
    let (all, values, export) = export_of(
        "https://user:hunter2@models.example/m.gguf?X-Amz-Signature=SIGVALUE&X-Amz-Credential=CREDVALUE",
    );
    for s in SECRETS {
        assert!(!all.contains(s), "`{s}` is in the manifests:\n{all}");
    }
    let env = model_url_env(&values);
    assert_eq!(
        env["valueFrom"]["secretKeyRef"]["key"], "MODEL_URL",
        "{env}"
    );
    assert_eq!(env["valueFrom"]["secretKeyRef"]["name"], "web-secrets");
    assert!(env.get("value").is_none(), "{env}");
    assert_eq!(
        export.pools[0].secret,
        Some(("web-secrets".into(), vec!["MODEL_URL".to_string()]))
    );
    assert!(
        all.contains("https://<redacted>@models.example/m.gguf"),
        "{all}"
    );
}

#[test]
fn a_public_model_url_stays_inline() {
    let (_, values, export) = export_of("https://models.example/m.gguf");
    let env = model_url_env(&values);
    assert_eq!(env["value"], "https://models.example/m.gguf", "{env}");
    assert_eq!(export.pools[0].secret, None);
}

#[test]
fn an_external_url_with_credentials_is_redacted_in_the_warning() {
    let text = "pools:
  - id: web
    engine: llamacpp
    model: tiny
    backend: cpu
    devices: []
    provisioning:
      mode: binary
      binary: {path: /opt/llama-server}
      model: {ref: /models/tiny.gguf}
  - id: ext
    engine: llamacpp
    model: m
    backend: cpu
    devices: []
    provisioning:
      mode: external
      external: {url: \"http://user:hunter2@10.0.0.9:8080/?token=SIGVALUE\"}
";
    let doc = Document::parse("ext.yaml", text.into()).unwrap();
    let valid = provision_plan::validate(&doc).unwrap_or_else(|e| panic!("{e}"));
    let export = export_with(&valid, &ExportOptions::default()).unwrap();
    let warnings = export.warnings.join("\n");
    assert!(warnings.contains("external server"), "{warnings}");
    for s in SECRETS {
        assert!(!warnings.contains(s), "`{s}` is in a warning: {warnings}");
    }
}

#[test]
fn an_env_value_with_url_credentials_comes_from_the_secret() {
    let text = "pools:
  - id: web
    engine: llamacpp
    model: tiny
    backend: cpu
    devices: []
    provisioning:
      mode: binary
      binary: {path: /opt/llama-server}
      model: {ref: /models/tiny.gguf}
      env: {MIRROR: 'https://u:hunter2@mirror.example/x', LOG_LEVEL: info}
";
    let doc = Document::parse("env.yaml", text.into()).unwrap();
    let valid = provision_plan::validate(&doc).unwrap_or_else(|e| panic!("{e}"));
    let export = export_with(&valid, &ExportOptions::default()).unwrap();
    let all = json_values(&export)
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!all.contains("hunter2"), "{all}");
    assert_eq!(
        export.pools[0].secret,
        Some(("web-secrets".into(), vec!["MIRROR".to_string()]))
    );
}
