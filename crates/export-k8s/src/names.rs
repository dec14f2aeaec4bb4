//! Kubernetes names and labels for pools.
//!
//! A pool id (letters, digits, `.`, `_`, `-`, up to 64) is not always a Kubernetes name: a
//! Service name is a DNS-1035 label (lower case letters, digits and `-`, starting with a
//! letter, at most 63). An id that already is one is used as it is; any other id is mapped to
//! one and given a suffix from its sha256, so two ids never share a name (`Chat` and `chat`,
//! `a.b` and `a_b`) and the name does not depend on which other pools are exported.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// `app.kubernetes.io/name` of every object.
pub const APP_NAME: &str = "llama-server";
/// `app.kubernetes.io/managed-by` of every object.
pub const MANAGED_BY: &str = "provision";
/// Annotation holding the pool id as written in the config.
pub const POOL_ANNOTATION: &str = "provision/pool";
/// Annotation holding the model ref as written in the config.
pub const MODEL_ANNOTATION: &str = "provision/model-ref";

const MAX_LABEL: usize = 63;

/// The Kubernetes name of a pool: a DNS-1035 label.
pub fn pool_name(pool_id: &str) -> String {
    if is_dns1035_label(pool_id) {
        return pool_id.to_string();
    }
    let mapped: String = pool_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let mut base = if mapped.starts_with(|c: char| c.is_ascii_lowercase()) {
        mapped
    } else {
        format!("pool-{mapped}")
    };
    let hash: String = Sha256::digest(pool_id.as_bytes())
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect();
    base.truncate(MAX_LABEL - hash.len() - 1);
    let base = base.trim_end_matches('-');
    format!("{base}-{hash}")
}

/// `[a-z]([-a-z0-9]*[a-z0-9])?`, at most 63 characters (Service names).
pub fn is_dns1035_label(s: &str) -> bool {
    s.len() <= MAX_LABEL && s.starts_with(|c: char| c.is_ascii_lowercase()) && is_label_body(s)
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters (namespaces).
pub fn is_dns1123_label(s: &str) -> bool {
    s.len() <= MAX_LABEL
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && is_label_body(s)
}

/// Dot-separated DNS-1123 labels, at most 253 characters (Secret and claim names).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

fn is_label_body(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.ends_with('-')
}

/// The labels of every object of a pool; the selector is the same set.
pub fn labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), APP_NAME.to_string()),
        ("app.kubernetes.io/instance".to_string(), name.to_string()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            MANAGED_BY.to_string(),
        ),
    ])
}

/// A Kubernetes quantity as the API accepts it: a decimal number with an optional binary
/// (`Ki` … `Ei`) or decimal (`k`, `M` … `E`) suffix, e.g. `20Gi`.
pub fn is_quantity(s: &str) -> bool {
    const SUFFIXES: &[&str] = &[
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "k", "M", "G", "T", "P", "E", "",
    ];
    SUFFIXES.iter().any(|suffix| {
        s.strip_suffix(suffix).is_some_and(|number| {
            let (int, frac) = number.split_once('.').unwrap_or((number, "0"));
            !int.is_empty()
                && !frac.is_empty()
                && int.bytes().all(|b| b.is_ascii_digit())
                && frac.bytes().all(|b| b.is_ascii_digit())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids_are_kept() {
        for id in ["chat", "local-llamacpp-gpu", "pool0", "a"] {
            assert_eq!(pool_name(id), id);
        }
    }

    #[test]
    fn other_ids_map_to_distinct_valid_names() {
        let ids = [
            "Chat",
            "chat_",
            "a.b",
            "a_b",
            "0pool",
            "-x",
            "x-",
            &"L".repeat(64),
            &format!("{}a", "b".repeat(63)),
            &format!("{}c", "b".repeat(63)),
        ];
        let names: Vec<String> = ids.iter().map(|id| pool_name(id)).collect();
        for (id, name) in ids.iter().zip(&names) {
            assert!(is_dns1035_label(name), "{id} -> {name}");
            assert_ne!(*id, name.as_str());
        }
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        assert!(pool_name("a.b").starts_with("a-b-"));
        assert!(pool_name("0pool").starts_with("pool-0pool-"));
    }

    #[test]
    fn name_checks() {
        assert!(is_dns1123_label("0ns"));
        assert!(!is_dns1035_label("0ns"));
        assert!(!is_dns1123_label("Ns"));
        assert!(!is_dns1123_label("ns-"));
        assert!(!is_dns1123_label(""));
        assert!(is_dns1123_subdomain("models.shared"));
        assert!(!is_dns1123_subdomain("models..shared"));
    }

    #[test]
    fn quantities() {
        for q in ["20Gi", "1", "0.5", "512Mi", "2k", "1.5G"] {
            assert!(is_quantity(q), "{q}");
        }
        for q in ["", "Gi", "20GB", "-1Gi", "1.", ".5", "20 Gi", "1e3x"] {
            assert!(!is_quantity(q), "{q}");
        }
    }
}
