//! The `provision` binary, run as a user runs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Run `provision` in a fresh empty directory, so that anything it writes would show.
fn provision(args: &[&str]) -> (Output, tempfile::TempDir) {
    let cwd = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_provision"))
        .args(args)
        .current_dir(cwd.path())
        .env("PROVISION_CACHE_DIR", "/cache")
        .output()
        .unwrap();
    (out, cwd)
}

fn fixture(rel: &str) -> String {
    repo().join("fixtures").join(rel).display().to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_wrote_nothing(cwd: &tempfile::TempDir) {
    let entries: Vec<_> = std::fs::read_dir(cwd.path()).unwrap().collect();
    assert!(entries.is_empty(), "provision wrote {entries:?}");
}

#[test]
fn plan_prints_text_and_json() {
    let config = fixture("configs/llamacpp-3090-source.yaml");
    let (out, cwd) = provision(&["plan", "--config", &config]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let repo_pattern = regex_escape(&repo().display().to_string());
    let cwd_pattern = regex_escape(&cwd.path().display().to_string());
    insta::with_settings!({filters => vec![(repo_pattern.as_str(), "[REPO]"), (cwd_pattern.as_str(), "[CWD]")]}, {
        insta::assert_snapshot!("plan_text_3090", stdout(&out));
    });

    let (out, _) = provision(&["plan", "--config", &config, "--format", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let plan: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(plan["plan_version"], 2);
    assert_eq!(plan["roots"]["cache"], "/cache");
    let kinds: Vec<&str> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    for kind in [
        "preflight-tools",
        "gpu-check",
        "git-clone",
        "cmake-configure",
        "cmake-build",
        "model-resolve",
        "vram-fit",
        "spawn",
        "probe",
        "handoff",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    assert_wrote_nothing(&cwd);
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

#[test]
fn invalid_config_exits_2_lists_every_problem_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pools.yaml");
    std::fs::write(
        &config,
        "pools:\n  - id: a\n    engine: llamacpp\n    model: m.gguf\n    devices: []\n    provisioning:\n      allow_package_install: true\n      flags: [--port, \"1\"]\n",
    )
    .unwrap();
    let config = config.display().to_string();
    for command in ["plan", "validate"] {
        let (out, cwd) = provision(&[command, "--config", &config]);
        assert_eq!(out.status.code(), Some(2), "{command}");
        let err = stderr(&out);
        assert!(err.contains("pools.yaml:5:14"), "{err}");
        assert!(
            err.contains("did you mean `allow_package_installs`?"),
            "{err}"
        );
        assert!(err.contains("pools.yaml:8:15"), "{err}");
        assert!(
            err.contains("4 problems in the config; nothing was changed"),
            "{err}"
        );
        assert!(stdout(&out).is_empty());
        assert_wrote_nothing(&cwd);
    }

    let (out, _) = provision(&["validate", "--config", &config, "--format", "json"]);
    assert_eq!(out.status.code(), Some(2));
    let body: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(body["valid"], false);
    assert_eq!(body["diagnostics"].as_array().unwrap().len(), 4);
    assert_eq!(body["diagnostics"][0]["location"]["line"], 5);
}

#[test]
fn validate_accepts_every_fixture_config() {
    for entry in std::fs::read_dir(repo().join("fixtures/configs")).unwrap() {
        let path = entry.unwrap().path().display().to_string();
        let (out, _) = provision(&["validate", "--config", &path]);
        assert_eq!(out.status.code(), Some(0), "{path}: {}", stderr(&out));
        assert!(stdout(&out).contains(": valid ("), "{}", stdout(&out));
    }
}

/// `validate` shows the device ledger the config gives: each GPU with its pools in placement
/// (config) order and their replicas, in text and JSON.
#[test]
fn validate_shows_the_device_ledger() {
    let config = fixture("configs/two-gpu-pools-shared-build.yaml");
    let (out, _) = provision(&["validate", "--config", &config]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("GPU 0: `chat` (2 × one server) — placed in this order"),
        "{text}"
    );
    assert!(text.contains("GPU 2: `batch` (1 × one server)"), "{text}");
    let (out, _) = provision(&["validate", "--config", &config, "--format", "json"]);
    let body: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        body["devices"][0],
        serde_json::json!({"device": 0, "pools": [{"pool": "chat", "replicas": 2}]})
    );
    assert_eq!(body["devices"].as_array().unwrap().len(), 3);
}

#[test]
fn unknown_pool_missing_file_and_bad_usage_exit_2() {
    let config = fixture("configs/two-gpu-pools-shared-build.yaml");
    let (out, _) = provision(&["plan", "--config", &config, "--pool", "chatt"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("did you mean `chat`?"),
        "{}",
        stderr(&out)
    );

    let (out, _) = provision(&["plan", "--config", "/nonexistent/pools.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot read the config file"),
        "{}",
        stderr(&out)
    );

    let (out, _) = provision(&["plan"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--config"));
}

#[test]
fn pool_flag_plans_one_pool() {
    let config = fixture("configs/two-gpu-pools-shared-build.yaml");
    let (out, _) = provision(&[
        "plan", "--config", &config, "--pool", "batch", "--format", "json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let plan: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let pools: Vec<&str> = plan["pools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(pools, ["batch"]);
}

#[test]
fn help_documents_exit_codes() {
    for args in [
        &["--help"][..],
        &["plan", "--help"],
        &["validate", "--help"],
        &["apply", "--help"],
        &["status", "--help"],
    ] {
        let (out, _) = provision(args);
        assert_eq!(out.status.code(), Some(0));
        let text = stdout(&out);
        assert!(
            text.contains("Exit codes:")
                && text.contains("2    invalid config")
                && text.contains("5    another apply holds the lock"),
            "{text}"
        );
    }
}

#[test]
fn a_secret_looking_cmake_definition_is_refused_without_its_value() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pools.yaml");
    std::fs::write(
        &config,
        "pools:\n  - id: a\n    engine: llamacpp\n    model: m.gguf\n    backend: cpu\n    devices: []\n    provisioning:\n      source:\n        repo: /src/llama.cpp\n        ref: b1\n        build:\n          cmake_flags: [-DGGML_NATIVE=OFF, -DMY_API_TOKEN=hunter2-value, --auth=hunter3-value]\n",
    )
    .unwrap();
    let config = config.display().to_string();
    for format in ["text", "json"] {
        let (out, cwd) = provision(&["plan", "--config", &config, "--format", format]);
        assert_eq!(out.status.code(), Some(2), "{format}");
        let shown = format!("{}{}", stdout(&out), stderr(&out));
        assert!(shown.contains("MY_API_TOKEN"), "{shown}");
        assert!(shown.contains("auth"), "{shown}");
        assert!(
            shown.contains("never puts a secret on a command line"),
            "{shown}"
        );
        assert!(!shown.contains("hunter2-value"), "{shown}");
        assert!(!shown.contains("hunter3-value"), "{shown}");
        assert_wrote_nothing(&cwd);
    }
}

#[test]
fn an_ssh_url_with_a_password_is_refused_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pools.yaml");
    let pool = |repo: &str| {
        format!("pools:\n  - id: a\n    engine: llamacpp\n    model: m.gguf\n    backend: cpu\n    devices: []\n    provisioning:\n      source:\n        repo: \"{repo}\"\n        ref: b1\n")
    };
    std::fs::write(
        &config,
        pool("ssh://git:hunter4-value@host/org/llama.cpp.git"),
    )
    .unwrap();
    let config_s = config.display().to_string();
    let (out, cwd) = provision(&["validate", "--config", &config_s]);
    assert_eq!(out.status.code(), Some(2));
    let shown = format!("{}{}", stdout(&out), stderr(&out));
    assert!(shown.contains("holds a password"), "{shown}");
    assert!(!shown.contains("hunter4-value"), "{shown}");
    assert_wrote_nothing(&cwd);
    // A user name alone (a key does the rest) is fine.
    std::fs::write(&config, pool("ssh://git@host/org/llama.cpp.git")).unwrap();
    let (out, _) = provision(&["validate", "--config", &config_s]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn a_gpu_pool_may_not_set_its_own_cuda_device_order() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pools.yaml");
    std::fs::write(
        &config,
        "pools:\n  - id: g\n    engine: llamacpp\n    model: m.gguf\n    devices: [0]\n    provisioning:\n      mode: binary\n      binary: {path: /opt/llama-server}\n      env: {CUDA_DEVICE_ORDER: FASTEST_FIRST}\n",
    )
    .unwrap();
    let (out, _) = provision(&["validate", "--config", &config.display().to_string()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("`CUDA_DEVICE_ORDER` is set by provision"),
        "{err}"
    );
    assert!(
        err.contains("pools[0].provisioning.env.CUDA_DEVICE_ORDER"),
        "{err}"
    );
}
