//! A pool's `listen.tls` in Kubernetes: the certificate and key come from a TLS Secret
//! (`kubectl create secret tls`), mounted read-only and passed as `--ssl-cert-file` /
//! `--ssl-key-file`; the kubelet's probes speak HTTPS. No path of the config's files is in the
//! manifests.

mod common;

use common::*;
use provision_export_k8s::ExportOptions;
use provision_plan::Document;

#[test]
fn tls_files_come_from_a_tls_secret() {
    let text = "pools:
  - id: web
    engine: llamacpp
    model: tiny
    backend: cpu
    devices: []
    listen: {host: 0.0.0.0, tls: {cert_file: tls/web.crt, key_file: tls/web.key}}
    api_key: {env: WEB_KEY}
    provisioning:
      mode: binary
      binary: {path: /opt/llama-server}
      model: {ref: /models/tiny.gguf}
";
    let doc = Document::parse("tls.yaml", text.into()).unwrap();
    let valid = provision_plan::validate(&doc).unwrap_or_else(|e| panic!("{e}"));
    let export = export_with(&valid, &ExportOptions::default()).unwrap();
    let values = json_values(&export);
    let pod = &values
        .iter()
        .find(|v| v["kind"] == "Deployment")
        .expect("a Deployment")["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let args = args.join(" ");
    assert!(
        args.contains("--ssl-cert-file /etc/llama-server/tls/tls.crt --ssl-key-file /etc/llama-server/tls/tls.key"),
        "{args}"
    );
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "tls")
        .unwrap_or_else(|| panic!("no tls volume in {pod}"));
    assert_eq!(volume["secret"]["secretName"], "web-tls");
    assert_eq!(volume["secret"]["defaultMode"], 0o400);
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "tls")
        .unwrap();
    assert_eq!(mount["mountPath"], "/etc/llama-server/tls");
    assert_eq!(mount["readOnly"], true);
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(c[probe]["httpGet"]["scheme"], "HTTPS", "{probe}");
    }
    assert!(!pod.to_string().contains("web.crt") && !pod.to_string().contains("web.key"));
    assert_eq!(export.pools[0].tls_secret.as_deref(), Some("web-tls"));
}

#[test]
fn a_pool_without_tls_has_no_tls_volume() {
    let valid = load(&repo().join("fixtures/configs/two-gpu-pools-shared-build.yaml"));
    let export = export_with(&valid, &ExportOptions::default()).unwrap();
    assert!(export.pools.iter().all(|p| p.tls_secret.is_none()));
    assert!(!render(&export, provision_export_k8s::OutputFormat::Yaml).contains("HTTPS"));
}
