//! A failed step's `failed` event of `apply --format json` carries the failed command as
//! fields: `command` (as shown: shell-quoted, credentials redacted), `cwd`, `exit_code` (or
//! `signal`), next to `error`, `hint`, `tail` and `log`. The steps are real: a git clone of a
//! repository that does not exist, a CMake configure of `fixtures/cmake-hello` that fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@localhost"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}");
}

/// A config whose pool builds from `repo` with `cmake_flags`, in a fresh directory.
fn world(repo: &str, cmake_flags: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.gguf"), b"GGUF").unwrap();
    let config = format!(
        "pools:\n  - id: p\n    engine: llamacpp\n    model: m\n    backend: cpu\n    devices: []\n    provisioning:\n      source: {{repo: \"{repo}\", ref: v1, build: {{cmake_flags: {cmake_flags}}}}}\n      model: {{ref: ./model.gguf}}\n"
    );
    std::fs::write(dir.path().join("pools.yaml"), config).unwrap();
    dir
}

/// A local repository holding the CMake fixture, tagged `v1`.
fn upstream(dir: &Path) -> PathBuf {
    let src = dir.join("upstream");
    std::fs::create_dir_all(&src).unwrap();
    for entry in std::fs::read_dir(repo_root().join("fixtures/cmake-hello")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), src.join(entry.file_name())).unwrap();
    }
    git(&src, &["init", "-q"]);
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-q", "-m", "hello"]);
    git(&src, &["tag", "v1"]);
    src
}

/// Apply with `--format json`: the exit code and the `failed` events.
fn apply(dir: &Path) -> (i32, Vec<Value>) {
    let out = Command::new(env!("CARGO_BIN_EXE_provision"))
        .args(["apply", "--config", "pools.yaml", "--cache-dir", "cache"])
        .args(["--format", "json"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let failed = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("one JSON object per line"))
        .filter(|e| e["event"] == "failed")
        .collect();
    (out.status.code().unwrap_or(-1), failed)
}

#[test]
fn a_failed_cmake_configure_event_has_command_cwd_and_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let src = upstream(dir.path());
    let world = world(
        &format!("file://{}", src.display()),
        "[\"-DHELLO_FAIL=ON\"]",
    );
    let (code, failed) = apply(world.path());
    assert_eq!(code, 3, "{failed:?}");
    let event = failed
        .iter()
        .find(|e| e["kind"] == "cmake-configure")
        .unwrap_or_else(|| panic!("no failed cmake-configure event: {failed:?}"));
    let command = event["command"].as_str().expect("a command field");
    assert!(command.starts_with("cmake "), "{event}");
    assert!(command.contains("-DHELLO_FAIL=ON"), "{event}");
    let cwd = event["cwd"].as_str().expect("a cwd field");
    assert!(Path::new(cwd).is_absolute(), "{event}");
    assert_eq!(event["exit_code"], 1, "{event}");
    assert!(event.get("signal").is_none(), "{event}");
    // The text fields stay.
    assert!(event["error"].as_str().unwrap().contains("exit status 1"));
    assert!(event["tail"].as_str().unwrap().contains("HELLO_FAIL"));
    assert!(event["log"].as_str().unwrap().ends_with(".log"));
}

#[test]
fn a_failed_git_event_has_command_cwd_and_exit_code() {
    let world = world("file:///nonexistent/provision-no-such-repo.git", "[]");
    let (code, failed) = apply(world.path());
    assert_eq!(code, 3, "{failed:?}");
    let event = failed
        .iter()
        .find(|e| e["kind"] == "git-clone")
        .unwrap_or_else(|| panic!("no failed git-clone event: {failed:?}"));
    let command = event["command"].as_str().expect("a command field");
    assert!(command.starts_with("git "), "{event}");
    assert!(
        command.contains("file:///nonexistent/provision-no-such-repo.git"),
        "{event}"
    );
    assert!(event["cwd"].as_str().is_some(), "{event}");
    assert_eq!(event["exit_code"], 128, "{event}");
}
