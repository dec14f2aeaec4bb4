//! Files provision does not own are never overwritten, truncated or deleted, and commands that
//! only read write nothing: `down` removes a handoff only while it holds what provision wrote
//! and never re-expands a planned path; a `--state` that is not a provision state (and its
//! `.lock` neighbour) is left alone; a `handoff_path` aimed at the config, the state or the
//! cache is refused; every unreadable state exits 4 from every command; `--grace` must be a
//! real duration; `down` with no state creates nothing; `plan` and `status` write no cache.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use provision_executor::{State, StateFile, StepRecord, StepStatus};
use provision_plan::outputs::HandoffOutputs;
use provision_plan::StepOutputs;
use serde_json::json;
use sha2::Digest;

fn provision(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_provision"))
        .args(args)
        .current_dir(cwd)
        .env("PROVISION_CACHE_DIR", cwd.join("cache"))
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn handoff_record(outputs: Option<HandoffOutputs>, spec_path: &str) -> StepRecord {
    StepRecord {
        kind: "handoff".into(),
        status: StepStatus::Passed,
        fingerprint: Some("fp".into()),
        spec: json!({"kind": "handoff", "pool": "a", "replica": 0, "path": spec_path}),
        facts: Default::default(),
        deps: Default::default(),
        outputs: outputs.map(StepOutputs::from),
        artifacts: vec![],
        started_at: None,
        finished_at: None,
        duration_ms: None,
        reason: None,
        error: None,
    }
}

/// A handoff step's record of the file at `path` with digest `sha256`.
fn handoff_outputs(path: &Path, sha256: &str) -> HandoffOutputs {
    HandoffOutputs {
        path: path.display().to_string(),
        sha256: Some(sha256.into()),
        url: "http://127.0.0.1:1".into(),
        pid: None,
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", sha2::Sha256::digest(bytes))
}

/// Every file under `dir`, relative.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// A mode-binary pool whose binary and model exist: planning it digests both (facts).
fn binary_config(dir: &Path, handoff: Option<&str>) -> String {
    std::fs::write(dir.join("llama-server"), b"#!/bin/sh\n").unwrap();
    std::fs::write(dir.join("model.gguf"), b"GGUF").unwrap();
    let handoff = handoff
        .map(|h| format!("    handoff_path: \"{h}\"\n"))
        .unwrap_or_default();
    let config = format!(
        "pools:\n  - id: a\n    engine: llamacpp\n    model: m\n    backend: cpu\n    devices: []\n{handoff}    provisioning:\n      mode: binary\n      binary: {{path: \"{}\"}}\n      model: {{ref: ./model.gguf}}\n",
        dir.join("llama-server").display()
    );
    std::fs::write(dir.join("pools.yaml"), config).unwrap();
    "pools.yaml".into()
}

#[test]
fn down_removes_only_a_handoff_that_still_holds_what_provision_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join(".runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    let ours = runtime.join("ours.json");
    let changed = runtime.join("changed.json");
    let written = br#"{"written_by": "provision"}"#;
    std::fs::write(&ours, written).unwrap();
    std::fs::write(&changed, "someone else's file now").unwrap();
    let mut state = State::default();
    state.steps.insert(
        "handoff:a/r0".into(),
        handoff_record(
            Some(handoff_outputs(&ours, &sha256(written))),
            "${runtime}/ours.json",
        ),
    );
    let mut b = handoff_record(
        Some(handoff_outputs(&changed, &sha256(written))),
        "${runtime}/changed.json",
    );
    b.spec["pool"] = json!("b");
    state.steps.insert("handoff:b/r0".into(), b);
    StateFile::new(runtime.join("state.json"))
        .save(&state)
        .unwrap();

    let out = provision(dir.path(), &["down"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(!ours.exists(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(&changed).unwrap(),
        "someone else's file now"
    );
    assert!(
        stderr(&out).contains(&format!("left {}", changed.display())),
        "{}",
        stderr(&out)
    );
}

#[test]
fn down_never_expands_a_planned_handoff_path() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join(".runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    // A handoff that never passed recorded no path; its planned `${config_dir}/…` must not
    // become `/…` (config_dir is unknown to down).
    let victim = dir.path().join("victim.json");
    std::fs::write(&victim, "keep").unwrap();
    let mut state = State::default();
    let mut record = handoff_record(None, &format!("${{config_dir}}{}", victim.display()));
    record.status = StepStatus::Failed;
    state.steps.insert("handoff:a/r0".into(), record);
    StateFile::new(runtime.join("state.json"))
        .save(&state)
        .unwrap();
    let out = provision(dir.path(), &["down"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
}

#[test]
fn down_with_no_state_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = provision(dir.path(), &["down"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stderr(&out).contains("nothing was running"), "{out:?}");
    assert_eq!(files_under(dir.path()), Vec::<String>::new());
    assert!(!dir.path().join(".runtime").exists());
}

#[test]
fn a_state_that_is_not_a_provision_state_harms_neither_it_nor_its_lock_neighbour() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Cargo"), "[package]\nname = \"x\"\n").unwrap();
    std::fs::write(dir.path().join("Cargo.lock"), "version = 3\n").unwrap();
    let out = provision(dir.path(), &["down", "--state", "Cargo"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(
        stderr(&out).contains("not a provision state"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("Cargo.lock")).unwrap(),
        "version = 3\n"
    );
    // No state file at all, but a foreign `.lock` beside where it would go: apply refuses to
    // take that file as its lock (it never truncates it).
    std::fs::remove_file(dir.path().join("Cargo")).unwrap();
    let config = binary_config(dir.path(), None);
    let out = provision(dir.path(), &["apply", "-c", &config, "--state", "Cargo"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(
        stderr(&out).contains("not a provision lock"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("Cargo.lock")).unwrap(),
        "version = 3\n"
    );
    assert!(!dir.path().join("Cargo").exists());
}

/// A `<state>.lock` that is not provision's (not empty, no holder record): apply, supervise and
/// down exit 4 naming it and saying what to do, and create nothing (not even the runtime dir).
#[test]
fn a_foreign_lock_file_exits_4_naming_it_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = binary_config(dir.path(), None);
    std::fs::write(dir.path().join("Cargo.lock"), "version = 3\n").unwrap();
    let before = files_under(dir.path());
    for args in [
        &["apply", "-c", &config, "--state", "Cargo"][..],
        &["supervise", "-c", &config, "--state", "Cargo"],
        &["down", "--state", "Cargo"],
    ] {
        let out = provision(dir.path(), args);
        assert_eq!(out.status.code(), Some(4), "{args:?}: {out:?}");
        let err = stderr(&out);
        assert!(
            err.contains("Cargo.lock") && err.contains("not a provision lock"),
            "{args:?}: {err}"
        );
        assert!(err.contains("hint: "), "{args:?}: {err}");
        assert_eq!(files_under(dir.path()), before, "{args:?}");
        assert!(!dir.path().join(".runtime").exists(), "{args:?}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("Cargo.lock")).unwrap(),
            "version = 3\n"
        );
    }
}

#[test]
fn every_command_exits_4_for_an_unreadable_state() {
    let dir = tempfile::tempdir().unwrap();
    let config = binary_config(dir.path(), None);
    std::fs::create_dir_all(dir.path().join("as-dir/state.json")).unwrap();
    std::fs::write(
        dir.path().join("latin1.json"),
        b"{\"state_version\": 1, \"x\": \"\xe9\"}",
    )
    .unwrap();
    for state in ["as-dir/state.json", "latin1.json"] {
        for cmd in ["plan", "status", "apply"] {
            let out = provision(dir.path(), &[cmd, "-c", &config, "--state", state]);
            assert_eq!(out.status.code(), Some(4), "{cmd} {state}: {out:?}");
            assert!(stderr(&out).contains(state), "{}", stderr(&out));
        }
        let out = provision(dir.path(), &["down", "--state", state]);
        assert_eq!(out.status.code(), Some(4), "down {state}: {out:?}");
    }
}

#[test]
fn grace_must_be_a_finite_non_negative_number_of_seconds() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["inf", "NaN", "-1", "1e30"] {
        let out = provision(dir.path(), &["down", &format!("--grace={bad}")]);
        assert_eq!(out.status.code(), Some(2), "--grace={bad}: {out:?}");
        assert!(stderr(&out).contains("--grace"), "{}", stderr(&out));
    }
    let config = binary_config(dir.path(), None);
    let out = provision(
        dir.path(),
        &["supervise", "-c", &config, "--backoff-base=NaN"],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(!dir.path().join(".runtime").exists());
}

#[test]
fn plan_and_status_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = binary_config(dir.path(), None);
    let runtime = dir.path().join(".runtime");
    StateFile::new(runtime.join("state.json"))
        .save(&State::default())
        .unwrap();
    let before = files_under(dir.path());
    for cmd in ["plan", "status"] {
        let out = provision(dir.path(), &[cmd, "-c", &config]);
        assert_eq!(out.status.code(), Some(0), "{cmd}: {out:?}");
        assert_eq!(files_under(dir.path()), before, "{cmd} wrote files");
    }
}

#[test]
fn a_handoff_path_on_the_config_the_state_or_the_cache_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (handoff, what) in [
        ("pools.yaml", "the config file"),
        ("./.runtime/state.json", "the state file"),
        ("cache/x.json", "the cache directory"),
    ] {
        let config = binary_config(dir.path(), Some(handoff));
        let out = provision(dir.path(), &["plan", "-c", &config]);
        assert_eq!(out.status.code(), Some(2), "{handoff}: {out:?}");
        let err = stderr(&out);
        assert!(
            err.contains("handoff_path") && err.contains(what),
            "{handoff}: {err}"
        );
    }
    let before = std::fs::read_to_string(dir.path().join("pools.yaml")).unwrap();
    let out = provision(dir.path(), &["apply", "-c", "pools.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("pools.yaml")).unwrap(),
        before
    );
}

#[test]
fn validate_refuses_a_handoff_path_on_the_config_in_any_spelling() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::os::unix::fs::symlink("../pools.yaml", dir.path().join("sub/link.yaml")).unwrap();
    for handoff in ["pools.yaml", "sub/../pools.yaml", "sub/link.yaml"] {
        let config = binary_config(dir.path(), Some(handoff));
        for format in ["text", "json"] {
            let out = provision(dir.path(), &["validate", "-c", &config, "--format", format]);
            assert_eq!(out.status.code(), Some(2), "{handoff}: {out:?}");
            let shown = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
            assert!(
                shown.contains("handoff_path") && shown.contains("the config file"),
                "{handoff} ({format}): {shown}"
            );
        }
    }
    // A handoff file of its own is valid.
    let config = binary_config(dir.path(), Some("handoff/a.json"));
    let out = provision(dir.path(), &["validate", "-c", &config]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn the_runtime_dir_and_the_state_are_private() {
    let dir = tempfile::tempdir().unwrap();
    // down on a state with nothing to stop still writes the state back.
    let runtime = dir.path().join(".runtime");
    let mut state = State::default();
    let mut record = handoff_record(None, "${runtime}/x.json");
    record.status = StepStatus::Failed;
    state.steps.insert("handoff:a/r0".into(), record);
    std::fs::create_dir_all(&runtime).unwrap();
    std::fs::write(
        runtime.join("state.json"),
        serde_json::to_string(&state).unwrap(),
    )
    .unwrap();
    let out = provision(dir.path(), &["down"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    for f in ["state.json", "state.json.lock"] {
        let mode = std::fs::metadata(runtime.join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}: {mode:o}");
    }
    // apply creates the runtime dir 0700 (the config is invalid for apply's steps after that
    // point, which does not matter here: the dir is made first).
    let other = tempfile::tempdir().unwrap();
    let config = binary_config(other.path(), None);
    let _ = provision(
        other.path(),
        &[
            "apply",
            "-c",
            &config,
            "--runtime-dir",
            "rt",
            "--state",
            "rt/state.json",
        ],
    );
    let mode = std::fs::metadata(other.path().join("rt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
}
