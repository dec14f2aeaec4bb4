//! A pool's `api_key` (by reference) reaches the container from the pool's Secret, as
//! `LLAMA_API_KEY`; neither the reference's value nor a flag is in the manifests.

mod common;

use common::*;
use provision_export_k8s::ExportOptions;
use provision_plan::Document;

#[test]
fn the_api_key_comes_from_the_secret() {
    let text = "pools:
  - id: web
    engine: llamacpp
    model: tiny
    backend: cpu
    devices: []
    listen: {host: 0.0.0.0}
    api_key: {env: WEB_KEY}
    provisioning:
      mode: binary
      binary: {path: /opt/llama-server}
      model: {ref: /models/tiny.gguf}
";
    let doc = Document::parse("api-key.yaml", text.into()).unwrap();
    let valid = provision_plan::validate(&doc).unwrap_or_else(|e| panic!("{e}"));
    let export = export_with(&valid, &ExportOptions::default()).unwrap();
    let values = json_values(&export);
    let c = &values
        .iter()
        .find(|v| v["kind"] == "Deployment")
        .expect("a Deployment")["spec"]["template"]["spec"]["containers"][0];
    let env = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "LLAMA_API_KEY")
        .unwrap_or_else(|| panic!("no LLAMA_API_KEY in {c}"));
    assert_eq!(env["valueFrom"]["secretKeyRef"]["key"], "LLAMA_API_KEY");
    assert_eq!(env["valueFrom"]["secretKeyRef"]["name"], "web-secrets");
    assert!(env.get("value").is_none());
    assert!(!c.to_string().contains("WEB_KEY") && !c.to_string().contains("--api-key"));
    let pool = &export.pools[0];
    assert_eq!(
        pool.secret,
        Some(("web-secrets".into(), vec!["LLAMA_API_KEY".to_string()]))
    );
}
