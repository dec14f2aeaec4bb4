//! One command-line surface: every command takes `--format text|json` and its older spelling
//! `--json`, `-v`/`-q` mean the same everywhere, and `--cache-dir`, `--runtime-dir` and
//! `--state` are taken by every command that uses them.

use std::path::Path;
use std::process::{Command, Output};

use provision_steps_model::gguf_writer::{GgufWriter, LlamaShape};

fn provision(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_provision"))
        .args(args)
        .current_dir(cwd)
        .env("PROVISION_CACHE_DIR", cwd.join("cache"))
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A mode-binary CPU pool whose binary and model exist, with `devices: [0]`: valid, with one
/// warning (a CPU pool uses no GPU).
fn warning_config(dir: &Path) -> String {
    std::fs::write(dir.join("llama-server"), b"#!/bin/sh\n").unwrap();
    std::fs::write(dir.join("model.gguf"), b"GGUF").unwrap();
    let config = format!(
        "pools:\n  - id: a\n    engine: llamacpp\n    model: m\n    backend: cpu\n    devices: [0]\n    provisioning:\n      mode: binary\n      binary: {{path: \"{}\"}}\n      model: {{ref: ./model.gguf}}\n",
        dir.join("llama-server").display()
    );
    std::fs::write(dir.join("pools.yaml"), config).unwrap();
    "pools.yaml".into()
}

const WARNING: &str = "a CPU pool uses no GPU";

fn invalid_config(dir: &Path) -> String {
    std::fs::write(dir.join("bad.yaml"), "pools:\n  - id: a\n").unwrap();
    "bad.yaml".into()
}

fn tiny_model(dir: &Path) -> String {
    let path = dir.join("tiny.gguf");
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
    .write(&path)
    .unwrap();
    path.display().to_string()
}

/// Every command, with arguments that give it something to print in JSON without starting
/// a server: (name, arguments before the output flag).
fn every_command(dir: &Path) -> Vec<(&'static str, Vec<String>)> {
    let good = warning_config(dir);
    let bad = invalid_config(dir);
    let model = tiny_model(dir);
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        ("plan", s(&["plan", "-c", &good])),
        ("validate", s(&["validate", "-c", &good])),
        ("status", s(&["status", "-c", &good])),
        ("down", s(&["down"])),
        // A config error is reported in the chosen format before anything runs.
        ("apply", s(&["apply", "-c", &bad])),
        ("supervise", s(&["supervise", "-c", &bad])),
        ("inspect", s(&["inspect", &model, "--ctx", "256"])),
        (
            "export kubernetes",
            s(&["export", "kubernetes", "-c", &good]),
        ),
    ]
}

fn run_with(dir: &Path, args: &[String], extra: &[&str]) -> Output {
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend_from_slice(extra);
    provision(dir, &all)
}

#[test]
fn every_command_takes_format_json_and_its_older_spelling_json() {
    let dir = tempfile::tempdir().unwrap();
    for (name, args) in every_command(dir.path()) {
        let canonical = run_with(dir.path(), &args, &["--format", "json"]);
        let alias = run_with(dir.path(), &args, &["--json"]);
        // apply and supervise: the config error, as JSON on stdout.
        let expected = if name == "apply" || name == "supervise" {
            2
        } else {
            0
        };
        assert_eq!(
            canonical.status.code(),
            Some(expected),
            "{name} --format json: {canonical:?}"
        );
        let body: serde_json::Value = serde_json::from_slice(&canonical.stdout)
            .unwrap_or_else(|e| panic!("{name} --format json: {e}: {}", stdout(&canonical)));
        assert!(body.is_object(), "{name}: {body}");
        assert_eq!(
            alias.status.code(),
            canonical.status.code(),
            "{name} --json: {alias:?}"
        );
        assert_eq!(stdout(&alias), stdout(&canonical), "{name}: --json differs");
    }
}

#[test]
fn format_text_is_the_default_on_every_command_and_conflicts_with_json() {
    let dir = tempfile::tempdir().unwrap();
    for (name, args) in every_command(dir.path()) {
        if name == "export kubernetes" {
            continue; // its text is YAML: `--format yaml`, below
        }
        let default = run_with(dir.path(), &args, &[]);
        let text = run_with(dir.path(), &args, &["--format", "text"]);
        assert_eq!(
            text.status.code(),
            default.status.code(),
            "{name}: {text:?}"
        );
        assert_eq!(stdout(&text), stdout(&default), "{name} --format text");
        assert!(
            serde_json::from_slice::<serde_json::Value>(&text.stdout).is_err(),
            "{name}: --format text printed JSON"
        );
        let both = run_with(dir.path(), &args, &["--json", "--format", "text"]);
        assert_eq!(both.status.code(), Some(2), "{name}: {both:?}");
        assert!(
            stderr(&both).contains("--json"),
            "{name}: {}",
            stderr(&both)
        );
    }
    let good = warning_config(dir.path());
    let yaml = provision(dir.path(), &["export", "kubernetes", "-c", &good]);
    let named = provision(
        dir.path(),
        &["export", "kubernetes", "-c", &good, "--format", "yaml"],
    );
    assert_eq!(stdout(&yaml), stdout(&named));
    assert!(
        stdout(&yaml).contains("kind: Deployment"),
        "{}",
        stdout(&yaml)
    );
}

#[test]
fn quiet_and_verbose_are_taken_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    for (name, args) in every_command(dir.path()) {
        for flag in [&["-q"][..], &["-v"], &["-vv"], &["--quiet"], &["--verbose"]] {
            let out = run_with(dir.path(), &args, flag);
            assert!(
                !stderr(&out).contains("unexpected argument"),
                "{name} {flag:?}: {}",
                stderr(&out)
            );
            if name != "apply" && name != "supervise" {
                assert_eq!(out.status.code(), Some(0), "{name} {flag:?}: {out:?}");
            }
        }
        let both = run_with(dir.path(), &args, &["-q", "-v"]);
        assert_eq!(both.status.code(), Some(2), "{name} -q -v: {both:?}");
        assert!(
            stderr(&both).contains("cannot be used with"),
            "{name}: {}",
            stderr(&both)
        );
    }
}

#[test]
fn quiet_leaves_only_errors_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let good = warning_config(dir.path());
    for args in [
        vec!["plan", "-c", &good],
        vec!["validate", "-c", &good],
        vec!["status", "-c", &good],
        vec!["export", "kubernetes", "-c", &good],
    ] {
        let loud = provision(dir.path(), &args);
        assert!(
            stderr(&loud).contains(WARNING),
            "{args:?}: {}",
            stderr(&loud)
        );
        let mut q = args.clone();
        q.push("-q");
        let quiet = provision(dir.path(), &q);
        assert_eq!(quiet.status.code(), loud.status.code(), "{args:?}");
        assert_eq!(stdout(&quiet), stdout(&loud), "{args:?}: -q changed stdout");
        assert!(
            !stderr(&quiet).contains(WARNING),
            "{args:?} -q: {}",
            stderr(&quiet)
        );
    }
    // `down` says what it did (here: nothing) unless -q.
    let loud = provision(dir.path(), &["down"]);
    assert!(
        stderr(&loud).contains("down: nothing was running"),
        "{loud:?}"
    );
    let quiet = provision(dir.path(), &["down", "-q"]);
    assert_eq!(quiet.status.code(), Some(0), "{quiet:?}");
    assert_eq!(stderr(&quiet), "", "down -q");
    // Errors still show.
    let bad = invalid_config(dir.path());
    let out = provision(dir.path(), &["plan", "-c", &bad, "-q"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("error"), "{out:?}");
}

#[test]
fn validate_checks_handoff_paths_against_the_runtime_dir_and_state_given() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("rt");
    let handoff = runtime.join("state.json");
    std::fs::write(dir.path().join("llama-server"), b"#!/bin/sh\n").unwrap();
    std::fs::write(dir.path().join("model.gguf"), b"GGUF").unwrap();
    let config = format!(
        "pools:\n  - id: a\n    engine: llamacpp\n    model: m\n    backend: cpu\n    devices: []\n    handoff_path: \"{}\"\n    provisioning:\n      mode: binary\n      binary: {{path: \"{}\"}}\n      model: {{ref: ./model.gguf}}\n",
        handoff.display(),
        dir.path().join("llama-server").display()
    );
    std::fs::write(dir.path().join("pools.yaml"), config).unwrap();
    // With the default runtime dir the handoff file is its own.
    let out = provision(dir.path(), &["validate", "-c", "pools.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let rt = runtime.display().to_string();
    for args in [
        vec!["validate", "-c", "pools.yaml", "--runtime-dir", &rt],
        vec!["plan", "-c", "pools.yaml", "--runtime-dir", &rt],
    ] {
        let out = provision(dir.path(), &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = stderr(&out);
        assert!(
            err.contains("handoff_path") && err.contains("the state file"),
            "{args:?}: {err}"
        );
    }
    let state = handoff.display().to_string();
    let out = provision(
        dir.path(),
        &["validate", "-c", "pools.yaml", "--state", &state],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr(&out).contains("the state file"), "{out:?}");
    // And a cache dir that holds it.
    let cache = dir.path().join("rt").display().to_string();
    let out = provision(
        dir.path(),
        &["validate", "-c", "pools.yaml", "--cache-dir", &cache],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr(&out).contains("the cache directory"), "{out:?}");
    // Nothing was created.
    assert!(!runtime.exists());
}
