//! A large model is hashed beside the build, not before it: the real `provision apply` on a
//! sparse multi-GB GGUF and a real git clone and CMake build of `fixtures/cmake-hello`. The
//! model's step starts at once and the build runs to its end while the model is still being
//! hashed; a re-apply reads none of it again (its digest is cached by file identity).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use provision_steps_model::gguf_writer::{GgufWriter, LlamaShape};

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

/// A scratch world: a git repository holding the CMake fixture, a GGUF header followed by a
/// hole up to `model_size` bytes (sparse: it takes no disk), and a config using both.
fn world(model_size: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("upstream");
    std::fs::create_dir_all(&src).unwrap();
    for entry in std::fs::read_dir(repo_root().join("fixtures/cmake-hello")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), src.join(entry.file_name())).unwrap();
    }
    git(&src, &["init", "-q"]);
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-q", "-m", "hello"]);
    git(&src, &["tag", "v1"]);
    let model = dir.path().join("model.gguf");
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
    .write(&model)
    .unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&model)
        .unwrap()
        .set_len(model_size)
        .unwrap();
    let config = format!(
        "pools:\n  - id: p\n    engine: llamacpp\n    model: m\n    backend: cpu\n    devices: []\n    provisioning:\n      source: {{repo: \"file://{}\", ref: v1}}\n      model: {{ref: ./model.gguf}}\n",
        src.display()
    );
    std::fs::write(dir.path().join("pools.yaml"), config).unwrap();
    dir
}

fn apply(dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_provision"));
    cmd.args(["apply", "--config", "pools.yaml", "--cache-dir", "cache"])
        .args(extra)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// The JSON events of `child`'s stdout, one by one as they come.
fn events(child: &mut Child) -> mpsc::Receiver<serde_json::Value> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let event = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON event ({e}): {line}"));
            if tx.send(event).is_err() {
                return;
            }
        }
    });
    rx
}

/// Stops `child` however the test ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn is(e: &serde_json::Value, event: &str, kind: &str) -> bool {
    e["event"] == event && e["kind"] == kind
}

#[test]
fn the_build_runs_to_its_end_while_a_large_model_is_still_hashed() {
    // 16 GiB: seconds of hashing at any speed, against a build of a few files.
    let dir = world(16 << 30);
    let mut child = apply(dir.path(), &["--format", "json"]).spawn().unwrap();
    let rx = events(&mut child);
    let mut child = Reaped(child);
    let mut seen = Vec::new();
    let bound = Duration::from_secs(60);
    loop {
        let e = rx
            .recv_timeout(bound)
            .unwrap_or_else(|_| panic!("no cmake-build finished within {bound:?}: {seen:#?}"));
        let build_done = is(&e, "finished", "cmake-build");
        assert!(
            !is(&e, "finished", "model-resolve"),
            "the model was hashed before the build finished: {seen:#?}"
        );
        seen.push(e);
        if build_done {
            break;
        }
    }
    // The model's step started at once (before anything of the build), and was under way
    // (hashing, its digest not cached yet) through the whole build.
    let first = &seen[0];
    assert!(is(first, "started", "model-resolve"), "{seen:#?}");
    for kind in ["git-clone", "cmake-configure", "cmake-build"] {
        assert!(
            seen.iter().any(|e| is(e, "started", kind)),
            "{kind}: {seen:#?}"
        );
    }
    let digests = dir.path().join("cache/models/digests.json");
    let cached = std::fs::read_to_string(&digests).unwrap_or_default();
    assert!(!cached.contains("model.gguf"), "{cached}");
    // Its log tells how far the hashing is (what the TTY shows beside its spinner).
    let log = PathBuf::from(seen[0]["log"].as_str().unwrap());
    let p = provision_steps_model::hash_progress::last_in(&log).expect("a progress line");
    assert_eq!(p.total, 16 << 30);
    assert!(p.done < p.total, "{p:?}");

    // Stopped now, the hashing stops too: the step is cancelled, not finished.
    assert_eq!(unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) }, 0);
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let rest: Vec<serde_json::Value> = rx.iter().collect();
    assert!(
        rest.iter().any(|e| is(e, "cancelled", "model-resolve")),
        "{rest:#?}"
    );
}

/// `provision apply ARGS` in `dir`, by a shell that then prints the bytes it and its children
/// read (`rchar` of `/proc/<pid>/io`: a reaped child's I/O is added to its parent's).
fn apply_reading(dir: &Path, extra: &[&str]) -> (String, u64) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#""$@" >out.json 2>err.txt; cat /proc/$$/io"#)
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_provision"))
        .args(["apply", "--config", "pools.yaml", "--cache-dir", "cache"])
        .args(extra)
        .current_dir(dir)
        .output()
        .unwrap();
    let io = String::from_utf8_lossy(&out.stdout).into_owned();
    let rchar = io
        .lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rchar in {io}"));
    (
        std::fs::read_to_string(dir.join("out.json")).unwrap(),
        rchar,
    )
}

#[test]
fn a_reapply_reads_no_byte_of_a_model_hashed_before_and_plain_output_has_no_progress_noise() {
    let size: u64 = 256 << 20;
    let dir = world(size);
    // First apply, plain (not a TTY): the model is hashed in its step (the spawn then fails:
    // cmake-hello is no llama-server, which is beside the point).
    let out = apply(dir.path(), &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("done   model-resolve:model.gguf"),
        "{stderr}"
    );
    assert!(!stderr.contains("hashing"), "{stderr}");
    let cached = std::fs::read_to_string(dir.path().join("cache/models/digests.json")).unwrap();
    assert!(cached.contains("model.gguf"), "{cached}");

    // The re-apply finds the digest cached: the step is fresh, and the model is not read.
    let (json, rchar) = apply_reading(dir.path(), &["--format", "json"]);
    let events: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events.iter().any(|e| is(e, "skipped", "model-resolve")),
        "{json}"
    );
    assert!(
        !events.iter().any(|e| is(e, "started", "model-resolve")),
        "{json}"
    );
    assert!(
        rchar < size / 4,
        "the re-apply read {rchar} bytes (the model is {size})"
    );
}
