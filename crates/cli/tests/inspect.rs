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
    // Header only: no digest without `--verify`.
    assert_eq!(v["digest"], serde_json::Value::Null);
}

/// The GGUF header of `tiny` then a hole: a sparse file of `size` bytes.
fn sparse(path: &std::path::Path, size: u64) -> u64 {
    tiny(path);
    let header = std::fs::metadata(path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(size)
        .unwrap();
    header
}

/// `provision ARGS` run by a shell that then prints its own `/proc/<pid>/io`: a reaped child's
/// I/O is added to its parent's, so `rchar` is what the command read (plus the shell's few
/// bytes). The command's output, and the bytes it read.
fn provision_reading(args: &[&str], cache: &std::path::Path) -> (std::process::Output, u64) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#""$@" >&2; echo "exit $?"; cat /proc/$$/io"#)
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_provision"))
        .args(args)
        .arg("--cache-dir")
        .arg(cache)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let rchar = text
        .lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rchar in {text}"));
    (out, rchar)
}

/// The exit status `provision_reading`'s shell printed.
fn exit_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("exit "))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn inspect_reads_only_the_header_of_a_huge_file() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("huge.gguf");
    let size = 8 << 30;
    let header = sparse(&model, size);
    let started = std::time::Instant::now();
    let (out, rchar) = provision_reading(
        &["inspect", model.to_str().unwrap(), "--json"],
        &dir.path().join("cache"),
    );
    assert_eq!(
        exit_of(&out),
        "exit 0",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        rchar < header + (1 << 20),
        "inspect read {rchar} bytes of an {size}-byte file whose header is {header} bytes"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn inspect_verify_hashes_every_byte_and_compares_the_checksum() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.gguf");
    let size = 64 << 20;
    sparse(&model, size);
    let bytes = std::fs::read(&model).unwrap();
    let digest: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let digest = format!("sha256:{digest}");
    let m = model.to_str().unwrap();

    let (out, rchar) = provision_reading(
        &["inspect", m, "--json", "--verify", "--checksum", &digest],
        &dir.path().join("cache-1"),
    );
    assert_eq!(
        exit_of(&out),
        "exit 0",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(rchar >= size, "--verify read {rchar} of {size} bytes");
    let json_start = String::from_utf8_lossy(&out.stderr).into_owned();
    let v: serde_json::Value =
        serde_json::from_str(&json_start[json_start.find('{').expect("json on stdout")..]).unwrap();
    assert_eq!(v["digest"], digest.as_str());

    let wrong = format!("sha256:{}", "0".repeat(64));
    let (out, _) = provision_reading(
        &["inspect", m, "--verify", "--checksum", &wrong],
        &dir.path().join("cache-2"),
    );
    assert_eq!(exit_of(&out), "exit 1");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&digest),
        "the mismatch names what the file has: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A checksum means nothing without `--verify`; a malformed one is a usage error.
    let out = provision(
        &["inspect", m, "--checksum", &digest],
        &dir.path().join("c"),
    );
    assert_eq!(out.status.code(), Some(2));
    let out = provision(
        &["inspect", m, "--verify", "--checksum", "md5:x"],
        &dir.path().join("c"),
    );
    assert_eq!(out.status.code(), Some(2));
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

#[test]
fn inspect_of_a_first_shard_reports_the_whole_split_model() {
    let dir = tempfile::tempdir().unwrap();
    let shards = GgufWriter::llama_70b_q4_k_m()
        .write_split(dir.path(), "Llama-3.3-70B-Instruct-Q4_K_M", 3)
        .unwrap();
    let first = shards[0].to_str().unwrap();
    let cache = dir.path().join("cache");
    let out = provision(&["inspect", first, "--ctx", "4096", "--json"], &cache);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["model"]["shards"], 3);
    assert_eq!(v["files"].as_array().unwrap().len(), 3);
    let gib = |x: &serde_json::Value| x.as_u64().unwrap() as f64 / (1u64 << 30) as f64;
    // About 39.6 GiB of weights (the real file's 42.5 GB), not the first shard's third.
    let weights = gib(&v["model"]["weight_bytes"]);
    assert!((39.0..40.0).contains(&weights), "{weights} GiB");
    assert!(gib(&v["estimate"]["weights"]) > 38.0, "{}", v["estimate"]);
    let sizes: u64 = shards
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(v["size"], sizes);

    let out = provision(&["inspect", first, "--ctx", "4096"], &cache);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("split         3 shards"), "{text}");
    assert!(text.contains("tensors       723 (39."), "{text}");
}
