//! llama.cpp's `llama-server` at runtime: `--help` lists its flags ([`super::llamacpp_help`]),
//! `/health` answers 200 once the model is loaded (503 `Loading model` before), `/metrics`
//! serves Prometheus text with `--metrics`, and `/props` `build_info` (else `/v1/models`, else
//! `llama-server --version`) says which build it is.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::http::{Http, Reply};

use provision_plan::config::Backend;

use super::llamacpp_help::{known_flags, HelpError, KnownFlags};
use super::load_report::LoadReport;
use super::{BackendDevices, RuntimeEngine};

/// llama.cpp's server.
#[derive(Debug, Clone, Copy)]
pub struct LlamaCpp;

impl RuntimeEngine for LlamaCpp {
    fn program(&self) -> &'static str {
        provision_plan::engine::llamacpp::SERVER_PROGRAM
    }

    fn accepted_flags(
        &self,
        binary: &Path,
        digest: &str,
        env: &BTreeMap<String, String>,
        cache_root: &Path,
    ) -> Result<KnownFlags, HelpError> {
        known_flags(binary, digest, env, &cache_root.join("llama-help"))
    }

    fn backend_devices(
        &self,
        binary: &Path,
        digest_known: (&str, &KnownFlags),
        backend: Backend,
        env: &BTreeMap<String, String>,
        cache_root: &Path,
    ) -> Result<BackendDevices, HelpError> {
        super::llamacpp_devices::backend_devices(
            binary,
            digest_known,
            backend,
            env,
            &cache_root.join("llama-devices"),
        )
    }

    fn devices_source(&self) -> &'static str {
        super::llamacpp_devices::LIST_DEVICES
    }

    fn no_device_hint(&self, pool: &str, backend: Backend) -> String {
        format!(
            "point `provisioning.binary.path` of pool {pool} at a llama-server built with {} support (cmake -DGGML_CUDA=ON), or set `backend: cpu` on pool {pool} to run it on the CPU",
            backend.as_str().to_uppercase()
        )
    }

    fn gpu_layers(&self, argv: &[String]) -> Option<u64> {
        let at = argv.iter().rposition(|a| {
            matches!(
                a.as_str(),
                "--n-gpu-layers" | "-ngl" | "--ngl" | "--gpu-layers"
            )
        })?;
        // `auto`, `all` and a negative number: every layer.
        argv.get(at + 1)?.parse::<u64>().ok()
    }

    fn load_report_bytes(&self) -> u64 {
        super::llamacpp_load::REPORT_BYTES
    }

    fn load_report(&self, log: &str) -> LoadReport {
        super::llamacpp_load::parse_load_report(log)
    }

    fn flags_source(&self) -> &'static str {
        "--help"
    }

    fn unknown_flags_hint(&self, pool: &str, binary: &Path) -> String {
        format!(
            "fix `flags` of pool {pool} (llama.cpp renames flags between versions); `{} --help` lists what this build accepts",
            binary.display()
        )
    }

    fn tls_flag(&self) -> &'static str {
        provision_plan::tls::KEY_FLAG
    }

    fn no_tls_hint(&self, pool: &str) -> String {
        format!(
            "install OpenSSL's headers (apt install libssl-dev pkg-config; dnf install openssl-devel; pacman -S openssl) and rebuild llama.cpp (LLAMA_OPENSSL=ON is the default; mode source: `provision apply --force` rebuilds), or remove `listen.tls` from pool {pool}"
        )
    }

    fn model_flag(&self) -> &'static str {
        "--model"
    }

    fn is_ready(&self, reply: &Reply) -> bool {
        reply.status == 200
    }

    fn reason(&self, body: &str) -> String {
        reason(body)
    }

    fn metrics_path(&self) -> &'static str {
        "/metrics"
    }

    fn metrics_flag(&self) -> &'static str {
        "--metrics"
    }

    fn metrics_hint(&self) -> &'static str {
        "the binary may not support --metrics; remove it from `flags` or use a newer llama.cpp"
    }

    fn reported_version(
        &self,
        http: &Http,
        url: &str,
        key: Option<&str>,
    ) -> Option<(String, &'static str)> {
        let ask = |path: &'static str, keys: &[&str]| {
            let r = http.get(&format!("{url}{path}"), key).ok()?;
            if r.status != 200 {
                return None;
            }
            let v = serde_json::from_str::<Value>(&r.body).ok()?;
            find_string(&v, keys).map(|v| (v, path))
        };
        ask("/props", &["build_info"])
            .or_else(|| ask("/v1/models", &["build_info", "system_fingerprint"]))
    }

    fn binary_version(&self, binary: &Path) -> Option<(String, &'static str)> {
        version_of(binary).map(|v| (v, "--version"))
    }

    fn api_key_env(&self) -> &'static str {
        provision_plan::engine::llamacpp::API_KEY_ENV
    }

    fn reads_env(&self, name: &str) -> bool {
        // `LLAMA_ARG_<FLAG>` for every flag, `LLAMA_API_KEY`, `LLAMA_CACHE`, `LLAMA_LOG_*`;
        // `HF_TOKEN` and `HF_ENDPOINT` for its downloads.
        name.starts_with("LLAMA_") || name.starts_with("HF_")
    }
}

/// The short reason of a llama-server error body (`{"error":{"message":"Loading model"}}`),
/// else the body's first line.
pub fn reason(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    if let Some(msg) = parsed
        .as_ref()
        .and_then(|v| v.pointer("/error/message").or_else(|| v.get("status")))
        .and_then(|m| m.as_str())
    {
        return msg.to_string();
    }
    let line = body.lines().next().unwrap_or_default();
    line.chars().take(120).collect()
}

/// The first string under any of `keys`, anywhere in `v`.
fn find_string(v: &Value, keys: &[&str]) -> Option<String> {
    match v {
        Value::Object(map) => keys
            .iter()
            .find_map(|k| map.get(*k).and_then(Value::as_str).map(String::from))
            .filter(|s| !s.is_empty())
            .or_else(|| map.values().find_map(|x| find_string(x, keys))),
        Value::Array(items) => items.iter().find_map(|x| find_string(x, keys)),
        _ => None,
    }
}

/// `b<build>-<commit>` from `llama-server --version` (`version: 0.5.0-dev (build 1, commit
/// 46fdb7a)`, printed to stderr).
pub fn version_of(binary: &Path) -> Option<String> {
    let out = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    parse_version(&text)
}

pub fn parse_version(text: &str) -> Option<String> {
    let line = text
        .lines()
        .find(|l| l.contains("build") && l.contains("commit"))?;
    let num = |after: &str| {
        let rest = &line[line.find(after)? + after.len()..];
        let v: String = rest
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        (!v.is_empty()).then_some(v)
    };
    Some(format!("b{}-{}", num("build")?, num("commit")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_line_becomes_build_info() {
        assert_eq!(
            parse_version("version: 0.5.0-dev (build 1, commit 46fdb7a)\nbuilt with cc").as_deref(),
            Some("b1-46fdb7a")
        );
        assert_eq!(parse_version("llama-server 1.0"), None);
    }

    #[test]
    fn build_info_is_found_anywhere() {
        let v: Value =
            serde_json::json!({"data": [{"id": "m", "meta": {}}], "system_fingerprint": "b9-abc"});
        assert_eq!(
            find_string(&v, &["build_info", "system_fingerprint"]).as_deref(),
            Some("b9-abc")
        );
    }

    #[test]
    fn the_gpu_layers_asked_are_the_last_count_every_layer_otherwise() {
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            LlamaCpp.gpu_layers(&argv(&["s", "--n-gpu-layers", "999"])),
            Some(999)
        );
        assert_eq!(
            LlamaCpp.gpu_layers(&argv(&["s", "-ngl", "9", "-ngl", "20"])),
            Some(20)
        );
        assert_eq!(
            LlamaCpp.gpu_layers(&argv(&["s", "--n-gpu-layers", "all"])),
            None
        );
        assert_eq!(LlamaCpp.gpu_layers(&argv(&["s", "-ngl", "-1"])), None);
        assert_eq!(LlamaCpp.gpu_layers(&argv(&["s"])), None);
    }

    #[test]
    fn an_error_body_gives_its_message() {
        assert_eq!(
            reason(r#"{"error":{"code":503,"message":"Loading model"}}"#),
            "Loading model"
        );
        assert_eq!(reason("plain text\nmore"), "plain text");
    }
}
