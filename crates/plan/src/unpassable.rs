//! Text a config may not hold because it cannot reach what it is for: a NUL byte ends a
//! string in argv, the environment and every path, so a flag, env value or path holding one
//! would fail at spawn (or name another file); and `~`, which only a shell expands.

use serde_json::Value;

use crate::document::{join_index, join_key};

/// The field path of every string (value or mapping key) in `value` that holds a NUL byte,
/// and whether it is the key that holds it (see [`strings_where`]).
pub(crate) fn nul_bytes(value: &Value) -> Vec<(String, bool)> {
    strings_where(value, |s| s.contains('\0'))
}

/// The field path of every string (value or mapping key) in `value` that holds the text
/// provision reserves for its secret placeholders (`${secret:`): a step expands it, so it
/// could never reach a server, a URL or a file as written, and the fingerprint could not tell
/// two such values apart.
pub(crate) fn secret_placeholders(value: &Value) -> Vec<(String, bool)> {
    strings_where(value, |s| s.contains("${secret:"))
}

/// The field path of every string (value or mapping key) in `value` for which `hit` holds,
/// and whether it is the key. Iterative, one frame per open list or mapping (the
/// depth is bounded when the document is read, but this does not rely on it); a path is built
/// only for a collection it enters and for what it finds, not for every item (a list of a
/// million items once cost a million path strings here).
fn strings_where(value: &Value, hit: impl Fn(&str) -> bool) -> Vec<(String, bool)> {
    let mut found = Vec::new();
    if matches!(value, Value::String(s) if hit(s)) {
        found.push((String::new(), false));
    }
    let mut stack: Vec<(String, Items)> = Items::of(value)
        .map(|items| (String::new(), items))
        .into_iter()
        .collect();
    while let Some((path, items)) = stack.last_mut() {
        let (place, child) = match items {
            Items::List(list) => match list.next() {
                Some((i, item)) => (Place::Index(i), item),
                None => {
                    stack.pop();
                    continue;
                }
            },
            Items::Map(map) => match map.next() {
                Some((key, _)) if hit(key) => {
                    found.push((join_key(path, key), true));
                    continue;
                }
                Some((key, item)) => (Place::Key(key), item),
                None => {
                    stack.pop();
                    continue;
                }
            },
        };
        let child_path = |path: &str| match place {
            Place::Index(i) => join_index(path, i),
            Place::Key(k) => join_key(path, k),
        };
        match child {
            Value::String(s) if hit(s) => found.push((child_path(path), false)),
            _ => {
                if let Some(items) = Items::of(child) {
                    let child_path = child_path(path);
                    stack.push((child_path, items));
                }
            }
        }
    }
    found
}

/// The items of a list or mapping still to be looked at.
enum Items<'v> {
    List(std::iter::Enumerate<std::slice::Iter<'v, Value>>),
    Map(serde_json::map::Iter<'v>),
}

impl<'v> Items<'v> {
    fn of(value: &'v Value) -> Option<Items<'v>> {
        match value {
            Value::Array(a) => Some(Items::List(a.iter().enumerate())),
            Value::Object(m) => Some(Items::Map(m.iter())),
            _ => None,
        }
    }
}

/// Where a child sits in its parent, its path not yet written out.
#[derive(Clone, Copy)]
enum Place<'k> {
    Index(usize),
    Key(&'k str),
}

pub(crate) const PLACEHOLDER_MESSAGE: &str =
    "holds `${secret:`, which provision reserves for the placeholders of its secrets";
pub(crate) const PLACEHOLDER_HELP: &str = "give a secret by reference (`api_key: {env: NAME}` or `{file: PATH}`) or as an env value whose name marks it secret; the text `${secret:` itself cannot be passed through";

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
