//! Split GGUF models (`-00001-of-0000N.gguf`, as llama.cpp's `gguf-split` writes them), on
//! sparse shards written here: the model info and the fit count every shard, a broken set is
//! an error naming the file, and a local ref resolves, verifies and fingerprints every shard.

use std::fs;
use std::path::{Path, PathBuf};

use provision_executor::Cancel;
use provision_plan::model_ref::ModelRef;
use provision_steps_model::digest::DigestCache;
use provision_steps_model::estimate::{estimate, FitInput, GpuLayers};
use provision_steps_model::gguf_writer::GgufWriter;
use provision_steps_model::hf::HfEnv;
use provision_steps_model::resolve::{facts_for, NOT_HASHED};
use provision_steps_model::{resolve, ModelEnv, ModelInfo, Where};

const GIB: u64 = 1 << 30;
const PREFIX: &str = "Llama-3.3-70B-Instruct-Q4_K_M";

/// The 70B Q4_K_M in 3 sparse shards in `dir`; their paths.
fn seventy_b(dir: &Path) -> Vec<PathBuf> {
    GgufWriter::llama_70b_q4_k_m()
        .write_split(dir, PREFIX, 3)
        .unwrap()
}

/// Every tensor's bytes, as the writer lays them out.
fn all_weights() -> u64 {
    GgufWriter::llama_70b_q4_k_m()
        .split(1)
        .iter()
        .map(|w| {
            let (header, size) = w.header();
            size - header.len() as u64
        })
        .sum()
}

#[test]
fn the_first_shard_stands_for_every_weight_of_a_70b_in_three() {
    let dir = tempfile::tempdir().unwrap();
    let shards = seventy_b(dir.path());
    let m = ModelInfo::open(&shards[0]).unwrap();
    assert_eq!(m.shards, 3);
    assert_eq!(m.weight_bytes, all_weights());
    // About 42.5 GB, as the real file: not the first shard's third of it.
    assert!(
        (39 * GIB..40 * GIB).contains(&m.weight_bytes),
        "{} GiB",
        m.weight_bytes as f64 / GIB as f64
    );
    let first_only =
        ModelInfo::from_gguf(&provision_steps_model::Gguf::open(&shards[0]).unwrap()).unwrap();
    assert!(first_only.weight_bytes < m.weight_bytes / 2);
    // Every layer, wherever its shard, and the output layer (in the last shard).
    assert_eq!(m.block_count, 80);
    assert!(
        m.layer_bytes.iter().all(|&b| b > 400 << 20),
        "{:?}",
        m.layer_bytes
    );
    assert!(m.output_bytes > 800 << 20);
    let sizes: u64 = shards.iter().map(|p| fs::metadata(p).unwrap().len()).sum();
    assert_eq!(m.file_size, sizes);
    assert_eq!(m.tensor_count, 2 + 1 + 80 * 9);
}

#[test]
fn a_70b_in_three_shards_does_not_fit_one_3090() {
    let dir = tempfile::tempdir().unwrap();
    let shards = seventy_b(dir.path());
    let m = ModelInfo::open(&shards[0]).unwrap();
    let input = FitInput {
        ctx: 4096,
        parallel: 1,
        per_slot_ctx: false,
        gpu_layers: GpuLayers::All,
        tensor_split: None,
        kv_bytes_k: 2.0,
        kv_bytes_v: 2.0,
        flash_attn: false,
        n_ubatch: 512,
    };
    let free_3090 = 23 * GIB + 600 * (1 << 20);
    let e = estimate(&m, &input, &[(0, free_3090)]);
    let d = &e.devices[0];
    assert!(d.weights > 38 * GIB, "{d:?}");
    assert!(!e.fits(), "{d:?}");
}

#[test]
fn a_missing_or_foreign_shard_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let shards = seventy_b(dir.path());

    // Shard 3 in the place of shard 2.
    GgufWriter::llama_70b_q4_k_m().split(3)[2]
        .write(&shards[1])
        .unwrap();
    let err = ModelInfo::open(&shards[0]).unwrap_err().to_string();
    assert!(
        err.contains(&shards[1].display().to_string()) && err.contains("split.no"),
        "{err}"
    );

    fs::remove_file(&shards[2]).unwrap();
    seventy_b(dir.path());
    fs::remove_file(&shards[2]).unwrap();
    let err = ModelInfo::open(&shards[0]).unwrap_err().to_string();
    assert!(
        err.contains(&shards[2].display().to_string()) && err.contains("missing"),
        "{err}"
    );

    // Another split of the same model: the tensor count does not add up.
    seventy_b(dir.path());
    let two = GgufWriter::llama_70b_q4_k_m().split(2);
    two[1].write(&shards[1]).unwrap();
    let err = ModelInfo::open(&shards[0]).unwrap_err().to_string();
    assert!(err.contains("split"), "{err}");
}

#[test]
fn a_later_shard_is_refused_for_the_first_and_a_renamed_shard_too() {
    let dir = tempfile::tempdir().unwrap();
    let shards = seventy_b(dir.path());
    let err = ModelInfo::open(&shards[1]).unwrap_err().to_string();
    assert!(
        err.contains("shard 2 of 3") && err.contains(&format!("{PREFIX}-00001-of-00003.gguf")),
        "{err}"
    );
    let renamed = dir.path().join("llama-70b.gguf");
    fs::rename(&shards[0], &renamed).unwrap();
    let err = ModelInfo::open(&renamed).unwrap_err().to_string();
    assert!(
        err.contains("split in 3") && err.contains("-00001-of-00003.gguf"),
        "{err}"
    );
}

fn place(dir: &Path) -> (Where, ModelEnv) {
    (
        Where {
            cache_dir: dir.join("models"),
            digests: DigestCache::new(dir.join("models/digests.json")),
            base_dir: dir.to_path_buf(),
        },
        ModelEnv {
            hf: HfEnv {
                endpoint: "http://127.0.0.1:9".into(),
                token: None,
                hub_cache: dir.join("hf"),
            },
        },
    )
}

/// A small model in 3 shards (so hashing them is quick).
fn small_split(dir: &Path) -> Vec<PathBuf> {
    use provision_steps_model::gguf_writer::LlamaShape;
    let w = GgufWriter::llama(LlamaShape {
        n_layer: 4,
        n_embd: 64,
        n_head: 4,
        n_head_kv: 2,
        n_ff: 128,
        n_vocab: 300,
        n_ctx_train: 512,
        weight_type: 0,
        output: true,
    });
    let mut paths = Vec::new();
    for (i, shard) in w.split(3).iter().enumerate() {
        let p = dir.join(format!("small-{:05}-of-00003.gguf", i + 1));
        fs::write(&p, shard.to_bytes()).unwrap();
        paths.push(p);
    }
    paths
}

#[test]
fn a_local_split_ref_resolves_every_shard_and_any_shard_changes_its_facts() {
    let dir = tempfile::tempdir().unwrap();
    let shards = small_split(dir.path());
    let (at, env) = place(dir.path());
    let source = ModelRef::parse(&shards[0].display().to_string()).unwrap();
    let cancel = Cancel::new();
    let r = resolve(&source, None, &at, &env, &cancel, &mut |_| {}).unwrap();
    assert_eq!(r.path, shards[0]);
    assert_eq!(r.shards, shards);
    let size: u64 = shards.iter().map(|p| fs::metadata(p).unwrap().len()).sum();
    assert_eq!(r.size, size);
    assert_eq!(r.bytes_read, size);
    let facts = facts_for(&source, &at, &env).unwrap();
    assert!(facts.contains_key("shard3.digest"), "{facts:?}");

    // Shard 3 rewritten with other bytes: the facts and the digest change.
    let mut bytes = fs::read(&shards[2]).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&shards[2], bytes).unwrap();
    // The check reads no shard: shard 3's digest waits for the run.
    let facts2 = facts_for(&source, &at, &env).unwrap();
    assert_eq!(facts2["shard3.digest"], NOT_HASHED);
    assert_eq!(facts2["shard2.digest"], facts["shard2.digest"]);
    let r2 = resolve(&source, None, &at, &env, &cancel, &mut |_| {}).unwrap();
    assert_ne!(r.digest, r2.digest);
    let facts3 = facts_for(&source, &at, &env).unwrap();
    assert_ne!(facts["shard3.digest"], facts3["shard3.digest"]);
    assert_ne!(facts3["shard3.digest"], NOT_HASHED);

    // A checksum is for one file.
    let err = resolve(
        &source,
        Some(&format!("sha256:{}", "0".repeat(64))),
        &at,
        &env,
        &cancel,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(err.message.contains("split model of 3 shards"), "{err:?}");

    // A missing shard.
    fs::remove_file(&shards[1]).unwrap();
    let err = resolve(&source, None, &at, &env, &cancel, &mut |_| {}).unwrap_err();
    assert!(
        err.message.contains("shard 2 of 3")
            && err.message.contains(&shards[1].display().to_string()),
        "{err:?}"
    );
}
