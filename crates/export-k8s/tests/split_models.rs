//! Models the pod's one-file downloader cannot fetch: `hf:ORG/REPO:QUANT` (a quant, not a
//! file) and split models (several files) are refused with what to do; a split model on a
//! claim is exported as its first shard.

mod common;

use common::*;
use provision_export_k8s::ExportOptions;
use provision_plan::Document;

fn export_of(model_ref: &str) -> Result<provision_export_k8s::Export, String> {
    let text = format!(
        "pools:
  - id: web
    engine: llamacpp
    model: big
    backend: cpu
    devices: []
    provisioning:
      mode: binary
      binary: {{path: /opt/llama-server}}
      model: {{ref: \"{model_ref}\"}}
"
    );
    let doc = Document::parse("split.yaml", text).unwrap();
    let valid = provision_plan::validate(&doc).unwrap_or_else(|e| panic!("{e}"));
    export_with(&valid, &ExportOptions::default()).map_err(|e| format!("{e:?}"))
}

#[test]
fn the_quant_form_and_downloadable_split_models_are_refused() {
    let err = export_of("hf:bartowski/Llama-3-8B-GGUF:Q4_K_M").unwrap_err();
    assert!(
        err.contains("names a quant") && err.contains("hf:bartowski/Llama-3-8B-GGUF/FILE.gguf"),
        "{err}"
    );
    for r in [
        "hf:org/L-GGUF/L-Q4_K_M-00001-of-00003.gguf",
        "https://host/m/L-Q4_K_M-00001-of-00003.gguf",
    ] {
        let err = export_of(r).unwrap_err();
        assert!(err.contains("split in 3 shards"), "{r}: {err}");
    }
    let local = export_of("./models/L-Q4_K_M-00001-of-00003.gguf").unwrap();
    let all = json_values(&local)
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(all.contains("L-Q4_K_M-00001-of-00003.gguf"));
}
