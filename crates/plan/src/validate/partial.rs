//! Pools read despite structural errors: malformed parts pruned, missing required fields
//! given placeholders, and errors that depend on a malformed field not reported twice.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::Pool;
use crate::diagnostic::Diagnostic;
use crate::document::{join_index, join_key};

/// Required pool fields: each gets a [`placeholder`] when it is missing or malformed, so that
/// the rest of the pool can still be checked.
const REQUIRED: [&str; 4] = ["id", "engine", "model", "devices"];

fn placeholder(field: &str) -> Value {
    match field {
        "engine" => json!("llamacpp"),
        "devices" => json!([]),
        _ => json!(""),
    }
}

/// Pool fields checked against another pool field: (checked, against). When the second is
/// malformed, the first is checked against a default and its error would be misleading.
const DEPENDS_ON: &[(&str, &str)] = &[
    ("devices", "backend"),
    ("tensor_split", "devices"),
    ("tensor_split", "backend"),
    ("provisioning.ports", "replicas"),
    ("provisioning.source", "provisioning.mode"),
];

/// The error at `path` comes from comparing it with the malformed field at `error_path`.
pub(super) fn depends_on(path: &str, error_path: &str) -> bool {
    DEPENDS_ON.iter().any(|(checked, against)| {
        path.strip_suffix(checked)
            .and_then(|pool| pool.strip_suffix('.'))
            .is_some_and(|pool| is_under(error_path, &join_key(pool, against)))
    })
}

/// `path` is `prefix` or inside it.
pub(super) fn is_under(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        || prefix.is_empty()
}

/// Remove the node at `rel` (`.a.b[2]`, relative to `value`).
fn prune(value: &mut Value, rel: &str) {
    let mut segments: Vec<&str> = Vec::new();
    for part in rel.split('.').filter(|s| !s.is_empty()) {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            if i > 0 {
                segments.push(&rest[..i]);
            }
            rest = &rest[i..];
            while let Some(end) = rest.find(']') {
                segments.push(&rest[..=end]);
                rest = &rest[end + 1..];
            }
        } else {
            segments.push(rest);
        }
    }
    let Some((last, parents)) = segments.split_last() else {
        return;
    };
    let mut node = value;
    for seg in parents {
        let next = match seg.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            Some(i) => i.parse::<usize>().ok().and_then(|i| node.get_mut(i)),
            None => node.get_mut(*seg),
        };
        match next {
            Some(n) => node = n,
            None => return,
        }
    }
    match last.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        Some(i) => {
            if let (Some(arr), Ok(i)) = (node.as_array_mut(), i.parse::<usize>()) {
                if i < arr.len() {
                    arr.remove(i);
                }
            }
        }
        None => {
            if let Some(obj) = node.as_object_mut() {
                obj.remove(*last);
            }
        }
    }
}

/// The pools of `raw_pools` that read as pools, each with its path, once the parts with a
/// structural error are pruned and missing required fields get placeholders.
pub(super) fn pools(raw_pools: &[Value], structural_errors: &[Diagnostic]) -> Vec<(String, Pool)> {
    let mut parsed: Vec<(String, Pool)> = Vec::new();
    for (i, raw) in raw_pools.iter().enumerate() {
        let path = join_index("pools", i);
        // A bad list item prunes its whole list: removing just the item would shift the
        // items after it, and checks of the list would point at the wrong ones.
        let bad: BTreeSet<&str> = structural_errors
            .iter()
            .map(|d| d.path.as_str())
            .filter(|p| is_under(p, &path) && *p != path)
            .map(|p| match p[path.len()..].find('[') {
                Some(i) => &p[..path.len() + i],
                None => p,
            })
            .collect();
        // Most pools are whole: read them where they are rather than from a copy.
        let complete = bad.is_empty()
            && raw
                .as_object()
                .is_some_and(|obj| REQUIRED.iter().all(|f| obj.contains_key(*f)));
        let pool = if complete {
            Pool::deserialize(raw).ok()
        } else {
            let mut raw = raw.clone();
            for p in bad.iter().rev() {
                prune(&mut raw, &p[path.len()..]);
            }
            if let Some(obj) = raw.as_object_mut() {
                for field in REQUIRED {
                    obj.entry(field).or_insert_with(|| placeholder(field));
                }
            }
            serde_json::from_value::<Pool>(raw).ok()
        };
        if let Some(pool) = pool {
            parsed.push((path, pool));
        }
    }
    parsed
}
