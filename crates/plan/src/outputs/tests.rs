use super::*;
use serde_json::Value;

/// A state file main (fe34448) wrote over running servers: one record of every kind.
const V1: &str = include_str!("../../../../fixtures/state/v1-main.json");

/// The keys a version-1 record had that its kind no longer records: copies of a dependency's.
fn dropped(kind: &str) -> &'static [&'static str] {
    match kind {
        "cmake-configure" => &["commit"],
        "cmake-build" => &["flags"],
        "vram-fit" => &["model_path"],
        "spawn" => &["engine_digest", "build_ref", "model_path"],
        "probe" => &[
            "pid",
            "pgid",
            "start_time",
            "boot_id",
            "instance",
            "port",
            "log",
            "pid_file",
            "binary",
            "engine_digest",
            "build_ref",
            "model_path",
            "backend",
            "devices",
            "started_at",
        ],
        _ => &[],
    }
}

#[test]
fn every_v1_record_reads_as_its_kind_and_keeps_all_but_the_copies() {
    let state: Value = serde_json::from_str(V1).unwrap();
    let mut kinds = Vec::new();
    for (id, record) in state["steps"].as_object().unwrap() {
        let kind = record["kind"].as_str().unwrap();
        let outputs = StepOutputs::from_v1(kind, &record["outputs"])
            .unwrap_or_else(|e| panic!("{id}: {e}"))
            .unwrap_or_else(|| panic!("{id}: no outputs"));
        assert_eq!(outputs.kind().as_str(), kind, "{id}");
        kinds.push(outputs.kind());
        // Round trip: what the state file now holds reads back as the same value.
        let json = serde_json::to_value(&outputs).unwrap();
        let back: StepOutputs = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, outputs, "{id}");
        // Every key but the copies is kept, with its value.
        let mut expected = record["outputs"].as_object().unwrap().clone();
        for k in dropped(kind) {
            expected.remove(*k);
        }
        let mut got = json.as_object().unwrap().clone();
        assert_eq!(got.remove("kind"), Some(Value::from(kind)));
        assert_eq!(got, expected, "{id}");
    }
    kinds.sort();
    kinds.dedup();
    assert_eq!(
        kinds,
        StepKind::ALL,
        "the fixture has one record of every kind"
    );
}

#[test]
fn no_outputs_and_unreadable_outputs_are_told_apart() {
    assert_eq!(
        StepOutputs::from_v1("spawn", &serde_json::json!({})),
        Ok(None)
    );
    let err = StepOutputs::from_v1("spawn", &serde_json::json!({"pid": "x"})).unwrap_err();
    assert!(err.contains("`spawn`"), "{err}");
    let err = StepOutputs::from_v1("spawn", &serde_json::json!({"pid": 0, "pgid": 0})).unwrap_err();
    assert!(err.contains("missing field"), "{err}");
    assert!(StepOutputs::from_v1("no-such-kind", &serde_json::json!({"a": 1})).is_err());
}

#[test]
fn typed_access_says_which_kind_it_is() {
    let o: StepOutputs = GitCloneOutputs {
        commit: "abc".into(),
        dir: "/d".into(),
    }
    .into();
    assert_eq!(
        o.get::<GitCloneOutputs>().map(|g| g.commit.as_str()),
        Some("abc")
    );
    assert_eq!(o.get::<SpawnOutputs>(), None);
    assert_eq!(o.kind(), GitCloneOutputs::KIND);
    assert_eq!(o.placeholder("model_path"), None);
    let m: StepOutputs = ModelResolveOutputs {
        path: "/m.gguf".into(),
        digest: "sha256:0".into(),
        size: 1,
        architecture: "llama".into(),
    }
    .into();
    assert_eq!(m.placeholder("model_path"), Some("/m.gguf"));
    assert_eq!(m.placeholder("port"), None);
}
