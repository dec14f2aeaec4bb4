//! Shared by the export tests: the fixture configs, loaded as `plan`'s tests load them, and
//! the option sets every fixture is exported with.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use provision_export_k8s::{
    export, Export, ExportError, ExportOptions, ModelVolume, NoModels, OutputFormat,
};
use provision_plan::{Document, ValidConfig};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Every fixture config: `fixtures/configs/*` and `fixtures/e2e/*.yaml`.
pub fn fixtures() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for (dir, yaml_only) in [("fixtures/configs", false), ("fixtures/e2e", true)] {
        for entry in std::fs::read_dir(repo().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if path.is_file() && (!yaml_only || ext == "yaml") {
                out.push(path);
            }
        }
    }
    out.sort();
    assert!(out.len() >= 6, "fixtures missing: {out:?}");
    out
}

/// A fixture validated under a machine-independent name.
pub fn load(path: &Path) -> ValidConfig {
    let rel = path.strip_prefix(repo()).unwrap().display().to_string();
    let text = std::fs::read_to_string(path).unwrap();
    let doc = Document::parse(&rel, text).unwrap_or_else(|e| panic!("{e}"));
    provision_plan::validate(&doc).unwrap_or_else(|e| panic!("{e}"))
}

/// The config directory every test export uses (relative paths resolve under it).
pub const CONFIG_DIR: &str = "/config";

pub fn export_with(valid: &ValidConfig, opts: &ExportOptions) -> Result<Export, ExportError> {
    export(valid, opts, Path::new(CONFIG_DIR), &NoModels)
}

/// The option sets exported for every fixture (where the fixture allows them): the default,
/// and one touching every option.
pub fn option_sets() -> Vec<(&'static str, ExportOptions)> {
    vec![
        ("default", ExportOptions::default()),
        (
            "all-options",
            ExportOptions {
                namespace: Some("inference".into()),
                image: Some("registry.example.com/llama.cpp:server-cuda-b4567".into()),
                model_claim: Some("models".into()),
                create_pvc: Some("50Gi".into()),
                storage_class: Some("fast-rwx".into()),
                max_surge: 1,
                secret: Some("llama-secrets".into()),
                ..ExportOptions::default()
            },
        ),
        (
            "host-path",
            ExportOptions {
                model_volume: ModelVolume::HostPath,
                model_dir: Some("/srv/models".into()),
                ..ExportOptions::default()
            },
        ),
        (
            "download",
            ExportOptions {
                model_volume: ModelVolume::Download,
                ..ExportOptions::default()
            },
        ),
    ]
}

/// Every resource of every fixture under every option set it accepts, as JSON values, with
/// where it came from. A download of a local model is refused (tested elsewhere).
pub fn all_exports() -> Vec<(String, Export)> {
    let mut out = Vec::new();
    for path in fixtures() {
        let valid = load(&path);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for (set, opts) in option_sets() {
            match export_with(&valid, &opts) {
                Ok(e) => out.push((format!("{name} ({set})"), e)),
                Err(ExportError::Usage { message, .. })
                    if set == "download" && message.contains("local file") => {}
                Err(e) => panic!("{name} ({set}): {e}"),
            }
        }
    }
    out
}

/// The documents of a rendered YAML stream, read back with serde_norway.
pub fn yaml_documents(text: &str) -> Vec<serde_json::Value> {
    assert!(text.is_empty() || text.starts_with("---\n"), "{text}");
    text.split("---\n")
        .filter(|d| !d.is_empty())
        .map(|d| serde_norway::from_str(d).unwrap_or_else(|e| panic!("{e}\n{d}")))
        .collect()
}

pub fn json_values(export: &Export) -> Vec<serde_json::Value> {
    export
        .resources()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect()
}

pub fn render(export: &Export, format: OutputFormat) -> String {
    provision_export_k8s::render(export, format)
}

/// A tiny llama GGUF written to `dir` (zero-filled tensors, written sparse).
pub fn tiny_gguf(dir: &Path, name: &str) -> PathBuf {
    use provision_steps_model::gguf_writer::{GgufWriter, LlamaShape};
    let path = dir.join(name);
    GgufWriter::llama(LlamaShape {
        n_layer: 4,
        n_embd: 64,
        n_head: 4,
        n_head_kv: 2,
        n_ff: 128,
        n_vocab: 1000,
        n_ctx_train: 2048,
        weight_type: 1, // F16
        output: true,
    })
    .write(&path)
    .unwrap();
    path
}

/// Exports whose models are on this machine: a CPU pool and a GPU pool reading a local GGUF
/// (memory requests), and a download of a URL model already in the cache (ephemeral storage).
pub fn memory_exports() -> Vec<(String, Export)> {
    let dir = tempfile::tempdir().unwrap();
    tiny_gguf(dir.path(), "tiny.gguf");
    let url = "https://models.example.com/tiny.gguf";
    let cached = provision_steps_model::resolve::url_dest(url, &dir.path().join("cache/models"));
    std::fs::create_dir_all(cached.parent().unwrap()).unwrap();
    tiny_gguf(cached.parent().unwrap(), "tiny.gguf");
    let config = format!(
        "pools:
  - {{id: cpu, engine: llamacpp, model: m, backend: cpu, devices: [], ctx: 512,
      provisioning: {{mode: binary, binary: {{path: /bin/llama-server}}, model: {{ref: ./tiny.gguf}}, flags: [--threads, '4']}}}}
  - {{id: gpu, engine: llamacpp, model: m, devices: [0, 1], ctx: 512,
      provisioning: {{mode: binary, binary: {{path: /bin/llama-server}}, model: {{ref: ./tiny.gguf}}}}}}
  - {{id: url, engine: llamacpp, model: m, devices: [0],
      provisioning: {{mode: binary, binary: {{path: /bin/llama-server}}, model: {{ref: '{url}'}}}}}}
"
    );
    let doc = Document::parse("memory.yaml", config).unwrap();
    let valid = provision_plan::validate(&doc).unwrap_or_else(|e| panic!("{e}"));
    let models = provision_export_k8s::LocalModels {
        config_dir: dir.path().to_path_buf(),
        cache_dir: dir.path().join("cache"),
        hf_hub_cache: dir.path().join("hub"),
    };
    let mut out = Vec::new();
    for (set, volume) in [
        ("pvc", ModelVolume::Pvc),
        ("download", ModelVolume::Download),
    ] {
        let opts = ExportOptions {
            model_volume: volume,
            pool: (volume == ModelVolume::Download).then(|| "url".to_string()),
            ..ExportOptions::default()
        };
        let e = export(&valid, &opts, dir.path(), &models).unwrap();
        out.push((format!("memory.yaml ({set})"), e));
    }
    out
}
