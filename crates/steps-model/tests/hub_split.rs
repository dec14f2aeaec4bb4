//! Split models and `hf:ORG/REPO:QUANT` against the fake hub of `fake_hub`: every shard of an
//! `hf:` or URL ref of the first is fetched and verified (one commit for all), the quant form
//! picks the file or shard set from the repository's listing, and none or several matches
//! are errors that list what there is.

mod fake_hub;

use std::fs;
use std::path::PathBuf;

use fake_hub::*;
use provision_executor::Cancel;
use provision_plan::model_ref::ModelRef;
use provision_steps_model::gguf_writer::{GgufWriter, LlamaShape};
use provision_steps_model::resolve::facts_for;
use provision_steps_model::{locate, ModelInfo};

const REPO: &str = "org/Llama-GGUF";
const SPLIT: &str = "Q4_K_M/Llama-Q4_K_M";

/// A small model's 3 shards, `(name, bytes)`, named `<prefix>-0000k-of-00003.gguf`.
fn shards(prefix: &str) -> Vec<(String, Vec<u8>)> {
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
    w.split(3)
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("{prefix}-{:05}-of-00003.gguf", i + 1), s.to_bytes()))
        .collect()
}

/// The repository: a split Q4_K_M, a whole Q8_0 and a projector beside them.
fn hub_with_a_split_model() -> (Hub, Vec<(String, Vec<u8>)>) {
    let hub = Hub::start();
    let set = shards(SPLIT);
    for (name, bytes) in &set {
        hub.add(REPO, name, bytes.clone());
    }
    hub.add(REPO, "Llama-Q8_0.gguf", model_bytes());
    hub.add(REPO, "mmproj-Llama-Q4_K_M.gguf", model_bytes());
    (hub, set)
}

fn snapshot(s: &Setup, file: &str) -> PathBuf {
    s.hub_cache
        .join("models--org--Llama-GGUF/snapshots")
        .join(COMMIT)
        .join(file)
}

#[test]
fn an_hf_ref_of_the_first_shard_fetches_every_shard() {
    let (hub, set) = hub_with_a_split_model();
    let s = setup(&hub, None);
    let r = run(
        &s,
        &hf(&format!("hf:{REPO}/{SPLIT}-00001-of-00003.gguf")),
        None,
    )
    .unwrap();
    let paths: Vec<PathBuf> = set.iter().map(|(n, _)| snapshot(&s, n)).collect();
    assert_eq!(r.path, paths[0]);
    assert_eq!(r.shards, paths);
    for (path, (_, bytes)) in paths.iter().zip(&set) {
        assert_eq!(&fs::read(path).unwrap(), bytes);
    }
    let total: usize = set.iter().map(|(_, b)| b.len()).sum();
    assert_eq!((r.size, r.fetched), (total as u64, total as u64));
    assert_eq!(hub.state.lock().unwrap().cdn_gets.len(), 3);
    // The server's first shard stands for the whole model.
    let m = ModelInfo::open(&r.path).unwrap();
    assert_eq!((m.shards, m.block_count), (3, 4));

    // Every shard is in the facts: a new shard 3 on the hub changes them.
    let source = hf(&format!("hf:{REPO}/{SPLIT}-00001-of-00003.gguf"));
    let facts = facts_for(&source, &s.at, &s.env).unwrap();
    assert_eq!(facts["shard3.hf.etag"], sha(&set[2].1));
    let mut changed = set[2].1.clone();
    changed.push(0);
    hub.add(REPO, &set[2].0, changed.clone());
    let facts2 = facts_for(&source, &s.at, &s.env).unwrap();
    assert_eq!(facts2["shard3.hf.etag"], sha(&changed));
    assert_eq!(facts["hf.etag"], facts2["hf.etag"]);

    // A warm resolve fetches nothing more.
    let again = run(&s, &source, None).unwrap();
    assert_eq!(again.shards.len(), 3);
    assert_eq!(again.fetched, changed.len() as u64);
}

#[test]
fn a_shard_missing_on_the_hub_fails_naming_it() {
    let hub = Hub::start();
    let set = shards("L-Q4_0");
    for (name, bytes) in set.iter().take(2) {
        hub.add(REPO, name, bytes.clone());
    }
    let s = setup(&hub, None);
    let err = run(
        &s,
        &hf(&format!("hf:{REPO}/L-Q4_0-00001-of-00003.gguf")),
        None,
    )
    .unwrap_err();
    assert!(
        err.message.contains("L-Q4_0-00003-of-00003.gguf") && err.message.contains("not found"),
        "{err:?}"
    );
}

#[test]
fn a_url_of_the_first_shard_fetches_the_others_beside_it() {
    let (hub, set) = hub_with_a_split_model();
    let s = setup(&hub, None);
    let url = format!(
        "{}/{REPO}/resolve/main/{SPLIT}-00001-of-00003.gguf?download=true",
        hub.endpoint()
    );
    let r = run(&s, &ModelRef::Url { url }, None).unwrap();
    assert_eq!(r.shards.len(), 3);
    for (path, (name, bytes)) in r.shards.iter().zip(&set) {
        assert_eq!(path.parent(), r.path.parent());
        assert!(name.ends_with(path.file_name().unwrap().to_str().unwrap()));
        assert_eq!(&fs::read(path).unwrap(), bytes);
    }
    assert_eq!(ModelInfo::open(&r.path).unwrap().shards, 3);
}

#[test]
fn the_quant_form_picks_the_shard_set_or_the_file_of_the_tag() {
    let (hub, set) = hub_with_a_split_model();
    let s = setup(&hub, None);
    let r = run(&s, &hf(&format!("hf:{REPO}:q4_k_m")), None).unwrap();
    assert_eq!(r.path, snapshot(&s, &set[0].0));
    assert_eq!(r.shards.len(), 3);
    let facts = facts_for(&hf(&format!("hf:{REPO}:Q4_K_M")), &s.at, &s.env).unwrap();
    assert_eq!(facts["hf.file"], set[0].0);

    let r = run(&s, &hf(&format!("hf:{REPO}:Q8_0")), None).unwrap();
    assert_eq!(r.path, snapshot(&s, "Llama-Q8_0.gguf"));
    assert_eq!(r.shards, vec![r.path.clone()]);

    // `inspect` locates the same way, reading no more than headers.
    let env = s.env.clone();
    let l = locate(
        &hf(&format!("hf:{REPO}:Q4_K_M")),
        &s.at,
        &env,
        &Cancel::new(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(l.shards.len(), 3);
}

#[test]
fn the_quant_form_lists_the_quants_when_none_or_several_match() {
    let (hub, _) = hub_with_a_split_model();
    let s = setup(&hub, None);
    let err = run(&s, &hf(&format!("hf:{REPO}:Q5_K_M")), None).unwrap_err();
    assert!(
        err.message.contains("no model file has the quant `Q5_K_M`")
            && err.message.contains("quants available: Q4_K_M, Q8_0"),
        "{err:?}"
    );
    assert!(err.hint.unwrap().contains(&format!("hf:{REPO}:Q4_K_M")));

    hub.add(REPO, "v2/Llama-Q8_0.gguf", model_bytes());
    let err = run(&s, &hf(&format!("hf:{REPO}:Q8_0")), None).unwrap_err();
    assert!(
        err.message.contains("2 model files")
            && err.message.contains("Llama-Q8_0.gguf, v2/Llama-Q8_0.gguf"),
        "{err:?}"
    );
    assert!(err
        .hint
        .unwrap()
        .contains(&format!("hf:{REPO}/Llama-Q8_0.gguf")));

    // A split set and a checksum: the checksum is for one file.
    let err = run(
        &s,
        &hf(&format!("hf:{REPO}:Q4_K_M")),
        Some(&format!("sha256:{}", "0".repeat(64))),
    )
    .unwrap_err();
    assert!(err.message.contains("split model of 3 shards"), "{err:?}");

    // The repository itself is refused as a file would be.
    let err = run(&s, &hf("hf:private/Llama-GGUF:Q4_K_M"), None).unwrap_err();
    assert!(err.message.contains("401"), "{err:?}");
}

#[test]
fn the_quant_form_offline_picks_among_the_cached_files() {
    let (hub, _) = hub_with_a_split_model();
    let s = setup(&hub, None);
    let first = run(&s, &hf(&format!("hf:{REPO}:Q4_K_M")), None).unwrap();
    let mut offline = setup(&hub, None);
    offline.env = s.env.clone();
    offline.at = s.at.clone();
    offline.hub_cache = s.hub_cache.clone();
    offline.env.hf.endpoint = "http://127.0.0.1:9".into();
    let again = run(&offline, &hf(&format!("hf:{REPO}:Q4_K_M")), None).unwrap();
    assert_eq!(again.shards, first.shards);
}
