//! Memory requests from the model's GGUF header, when the model is on this machine; checked
//! against the estimate's rule worked out by hand for a tiny model.

mod common;

use common::*;
use provision_steps_model::ModelInfo;
use serde_json::Value;

const MIB: u64 = 1024 * 1024;

fn container<'a>(values: &'a [Value], name: &str) -> &'a Value {
    &values
        .iter()
        .find(|v| v["kind"] == "Deployment" && v["metadata"]["name"] == name)
        .unwrap()["spec"]["template"]["spec"]["containers"][0]
}

fn mebibytes(bytes: u64) -> String {
    format!("{}Mi", bytes.div_ceil(MIB))
}

fn margin(base: u64) -> u64 {
    512 * MIB + (base as f64 * 0.05).ceil() as u64
}

#[test]
fn memory_requests_follow_the_estimate() {
    let dir = tempfile::tempdir().unwrap();
    let info = ModelInfo::open(&tiny_gguf(dir.path(), "tiny.gguf")).unwrap();
    // The tiny model: 4 layers, 64 embd, 4 heads (2 KV, head dim 16), ff 128, vocab 1000, F16.
    assert_eq!(info.input_bytes, 1000 * 64 * 2);

    let exports = memory_exports();
    let values = json_values(&exports[0].1);

    // GPU pool, every layer offloaded: the host keeps the token embeddings only.
    let gpu = container(&values, "gpu");
    let host = info.input_bytes;
    assert_eq!(
        gpu["resources"]["requests"]["memory"],
        mebibytes(host + margin(host))
    );
    assert_eq!(gpu["resources"]["limits"]["nvidia.com/gpu"], "2");
    assert!(gpu["resources"]["requests"].get("cpu").is_none());

    // CPU pool at ctx 512, one slot: everything is in host memory.
    let cpu = container(&values, "cpu");
    let weights: u64 = info.layer_bytes.iter().sum::<u64>() + info.output_bytes;
    let kv = 512 * 4 * 2 * (16 + 16) * 2; // ctx × layers × KV heads × (K + V dims) × f16
    let hidden = 4 * 512 * (3 * 64 + 2 * 128); // F32 × ubatch × (3 embd + 2 ff)
                                               // F32 × ubatch × ctx × (heads + the mask), without flash attention.
    let scores = 4 * 512 * 4 * 512 + 4 * 512 * 512;
    let logits = 4 * 512 * 1000; // F32 × ubatch × vocab
    let compute = hidden + u64::max(scores, logits);
    let host = info.input_bytes + weights + kv + compute;
    assert_eq!(
        cpu["resources"]["requests"]["memory"],
        mebibytes(host + margin(host))
    );
    assert_eq!(cpu["resources"]["requests"]["cpu"], "4");
    assert!(cpu["resources"].get("limits").is_none());

    // A downloaded model's size is asked for as ephemeral storage (the emptyDir).
    let values = json_values(&exports[1].1);
    let url = container(&values, "url");
    let size = std::fs::metadata(dir.path().join("tiny.gguf"))
        .unwrap()
        .len();
    assert_eq!(
        url["resources"]["requests"]["ephemeral-storage"],
        mebibytes(size)
    );
    assert!(url["resources"]["requests"]["memory"].is_string());
}

#[test]
fn without_a_readable_model_there_is_no_memory_request() {
    // The fixtures' models are not on this machine (NoModels): no memory anywhere.
    for (name, export) in all_exports() {
        let text = serde_json::to_string(&json_values(&export)).unwrap();
        assert!(!text.contains("\"memory\""), "{name}");
    }
    // A file that is not a GGUF: a warning, no request.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.gguf"), b"not a gguf").unwrap();
    let doc = provision_plan::Document::parse(
        "bad.yaml",
        "pools:\n  - {id: p, engine: llamacpp, model: m, backend: cpu, devices: [], provisioning: {mode: binary, binary: {path: /x}, model: {ref: ./bad.gguf}}}\n".into(),
    )
    .unwrap();
    let valid = provision_plan::validate(&doc).unwrap();
    let models = provision_export_k8s::LocalModels {
        config_dir: dir.path().into(),
        cache_dir: dir.path().join("cache"),
        hf_hub_cache: dir.path().join("hub"),
    };
    let e = provision_export_k8s::export(&valid, &Default::default(), dir.path(), &models).unwrap();
    assert!(
        e.warnings.iter().any(|w| w.contains("no memory request")),
        "{:?}",
        e.warnings
    );
    assert!(!serde_json::to_string(&json_values(&e))
        .unwrap()
        .contains("\"memory\""));
}

/// An `hf:` model already in the Hugging Face cache (a revision resolved by an earlier apply)
/// is read from there, without the network.
#[test]
fn hf_models_are_found_in_the_hub_cache() {
    use provision_export_k8s::ModelLookup;
    let dir = tempfile::tempdir().unwrap();
    let hub = dir.path().join("hub");
    let repo_dir = hub.join("models--Org--Tiny-GGUF");
    let commit = "a".repeat(40);
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs/main"), &commit).unwrap();
    let snapshot = repo_dir.join("snapshots").join(&commit);
    std::fs::create_dir_all(&snapshot).unwrap();
    let file = tiny_gguf(&snapshot, "tiny.gguf");
    let doc = provision_plan::Document::parse(
        "hf.yaml",
        "pools:\n  - {id: p, engine: llamacpp, model: m, devices: [0], provisioning: {mode: binary, binary: {path: /x}, model: {ref: 'hf:Org/Tiny-GGUF/tiny.gguf'}}}\n".into(),
    )
    .unwrap();
    let valid = provision_plan::validate(&doc).unwrap();
    let models = provision_export_k8s::LocalModels {
        config_dir: dir.path().into(),
        cache_dir: dir.path().join("cache"),
        hf_hub_cache: hub.clone(),
    };
    assert_eq!(models.local_path(&valid.pools[0]), Some(file));
    let e = provision_export_k8s::export(&valid, &Default::default(), dir.path(), &models).unwrap();
    assert!(serde_json::to_string(&json_values(&e))
        .unwrap()
        .contains("\"memory\""));
    // Another revision is not in the cache: nothing found.
    std::fs::remove_file(repo_dir.join("refs/main")).unwrap();
    assert_eq!(models.local_path(&valid.pools[0]), None);
}
