//! `provision inspect` on GGUF files written by the test.

use std::process::Command;

use provision_steps_model::gguf_writer::{GgufWriter, LlamaShape};

fn tiny(path: &std::path::Path) {
    GgufWriter::llama(LlamaShape {
        n_layer: 2,
        n_embd: 64,
        n_head: 4,
        n_head_kv: 2,
        n_ff: 128,
        n_vocab: 300,
        n_ctx_train: 4096,
        weight_type: 0,
        output: true,
    })
    .write(path)
    .unwrap();
}

fn provision(args: &[&str], cache: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_provision"))
        .args(args)
        .arg("--cache-dir")
        .arg(cache)
        .output()
        .unwrap()
}

#[test]
fn inspect_prints_metadata_and_the_estimate_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    tiny(&model);
    let out = provision(
        &["inspect", model.to_str().unwrap(), "--ctx", "256", "--json"],
        &dir.path().join("cache"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["model"]["architecture"], "llama");
    assert_eq!(v["model"]["block_count"], 2);
    assert_eq!(v["model"]["head_count_kv"], serde_json::json!([2, 2]));
    assert_eq!(v["model"]["context_length"], 4096);
    // 256 tokens × 2 layers × 2 KV heads × 16 × 2 × 2 bytes (see the steps-model tests).
    assert_eq!(v["estimate"]["kv_cache"], 65_536);
    // Both layers (147968 bytes each) and the output layer (77056).
    assert_eq!(v["estimate"]["weights"], 2 * 147_968 + 77_056);
    assert!(v["digest"].as_str().unwrap().starts_with("sha256:"));
}

#[test]
fn inspect_text_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    tiny(&model);
    let cache = dir.path().join("cache");
    let out = provision(&["inspect", model.to_str().unwrap()], &cache);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("architecture  llama"), "{text}");
    assert!(text.contains("memory at ctx 4096"), "{text}");

    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"not a model at all").unwrap();
    let out = provision(&["inspect", junk.to_str().unwrap()], &cache);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a GGUF file"));

    let out = provision(
        &["inspect", dir.path().join("absent.gguf").to_str().unwrap()],
        &cache,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));

    let out = provision(&["inspect", "s3://bucket/x.gguf"], &cache);
    assert_eq!(out.status.code(), Some(2));
}
