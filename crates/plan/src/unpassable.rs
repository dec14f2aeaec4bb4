//! Text a config may not hold because it cannot reach what it is for: a NUL byte ends a
//! string in argv, the environment and every path, so a flag, env value or path holding one
//! would fail at spawn (or name another file); and `~`, which only a shell expands.

use serde_json::Value;

use crate::document::{join_index, join_key};

/// The field path of every string (value or mapping key) in `value` that holds a NUL byte,
/// and whether it is the key that holds it. Iterative: the depth is bounded when the document
/// is read, but this does not rely on it.
pub(crate) fn nul_bytes(value: &Value) -> Vec<(String, bool)> {
    let mut found = Vec::new();
    let mut stack: Vec<(String, &Value)> = vec![(String::new(), value)];
    while let Some((path, v)) = stack.pop() {
        match v {
            Value::String(s) if s.contains('\0') => found.push((path, false)),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate().rev() {
                    stack.push((join_index(&path, i), item));
                }
            }
            Value::Object(map) => {
                for (key, child) in map.iter().rev() {
                    let child_path = join_key(&path, key);
                    if key.contains('\0') {
                        found.push((child_path, true));
                    } else {
                        stack.push((child_path, child));
                    }
                }
            }
            _ => {}
        }
    }
    found
}

pub(crate) const NUL_MESSAGE: &str =
    "holds a NUL byte (`\\0`), which cannot be passed to a process or be part of a path";
pub(crate) const NUL_HELP: &str =
    "remove the `\\0`: flags, environment values and paths cannot hold it";

/// `path` starts with `~` (`~`, `~/…`, `~user/…`): provision does not expand it, and the
/// file would be looked up under a directory named `~`.
pub(crate) fn starts_with_tilde(path: &str) -> bool {
    path.trim_start().starts_with('~')
}

pub(crate) const TILDE_HELP: &str = "provision does not expand `~` (no shell reads the config, and $HOME differs under sudo): write the full path, e.g. /home/me/… instead of ~/…, or one relative to the config file (./…)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nul_in_values_and_keys() {
        let v = serde_json::json!({"a": ["x", "y\u{0}"], "b\u{0}": 1, "c": {"d": "\u{0}"}});
        let mut found = nul_bytes(&v);
        found.sort();
        assert_eq!(
            found,
            vec![
                ("a[1]".to_string(), false),
                ("b\u{0}".to_string(), true),
                ("c.d".to_string(), false)
            ]
        );
    }

    #[test]
    fn tilde_paths() {
        assert!(
            starts_with_tilde("~/m.gguf") && starts_with_tilde("~") && starts_with_tilde("~u/x")
        );
        assert!(!starts_with_tilde("./~/x") && !starts_with_tilde("/a/~"));
    }
}
