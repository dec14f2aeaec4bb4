//! A YAML emitter for Kubernetes objects that every YAML reader reads the same way.
//!
//! serde_norway (like serde_yaml) writes YAML 1.2, where `on`, `off`, `yes`, `no`, `y` and `n`
//! are plain strings; Kubernetes reads manifests as YAML 1.1 (`sigs.k8s.io/yaml`, as does
//! PyYAML), where they are booleans — so `args: [-fa, on]` would reach the API server as
//! `[-fa, true]` and be rejected. Here a string is written plain only when it is unambiguous in
//! both versions (it starts with a letter, `/` or `--`, holds no space or indicator, and is not
//! a boolean or null word); anything else is double-quoted (JSON string syntax, valid YAML).
//! Multi-line strings become literal blocks. The tests read the output back with serde_norway.

use serde_json::Value;

/// One document, block style, ending in a newline.
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    for line in node(value) {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The lines of a value that is the content of a document, a mapping entry or a sequence
/// item. A scalar is one line (or a block header and its lines).
fn node(value: &Value) -> Vec<String> {
    match value {
        Value::Object(map) if !map.is_empty() => {
            let mut lines = Vec::new();
            for (k, v) in map {
                entry(
                    &mut lines,
                    &format!("{}:", scalar_string(k)),
                    v,
                    "  ",
                    false,
                );
            }
            lines
        }
        Value::Array(items) if !items.is_empty() => {
            let mut lines = Vec::new();
            for v in items {
                entry(&mut lines, "-", v, "  ", true);
            }
            lines
        }
        other => scalar(other),
    }
}

/// `head` (`key:` or `-`) followed by `value`: inline when it is a scalar, else on the lines
/// below, indented by `indent` (a sequence under a key stays at the key's indentation, as
/// kubectl writes it). A mapping item of a sequence starts on the `-` line.
fn entry(lines: &mut Vec<String>, head: &str, value: &Value, indent: &str, in_seq: bool) {
    let nested = node(value);
    let is_collection = matches!(value, Value::Object(m) if !m.is_empty())
        || matches!(value, Value::Array(a) if !a.is_empty());
    if !is_collection {
        // A scalar: its first line goes after the head, block lines below.
        let mut it = nested.into_iter();
        lines.push(format!("{head} {}", it.next().unwrap_or_default()));
        lines.extend(it.map(|l| indent_line(indent, &l)));
        return;
    }
    if in_seq {
        let mut it = nested.into_iter();
        lines.push(format!("{head} {}", it.next().unwrap_or_default()));
        lines.extend(it.map(|l| indent_line(indent, &l)));
    } else if matches!(value, Value::Array(_)) {
        lines.push(head.to_string());
        lines.extend(nested);
    } else {
        lines.push(head.to_string());
        lines.extend(nested.iter().map(|l| indent_line(indent, l)));
    }
}

fn indent_line(indent: &str, line: &str) -> String {
    if line.is_empty() {
        String::new()
    } else {
        format!("{indent}{line}")
    }
}

fn scalar(value: &Value) -> Vec<String> {
    match value {
        Value::Null => vec!["null".into()],
        Value::Bool(b) => vec![b.to_string()],
        Value::Number(n) => vec![n.to_string()],
        Value::String(s) => match block(s) {
            Some(lines) => lines,
            None => vec![scalar_string(s)],
        },
        Value::Object(_) => vec!["{}".into()],
        Value::Array(_) => vec!["[]".into()],
    }
}

/// A multi-line string as a literal block (`|`, `|-` or `|+` by its trailing newlines), when
/// its lines allow one; the content lines are indented by the caller.
fn block(s: &str) -> Option<Vec<String>> {
    if !s.contains('\n') {
        return None;
    }
    let body = s.trim_end_matches('\n');
    let trailing = s.len() - body.len();
    let printable = |c: char| c == '\t' || !c.is_control();
    let ok = !body.is_empty()
        && body.chars().all(|c| c == '\n' || printable(c))
        && !body.starts_with([' ', '\t'])
        && !body.contains('\r')
        && !body
            .lines()
            .any(|l| l.ends_with([' ', '\t']) && l.trim().is_empty());
    if !ok {
        return None;
    }
    let chomp = match trailing {
        0 => "|-",
        1 => "|",
        _ => "|+",
    };
    let mut lines = vec![chomp.to_string()];
    lines.extend(body.split('\n').map(|l| format!("  {l}")));
    // `|+` keeps the extra trailing newlines as empty lines.
    lines.extend(std::iter::repeat_n(
        String::new(),
        trailing.saturating_sub(1),
    ));
    // Content lines are relative to the head: the caller indents them further.
    Some(
        lines
            .into_iter()
            .map(|l| {
                if l.trim().is_empty() {
                    String::new()
                } else {
                    l
                }
            })
            .collect(),
    )
}

/// A string as a one-line scalar: plain when unambiguous, else double-quoted.
pub fn scalar_string(s: &str) -> String {
    if is_plain_safe(s) {
        s.to_string()
    } else {
        serde_json::to_string(s).expect("strings serialise")
    }
}

/// Words YAML 1.1 or 1.2 reads as something other than a string (compared case-insensitively).
const RESERVED: &[&str] = &["y", "n", "yes", "no", "on", "off", "true", "false", "null"];

fn is_plain_safe(s: &str) -> bool {
    let mut chars = s.chars();
    let first_ok = match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '/' => true,
        Some('-') => matches!(chars.next(), Some(c) if c == '-' || c.is_ascii_alphabetic()),
        _ => false,
    };
    first_ok
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/@%+=,-:".contains(c))
        && !s.ends_with(':')
        && !RESERVED.contains(&s.to_ascii_lowercase().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(v: &Value) {
        let text = to_string(v);
        let back: Value = serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(&back, v, "{text}");
    }

    #[test]
    fn ambiguous_strings_are_quoted() {
        for s in [
            "on", "off", "On", "OFF", "yes", "No", "y", "N", "true", "null", "~", "", "8080",
            "0755", "1:30", "1_000", "3,1", "0.0.0.0", "-1", ".5", "=", "<<", "*a", "&a", "!x",
            "a: b", "a #b", " lead", "trail ", "@x", "`x", "%x", "|", ">", "a:",
        ] {
            let q = scalar_string(s);
            assert!(q.starts_with('"'), "`{s}` must be quoted, got {q}");
            round_trip(&json!({ "k": s, "l": [s] }));
        }
        for s in [
            "--host",
            "-fa",
            "/models/x.gguf",
            "nvidia.com/gpu",
            "https://h/x.gguf",
            "ReadWriteOnce",
        ] {
            assert_eq!(scalar_string(s), s);
        }
    }

    #[test]
    fn structures_round_trip() {
        round_trip(&json!({
            "a": {"b": [1, {"c": "d", "e": [true, false]}, [], {}], "f": null},
            "script": "set -eu\n  indented\n\nlast\n",
            "no_newline": "a\nb",
            "many": "a\nb\n\n\n",
            "leading": "  x\ny",
            "list": [{"x": {"y": [{"z": "w"}]}}, "s\nt\n"],
            "empty": {}
        }));
    }
}
