//! `provision validate` and `plan` on adversarial configs (issue 13, finding 4), run as a user
//! runs them but under a memory limit (`ulimit -v`) and a generous wall-clock limit: each must
//! exit 2 with bounded output, never be killed, overflow its stack or hang. The committed corpus
//! is `fixtures/adversarial/`; larger inputs are generated here.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Address space for one run: far more than a 1 MiB config needs, far less than the runaway
/// cases took (12 to 24 GB).
const MEMORY_KIB: u64 = 1 << 20;
const WALL: Duration = Duration::from_secs(120);
/// The most output a refused config may print.
const MAX_OUTPUT: usize = 256 * 1024;

struct Run {
    code: Option<i32>,
    /// The start of the output (stdout and stderr).
    output: String,
    /// Its whole length, in bytes.
    len: usize,
}

/// `provision <args>` under [`MEMORY_KIB`] and [`WALL`].
fn provision(args: &[&str]) -> Run {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {MEMORY_KIB} && exec \"$0\" \"$@\" 2>&1"))
        .arg(env!("CARGO_BIN_EXE_provision"))
        .args(args)
        .env("PROVISION_CACHE_DIR", "/nonexistent/cache")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Everything is read (a full pipe would stop the child); the first part is kept.
    let reader = std::thread::spawn(move || {
        let mut stdout = stdout;
        let (mut kept, mut total, mut buf) = (Vec::new(), 0, vec![0; 64 * 1024]);
        while let Ok(n @ 1..) = stdout.read(&mut buf) {
            total += n;
            let room = (4 * MAX_OUTPUT).saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
        }
        (kept, total)
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > WALL {
            let _ = child.kill();
            let _ = child.wait();
            panic!("provision {args:?} still ran after {WALL:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (kept, len) = reader.join().unwrap();
    Run {
        code: status.code(),
        output: String::from_utf8_lossy(&kept).into_owned(),
        len,
    }
}

/// `validate` and `plan` (text and JSON) of `config` all exit 2 with bounded output.
fn assert_refused(config: &Path, expect: &str) {
    let config = config.display().to_string();
    for args in [
        vec!["validate", "--config", &config],
        vec!["validate", "--config", &config, "--format", "json"],
        vec![
            "plan",
            "--config",
            &config,
            "--runtime-dir",
            "/nonexistent/run",
        ],
    ] {
        let run = provision(&args);
        let head: String = run.output.chars().take(2000).collect();
        assert_eq!(run.code, Some(2), "{args:?}: {head}");
        assert!(
            run.len <= MAX_OUTPUT,
            "{args:?}: {} bytes of output",
            run.len
        );
        assert!(run.output.contains(expect), "{args:?}: {head}");
    }
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/adversarial")
}

#[test]
fn the_adversarial_corpus_is_refused_within_bounds() {
    let expected = [
        ("billion-laughs.yaml", "aliases"),
        ("flags-repeated.yaml", "at most 1000"),
        ("long-line.yaml", "unknown field `bogus`"),
        ("nested-block-mappings.yaml", "nested more than 64"),
        ("nested-brackets.yaml", "nested more than 64"),
        ("nested-dashes.yaml", "nested more than 64"),
        ("nested-objects.json", "nested more than 64"),
        ("nul-in-env-and-flags.yaml", "NUL"),
        ("replicas-one-billion.yaml", "between 1 and 256"),
        ("tilde-in-paths.yaml", "does not expand"),
        ("unknown-fields.json", "4900"),
    ];
    let mut on_disk: Vec<String> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".json"))
        .collect();
    on_disk.sort();
    let listed: Vec<&str> = expected.iter().map(|(n, _)| *n).collect();
    assert_eq!(on_disk, listed, "every corpus file has an expectation here");
    for (name, expect) in expected {
        assert_refused(&corpus().join(name), expect);
    }
}

#[test]
fn generated_bombs_are_refused_within_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let pool = |i: usize| {
        format!(
            "  - id: p{i}\n    engine: llamacpp\n    model: m.gguf\n    devices: []\n    \
             backend: cpu\n    provisioning:\n      mode: binary\n      \
             binary: {{path: /opt/llama-server}}\n"
        )
    };
    let flags = vec!["\"--threads\", \"2\""; 50_000].join(", ");
    let mut wide = String::from("base: &b [");
    wide.push_str(&vec!["x"; 10_000].join(", "));
    wide.push_str("]\nrefs:\n");
    wide.push_str(&"  - *b\n".repeat(100_000));
    wide.push_str("pools: []\n");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "flags.yaml",
            format!("pools:\n{}      flags: [{flags}]\n", pool(0)),
            "at most 1000",
        ),
        ("aliases.yaml", wide, "aliases"),
        (
            "deep.yaml",
            format!("pools:\n{}x\n", "- ".repeat(200_000)),
            "nested more than 64",
        ),
        (
            "list.yaml",
            format!("pools:\n{}", "- x\n".repeat(1_000_000)),
            "at most 10000",
        ),
        (
            "over-cap.yaml",
            format!("pools: []\n{}", "#".repeat(17 << 20)),
            "16 MiB",
        ),
    ];
    for (name, text, expect) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        assert_refused(&path, expect);
    }
}

#[test]
fn a_fifo_and_a_device_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("c.yaml");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    assert_refused(&fifo, "not a regular file");
    assert_refused(Path::new("/dev/zero"), "not a regular file");
}

#[test]
fn ten_thousand_pools_validate_and_plan_within_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    let mut text = String::from("pools:\n");
    for i in 0..10_000 {
        text.push_str(&format!(
            "  - {{id: p{i}, engine: llamacpp, model: m.gguf, devices: [], backend: cpu, \
             provisioning: {{mode: binary, binary: {{path: /opt/llama-server}}}}}}\n"
        ));
    }
    std::fs::write(&path, text).unwrap();
    let config = path.display().to_string();
    let run = provision(&["validate", "--config", &config]);
    assert_eq!(run.code, Some(0), "{}", run.output);
    let run = provision(&[
        "plan",
        "--config",
        &config,
        "--runtime-dir",
        "/nonexistent/run",
    ]);
    assert_eq!(
        run.code,
        Some(0),
        "{}",
        &run.output[..2000.min(run.output.len())]
    );
    assert!(run.output.contains("shared with 9999 pools ("));
}
