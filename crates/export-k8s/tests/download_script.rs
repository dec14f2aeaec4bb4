//! The init container that downloads a model, run for real: the script exactly as exported,
//! under `sh`, with curl against an HTTP server on 127.0.0.1.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use common::*;
use provision_export_k8s::{ExportOptions, ModelVolume};
use serde_json::Value;
use sha2::{Digest, Sha256};

const BODY: &[u8] = b"GGUF pretend model bytes";

/// Serves BODY at /m.gguf (404 elsewhere); records each request's path and headers.
fn server() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
                request.push_str(&line);
            }
            let found = request.starts_with("GET /m.gguf ") || request.starts_with("GET /m.gguf?");
            log.lock().unwrap().push(request);
            let (status, body): (&str, &[u8]) = if found {
                ("200 OK", BODY)
            } else {
                ("404 Not Found", b"no")
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(body);
            let _ = reader.read(&mut [0; 0]);
        }
    });
    (base, seen)
}

/// The exported init container of the two-GPU fixture's `chat` pool.
fn downloader() -> Value {
    let valid = load(&repo().join("fixtures/configs/two-gpu-pools-shared-build.yaml"));
    let opts = ExportOptions {
        model_volume: ModelVolume::Download,
        ..Default::default()
    };
    let values = json_values(&export_with(&valid, &opts).unwrap());
    values
        .into_iter()
        .find(|v| v["kind"] == "Deployment")
        .unwrap()["spec"]["template"]["spec"]["initContainers"][0]
        .clone()
}

fn run(script: &str, dir: &Path, url: &str, sha256: &str, token: Option<&str>) -> Output {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap())
        .env("HOSTNAME", "pod-a")
        .env("MODEL_DIR", dir)
        .env("MODEL_FILE", "m.gguf")
        .env("MODEL_SHA256", sha256)
        .env("MODEL_URL", url);
    if let Some(t) = token {
        cmd.env("HF_TOKEN", t);
    }
    cmd.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".part"))
        .collect()
}

#[test]
fn the_init_container_downloads_verifies_and_keeps_a_verified_model() {
    let c = downloader();
    assert_eq!(c["command"][0], "/bin/sh");
    let script = c["command"][2].as_str().unwrap();
    let env = |name: &str| {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(env("MODEL_DIR")["value"], "/models");
    assert_eq!(
        env("MODEL_FILE")["value"],
        "qwen2.5-7b-instruct-q4_k_m.gguf"
    );
    assert_eq!(env("MODEL_SHA256")["value"], "0".repeat(63) + "1");
    assert_eq!(
        env("HF_TOKEN")["valueFrom"]["secretKeyRef"]["key"],
        "HF_TOKEN"
    );

    let (base, seen) = server();
    let url = format!("{base}/m.gguf");
    let good: String = Sha256::digest(BODY)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("m.gguf");

    // Downloaded, verified, recorded; the token sent as a bearer header.
    let o = run(script, dir.path(), &url, &good, Some("hf_secret"));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(&dest).unwrap(), BODY);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("m.gguf.sha256"))
            .unwrap()
            .trim(),
        good
    );
    assert!(leftovers(dir.path()).is_empty());
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert!(seen.lock().unwrap()[0].contains("Authorization: Bearer hf_secret"));
    assert!(!text(&o).contains("hf_secret"), "the token was printed");

    // Present and verified before: nothing downloaded.
    let o = run(script, dir.path(), &url, &good, None);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("model present"), "{}", text(&o));
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert!(!seen.lock().unwrap()[0].is_empty());

    // A different checksum: downloaded again, rejected, nothing left behind, the verified
    // file untouched.
    let wrong = "f".repeat(64);
    let o = run(script, dir.path(), &url, &wrong, None);
    assert!(!o.status.success());
    assert!(
        text(&o).contains(&format!("expected sha256:{wrong}, got sha256:{good}")),
        "{}",
        text(&o)
    );
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert!(leftovers(dir.path()).is_empty());
    assert_eq!(std::fs::read(&dest).unwrap(), BODY);

    // A fresh volume and a mismatch: no model at all.
    let empty = tempfile::tempdir().unwrap();
    let o = run(script, empty.path(), &url, &wrong, None);
    assert!(!o.status.success());
    assert!(!empty.path().join("m.gguf").exists());
    assert!(leftovers(empty.path()).is_empty());

    // An HTTP error fails the pod's start.
    let o = run(
        script,
        empty.path(),
        &format!("{base}/missing.gguf"),
        "",
        None,
    );
    assert!(!o.status.success(), "{}", text(&o));
    assert!(!empty.path().join("m.gguf").exists());

    // No checksum configured: downloaded without verification, and kept.
    let o = run(script, empty.path(), &url, "", None);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(empty.path().join("m.gguf")).unwrap(), BODY);
}

#[test]
fn the_init_container_prints_the_url_without_its_credentials() {
    let c = downloader();
    let script = c["command"][2].as_str().unwrap();
    let (base, seen) = server();
    let host = base.strip_prefix("http://").unwrap();
    let url = format!("http://user:hunter2@{host}/m.gguf?X-Amz-Signature=SIGVALUE");
    let dir = tempfile::tempdir().unwrap();
    // A checksum mismatch: both the download and the mismatch are reported.
    let o = run(script, dir.path(), &url, &"f".repeat(64), None);
    assert!(!o.status.success(), "{}", text(&o));
    assert_eq!(seen.lock().unwrap().len(), 1, "{}", text(&o));
    assert!(seen.lock().unwrap()[0].contains("X-Amz-Signature=SIGVALUE"));
    let out = text(&o);
    assert!(out.contains("checksum mismatch"), "{out}");
    assert!(
        !out.contains("hunter2") && !out.contains("SIGVALUE"),
        "{out}"
    );
    assert!(out.contains(&format!("{base}/m.gguf")), "{out}");
}
