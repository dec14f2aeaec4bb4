//! Stage 9 of the e2e: one replica of the real llama-server serving HTTPS (`listen.tls`, built
//! with OpenSSL) behind an API key given by file (`api_key: {file}`). A key file others may read
//! is refused before anything starts; then the pool comes up, its handoff is `https://` with
//! `auth: bearer` and no key, the key is in no argv, a client trusting exactly the pool's
//! certificate gets a completion with the key and 401 without it, a client pinned to another
//! certificate and a plain-http client get nothing, and `down` leaves nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use provision_steps_spawn::http::{Http, NoReply};
use provision_steps_spawn::pinned_tls::read_leaf;
use serde_json::Value;

use super::{alive, http, text, E2e};

const RUNTIME: &str = ".runtime-tls";

/// A self-signed certificate for `name`: (cert, key) written under `dir` as `<stem>.crt/.key`.
fn certificate(dir: &Path, stem: &str, name: &str) -> Result<(PathBuf, PathBuf)> {
    let made = rcgen::generate_simple_self_signed(vec![name.to_string()])?;
    let cert = dir.join(format!("{stem}.crt"));
    let key = dir.join(format!("{stem}.key"));
    std::fs::write(&cert, made.cert.pem())?;
    std::fs::write(&key, made.signing_key.serialize_pem())?;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
    Ok((cert, key))
}

/// A random API key (hex of 16 bytes from the kernel).
fn random_key() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The handoff files in the stage's runtime dir (one pool of one replica: `engines/llamacpp.json`).
fn handoffs(e: &E2e) -> Result<Vec<PathBuf>> {
    let dir = e.work.join(RUNTIME).join("engines");
    match std::fs::read_dir(&dir) {
        Ok(entries) => Ok(entries.flatten().map(|d| d.path()).collect()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(err) => Err(err).with_context(|| format!("reading {}", dir.display())),
    }
}

pub fn stage(e: &E2e) -> Result<()> {
    let config = e.variant("tls.yaml", |t| {
        t.replace("replicas: 2", "replicas: 1").replace(
            "    readiness_timeout_ms: 60000\n",
            "    readiness_timeout_ms: 60000\n    listen:\n      host: 127.0.0.1\n      tls: {cert_file: tls/e2e.crt, key_file: tls/e2e.key}\n    api_key: {file: tls/api.key}\n",
        )
    })?;
    let dir = config
        .parent()
        .context("the variant's directory")?
        .join("tls");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (cert, _) = certificate(&dir, "e2e", "gpu1.example.com")?;
    let (other_cert, _) = certificate(&dir, "other", "gpu1.example.com")?;
    let key = random_key()?;
    let key_file = dir.join("api.key");
    std::fs::write(&key_file, format!("{key}\n"))?;

    // A key file others may read: refused before any server starts.
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644))?;
    let out = e.run("apply", &config, RUNTIME, &[])?;
    ensure!(
        out.status.code() == Some(3) && text(&out).contains("chmod 600"),
        "an api key file others may read was not refused: {:?}\n{}",
        out.status.code(),
        text(&out)
    );
    ensure!(
        handoffs(e)?.is_empty(),
        "a handoff was written for a refused pool"
    );
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))?;

    let out = e.run("apply", &config, RUNTIME, &[])?;
    ensure!(out.status.success(), "TLS apply failed: {}", text(&out));
    let result = check_serving(e, &cert, &other_cert, &key);
    let down = e.run("down", &config, RUNTIME, &[])?;
    result?;
    ensure!(down.status.success(), "down failed: {}", text(&down));
    ensure!(handoffs(e)?.is_empty(), "handoff left after down");
    Ok(())
}

fn check_serving(e: &E2e, cert: &Path, other_cert: &Path, key: &str) -> Result<()> {
    let found = handoffs(e)?;
    ensure!(found.len() == 1, "one handoff expected, found {found:?}");
    let raw = std::fs::read_to_string(&found[0])?;
    ensure!(!raw.contains(key), "the handoff holds the API key");
    let h: Value = serde_json::from_str(&raw)?;
    let url = h["url"].as_str().context("handoff has a url")?;
    ensure!(url.starts_with("https://127.0.0.1:"), "handoff url {url}");
    ensure!(h["auth"] == "bearer", "handoff auth: {}", h["auth"]);
    let pid = h["pid"].as_u64().context("handoff has a pid")? as u32;
    ensure!(alive(pid), "the handed-off server {pid} is not running");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    ensure!(
        !cmdline.contains(key),
        "the API key is in the server's argv"
    );
    ensure!(
        cmdline.contains("--ssl-cert-file"),
        "no --ssl-cert-file in {cmdline}"
    );

    let pinned = Http::pinned(
        Duration::from_secs(60),
        read_leaf(cert).map_err(anyhow::Error::msg)?,
    );
    let completion = format!("{url}/completion");
    let body = r#"{"prompt": "the", "n_predict": 8}"#;
    let ok = pinned
        .post_json(&completion, Some(key), body)
        .map_err(|e| anyhow::anyhow!("POST {completion}: {e}"))?;
    ensure!(
        ok.status == 200,
        "POST {completion}: {} {}",
        ok.status,
        ok.body
    );
    let answer: Value = serde_json::from_str(&ok.body)?;
    let predicted = answer["tokens_predicted"].as_u64().unwrap_or(0);
    ensure!(predicted > 0, "no tokens from {url}: {}", ok.body);
    let anonymous = pinned
        .post_json(&completion, None, body)
        .map_err(|e| anyhow::anyhow!("POST {completion} without a key: {e}"))?;
    ensure!(
        anonymous.status == 401,
        "without the key: {} {}",
        anonymous.status,
        anonymous.body
    );

    let other = Http::pinned(
        Duration::from_secs(10),
        read_leaf(other_cert).map_err(anyhow::Error::msg)?,
    );
    let refused = other.get(&format!("{url}/health"), None);
    ensure!(
        matches!(refused, Err(NoReply::NotPinned)),
        "a client pinned to another certificate got {refused:?}"
    );
    let plain = url.replacen("https://", "http://", 1);
    let plain_status = http(&plain, "GET", "/health", None).map_or(0, |(s, _)| s);
    ensure!(plain_status != 200, "plain http answered 200 on a TLS pool");
    eprintln!(
        "   {url}: {predicted} tokens with the key over pinned TLS, 401 without; another certificate and plain http refused; key in no argv or handoff"
    );
    Ok(())
}
