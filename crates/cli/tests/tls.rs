//! `apply` on a pool whose key file others may read, or whose binary was built without TLS
//! for a `listen.tls` pool, exits 3 and starts nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn apply(cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_provision"))
        .args(["apply", "--config", "pools.yaml"])
        .current_dir(cwd)
        .env("PROVISION_CACHE_DIR", cwd.join("cache"))
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A mode-binary pool with `extra` pool lines; its "llama-server" is a script whose `--help`
/// lists the flags a build without OpenSSL has, and which records that it was started.
fn pool(dir: &Path, extra: &str) {
    let server = dir.join("llama-server");
    let started = dir.join("started");
    std::fs::write(
        &server,
        format!(
            "#!/bin/sh\nif [ \"$1\" = --help ]; then\n  printf -- '--host HOST   h\\n--port PORT   p\\n-m, --model FNAME   m\\n--threads N   t\\n--n-gpu-layers N   n\\n--parallel N   p\\n--no-cont-batching   c\\n--metrics   m\\n--no-webui   w\\n'\n  exit 0\nfi\ntouch {}\nsleep 30\n",
            started.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&server, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A GGUF header: version 3, no tensors, no metadata.
    let mut gguf = b"GGUF".to_vec();
    gguf.extend(3u32.to_le_bytes());
    gguf.extend([0u8; 16]);
    std::fs::write(dir.join("model.gguf"), gguf).unwrap();
    let config = format!(
        "pools:\n  - id: a\n    engine: llamacpp\n    model: m\n    backend: cpu\n    devices: []\n{extra}    provisioning:\n      mode: binary\n      binary: {{path: \"{}\"}}\n      model: {{ref: ./model.gguf}}\n",
        server.display()
    );
    std::fs::write(dir.join("pools.yaml"), config).unwrap();
}

fn nothing_started(dir: &Path) {
    assert!(!dir.join("started").exists(), "the server was started");
    assert!(!dir.join(".runtime/run/a-r0.pid").exists());
}

#[test]
fn an_api_key_file_others_may_read_exits_3_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    pool(dir.path(), "    api_key: {file: web.key}\n");
    let key = dir.path().join("web.key");
    std::fs::write(&key, "sk-x\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = apply(dir.path());
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("chmod 600 {}", key.display())) && err.contains("mode 0644"),
        "{err}"
    );
    nothing_started(dir.path());
}

#[test]
fn a_tls_pool_on_a_binary_without_tls_exits_3_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    pool(
        dir.path(),
        "    listen: {tls: {cert_file: web.crt, key_file: web.key}}\n",
    );
    std::fs::write(
        dir.path().join("web.crt"),
        "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let key = dir.path().join("web.key");
    std::fs::write(&key, "key\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = apply(dir.path());
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("was built without TLS support") && err.contains("libssl-dev"),
        "{err}"
    );
    nothing_started(dir.path());
}
