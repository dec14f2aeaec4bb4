//! Every resource name in a container's requests and limits is one the API server schedules
//! on: `cpu`, `memory`, `ephemeral-storage`, or a qualified extended resource `domain/name`
//! (outside `kubernetes.io`). Schema validators accept any string key, so `nvidia.com/gpu=all`
//! or `gpu` would pass them and fail only on a real cluster.

mod common;

use common::*;
use serde_json::Value;

const NATIVE: &[&str] = &["cpu", "memory", "ephemeral-storage"];

/// A DNS-1123 subdomain.
fn is_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// The name part of a qualified name: `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, ≤ 63.
fn is_qualified_name_part(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(alnum)
        && s.ends_with(alnum)
        && s.chars().all(|c| alnum(c) || "-_.".contains(c))
}

fn is_valid_resource_key(key: &str) -> bool {
    if NATIVE.contains(&key) {
        return true;
    }
    match key.split_once('/') {
        Some((domain, name)) => {
            is_subdomain(domain)
                && domain.contains('.')
                && !(domain == "kubernetes.io" || domain.ends_with(".kubernetes.io"))
                && is_qualified_name_part(name)
        }
        None => false,
    }
}

#[test]
fn the_rule_rejects_what_validators_let_through() {
    for good in [
        "cpu",
        "memory",
        "ephemeral-storage",
        "nvidia.com/gpu",
        "amd.com/gpu",
        "example.com/foo_bar.baz",
    ] {
        assert!(is_valid_resource_key(good), "{good}");
    }
    for bad in [
        "nvidia.com/gpu=all",
        "gpu",
        "GPU",
        "nvidia.com/",
        "/gpu",
        "nvidia/gpu",
        "Nvidia.com/gpu",
        "nvidia.com/gpu/0",
        "nvidia.com/-gpu",
        "kubernetes.io/gpu",
        "storage",
        "cpus",
        "nvidia.com/gpu ",
    ] {
        assert!(!is_valid_resource_key(bad), "{bad}");
    }
}

/// Requests and limits of every container (init containers too) in `value`.
fn resource_keys(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if (k == "containers" || k == "initContainers") && v.is_array() {
                    for c in v.as_array().unwrap() {
                        for part in ["requests", "limits", "claims"] {
                            if let Some(m) = c["resources"].get(part).and_then(Value::as_object) {
                                out.extend(m.keys().cloned());
                            }
                        }
                    }
                }
                resource_keys(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| resource_keys(v, out)),
        _ => {}
    }
}

#[test]
fn every_resource_key_is_native_or_qualified() {
    let mut exports = all_exports();
    // With a model on this machine: memory (and ephemeral-storage for a download) too.
    exports.extend(memory_exports());
    let mut seen = std::collections::BTreeSet::new();
    for (name, export) in &exports {
        for value in json_values(export) {
            let mut keys = Vec::new();
            resource_keys(&value, &mut keys);
            for key in keys {
                assert!(is_valid_resource_key(&key), "{name}: resource key `{key}`");
                seen.insert(key);
            }
            // Claims request storage, and only that.
            if value["kind"] == "PersistentVolumeClaim" {
                let requests = value["spec"]["resources"]["requests"].as_object().unwrap();
                assert_eq!(requests.keys().collect::<Vec<_>>(), ["storage"], "{name}");
            }
        }
    }
    // The walk found what the exports hold (else it checked nothing).
    for key in ["cpu", "memory", "ephemeral-storage", "nvidia.com/gpu"] {
        assert!(seen.contains(key), "no `{key}` in any export: {seen:?}");
    }
}
