//! Structural validation: walks the config's own JSON Schema (generated from the types by
//! schemars) over the parsed document and reports *every* unknown field, wrong type, missing
//! field and out-of-range number, each with its field path. serde stops at the first error;
//! this does not. For `anyOf`/`oneOf` it descends into the branch that fits the value, so a
//! typo deep inside an optional section is still reported as that typo.

use serde_json::{Map, Value};

use crate::diagnostic::{did_you_mean, Diagnostic, Location};
use crate::document::{join_index_into, join_key, join_key_into, Document};
use crate::validate::KEPT_DIAGNOSTICS;

pub struct SchemaChecker<'a> {
    root: &'a Value,
    doc: &'a Document,
    pub diagnostics: Vec<Diagnostic>,
    /// Problems found beyond [`KEPT_DIAGNOSTICS`]: counted, not kept.
    omitted: usize,
}

impl<'a> SchemaChecker<'a> {
    pub fn new(root: &'a Value, doc: &'a Document) -> Self {
        SchemaChecker {
            root,
            doc,
            diagnostics: Vec::new(),
            omitted: 0,
        }
    }

    /// Every problem, up to [`KEPT_DIAGNOSTICS`] (see [`SchemaChecker::check_counted`]).
    pub fn check(self) -> Vec<Diagnostic> {
        self.check_counted().0
    }

    /// Every problem, up to [`KEPT_DIAGNOSTICS`], and how many more there are.
    pub fn check_counted(mut self) -> (Vec<Diagnostic>, usize) {
        if !self.doc.value.is_object() {
            let found = describe(&self.doc.value);
            self.diagnostics.push(
                Diagnostic::error(
                    "",
                    format!("the config must be a mapping with a `pools` list, found {found}"),
                )
                .at(self.doc.value_location(""))
                .with_help("start the file with `pools:` followed by a list of pools"),
            );
            return (self.diagnostics, 0);
        }
        let value = &self.doc.value;
        self.walk(self.root, value, "");
        (self.diagnostics, self.omitted)
    }

    fn resolve(&self, schema: &'a Value) -> &'a Value {
        let mut s = schema;
        while let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let Some(name) = r
                .strip_prefix("#/$defs/")
                .or_else(|| r.strip_prefix("#/definitions/"))
            else {
                break;
            };
            let defs = self
                .root
                .get("$defs")
                .or_else(|| self.root.get("definitions"));
            match defs.and_then(|d| d.get(name)) {
                Some(target) => s = target,
                None => break,
            }
        }
        s
    }

    fn error(&mut self, path: &str, at_key: bool, message: String, help: Option<String>) {
        if self.diagnostics.len() >= KEPT_DIAGNOSTICS {
            self.omitted += 1;
            return;
        }
        let location = if at_key {
            self.doc.key_location(path)
        } else {
            self.doc.value_location(path)
        };
        let mut d = Diagnostic::error(path, message).at(location);
        d.help = help;
        self.diagnostics.push(d);
    }

    fn walk(&mut self, schema: &'a Value, value: &Value, path: &str) {
        let schema = self.resolve(schema);
        if schema == &Value::Bool(true) {
            return;
        }
        if let Some(branches) = schema
            .get("anyOf")
            .or_else(|| schema.get("oneOf"))
            .and_then(Value::as_array)
        {
            self.walk_alternatives(branches, value, path);
            return;
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
            self.check_enum(allowed, value, path);
            return;
        }
        if let Some(c) = schema.get("const") {
            self.check_enum(std::slice::from_ref(c), value, path);
            return;
        }
        if let Some(types) = schema.get("type") {
            let types = match types {
                Value::Array(ts) => ts.as_slice(),
                t => std::slice::from_ref(t),
            };
            let names = || types.iter().filter_map(Value::as_str);
            if !names().any(|t| type_matches(t, value)) {
                let types: Vec<&str> = names().collect();
                let expected = types
                    .iter()
                    .map(|t| type_word(t))
                    .collect::<Vec<_>>()
                    .join(" or ");
                let items = schema.get("items").map(|i| self.resolve(i));
                let help = type_help(&types, value, items);
                self.error(
                    path,
                    false,
                    format!("expected {expected}, found {}", describe(value)),
                    help,
                );
                return;
            }
        }
        match value {
            Value::Object(map) => self.walk_object(schema, map, path),
            Value::Array(items) => {
                if self.too_many_items(schema, items.len(), path) {
                    return;
                }
                if let Some(item_schema) = schema.get("items") {
                    // One path buffer for the list rather than a string per item.
                    let mut item_path = String::new();
                    for (i, item) in items.iter().enumerate() {
                        join_index_into(&mut item_path, path, i);
                        self.walk(item_schema, item, &item_path);
                    }
                }
            }
            Value::Number(n) => self.check_range(schema, n, path),
            _ => {}
        }
    }

    fn walk_object(&mut self, schema: &'a Value, map: &Map<String, Value>, path: &str) {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        let props = schema
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or_else(|| EMPTY.get_or_init(Map::new));
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for name in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(name) {
                    let what = if path.is_empty() {
                        "the config".to_string()
                    } else {
                        format!("`{path}`")
                    };
                    self.error(
                        &join_key(path, name),
                        true,
                        format!("missing field `{name}` in {what}"),
                        props
                            .get(name)
                            .and_then(|p| self.resolve(p).get("description"))
                            .and_then(Value::as_str)
                            .map(|d| format!("add `{name}`: {}", first_sentence(d))),
                    );
                }
            }
        }
        // Document order, so messages read top to bottom.
        let locations = self
            .doc
            .field_key_locations(path, map.keys().map(String::as_str));
        let mut fields: Vec<(Option<Location>, (&String, &Value))> =
            locations.into_iter().zip(map).collect();
        // Stable: fields at the same place keep their order.
        fields.sort_by_key(|(location, _)| *location);
        let mut child_path = String::new();
        for (_, (key, child)) in fields {
            join_key_into(&mut child_path, path, key);
            match props.get(key) {
                Some(prop) => self.walk(prop, child, &child_path),
                None => match schema.get("additionalProperties") {
                    // Past the cap, counted before its message and suggestion are worked out.
                    Some(Value::Bool(false)) if self.diagnostics.len() >= KEPT_DIAGNOSTICS => {
                        self.omitted += 1;
                    }
                    Some(Value::Bool(false)) => {
                        let suggestion = did_you_mean(key, props.keys().map(String::as_str));
                        let known = props
                            .keys()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ");
                        let help = match suggestion {
                            Some(s) => format!("did you mean `{s}`?"),
                            None => format!("known fields here: {known}"),
                        };
                        let at = if path.is_empty() {
                            "the top level".to_string()
                        } else {
                            format!("`{path}`")
                        };
                        self.error(
                            &child_path,
                            true,
                            format!("unknown field `{key}` in {at}"),
                            Some(help),
                        );
                    }
                    Some(extra) if extra.is_object() => self.walk(extra, child, &child_path),
                    _ => {}
                },
            }
        }
    }

    fn walk_alternatives(&mut self, branches: &'a [Value], value: &Value, path: &str) {
        let resolved: Vec<&'a Value> = branches.iter().map(|b| self.resolve(b)).collect();
        // A set of constants (an enum with documented variants).
        if resolved
            .iter()
            .all(|b| b.get("const").is_some() || b.get("enum").is_some())
        {
            let constants = |b: &&'a Value| match (b.get("const"), b.get("enum")) {
                (Some(c), _) => std::slice::from_ref(c),
                (_, Some(Value::Array(e))) => e.as_slice(),
                _ => &[],
            };
            // The usual case, an allowed value, without copying the list for the message.
            if resolved.iter().flat_map(constants).any(|c| c == value) {
                return;
            }
            let allowed: Vec<Value> = resolved.iter().flat_map(constants).cloned().collect();
            self.check_enum(&allowed, value, path);
            return;
        }
        let is_null = |b: &&'a Value| b.get("type").and_then(Value::as_str) == Some("null");
        if value.is_null() && resolved.iter().any(is_null) {
            return;
        }
        let candidates = resolved.iter().filter(|b| !is_null(b));
        let mut best: Option<(Vec<Diagnostic>, usize)> = None;
        for branch in candidates {
            let mut sub = SchemaChecker::new(self.root, self.doc);
            sub.walk(branch, value, path);
            if sub.diagnostics.is_empty() {
                return;
            }
            if best
                .as_ref()
                .is_none_or(|b| sub.diagnostics.len() < b.0.len())
            {
                best = Some((sub.diagnostics, sub.omitted));
            }
        }
        let (diagnostics, omitted) = best.unwrap_or_default();
        self.diagnostics.extend(diagnostics);
        self.omitted += omitted;
    }

    fn check_enum(&mut self, allowed: &[Value], value: &Value, path: &str) {
        if allowed.contains(value) {
            return;
        }
        let names: Vec<String> = allowed
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            })
            .collect();
        let list = names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let help = value
            .as_str()
            .and_then(|s| did_you_mean(&s.to_lowercase(), names.iter().map(String::as_str)))
            .map(|s| format!("did you mean `{s}`?"))
            .unwrap_or_else(|| format!("use one of {list}"));
        self.error(
            path,
            false,
            format!("{} is not one of {list}", describe(value)),
            Some(help),
        );
    }

    /// A list longer than its schema's `maxItems` is one problem, and its items are not
    /// checked: a limit on a list is also a limit on the time and output spent on it.
    fn too_many_items(&mut self, schema: &Value, len: usize, path: &str) -> bool {
        let Some(max) = schema.get("maxItems").and_then(Value::as_u64) else {
            return false;
        };
        if len as u64 <= max {
            return false;
        }
        let name = path.rsplit(['.', '[']).next().unwrap_or(path);
        self.error(
            path,
            false,
            format!("`{name}` has {len} items: at most {max} are allowed"),
            Some(format!(
                "provision takes at most {max} here; split the config or trim the list"
            )),
        );
        true
    }

    fn check_range(&mut self, schema: &Value, n: &serde_json::Number, path: &str) {
        let Some(x) = n.as_f64() else { return };
        // schemars writes the bounds of the Rust type as a `format`, not as `maximum`.
        let format_max = match schema.get("format").and_then(Value::as_str) {
            Some("uint8") => Some(u8::MAX as f64),
            Some("uint16") => Some(u16::MAX as f64),
            Some("uint32") => Some(u32::MAX as f64),
            Some("uint64") => Some(u64::MAX as f64),
            _ => None,
        };
        let min = schema.get("minimum").and_then(Value::as_f64);
        let max = schema.get("maximum").and_then(Value::as_f64).or(format_max);
        let below = min.is_some_and(|m| x < m);
        let above = max.is_some_and(|m| x > m);
        if below || above {
            let range = match (min, max) {
                (Some(lo), Some(hi)) => format!("between {lo} and {hi}"),
                (Some(lo), None) => format!("at least {lo}"),
                (None, Some(hi)) => format!("at most {hi}"),
                (None, None) => unreachable!(),
            };
            self.error(
                path,
                false,
                format!("{n} is out of range: must be {range}"),
                None,
            );
        }
    }
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => true,
    }
}

fn type_word(t: &str) -> &str {
    match t {
        "null" => "nothing",
        "boolean" => "true or false",
        "integer" => "an integer",
        "number" => "a number",
        "string" => "a string",
        "array" => "a list",
        "object" => "a mapping",
        other => other,
    }
}

fn type_help(types: &[&str], value: &Value, items: Option<&Value>) -> Option<String> {
    if types.contains(&"string") && (value.is_number() || value.is_boolean()) {
        return Some(format!("quote it: \"{value}\""));
    }
    if value.is_null() {
        let what = types.iter().map(|t| type_word(t)).collect::<Vec<_>>();
        return Some(format!(
            "nothing is written after the `:`; write {}, or remove the line if it is optional",
            what.join(" or ")
        ));
    }
    if types.contains(&"array") && !value.is_array() && !value.is_object() {
        let string_items =
            items.and_then(|i| i.get("type")).and_then(Value::as_str) == Some("string");
        return Some(match value.as_str() {
            // `devices: "0,1"` → `[0,1]`, not `["0,1"]`.
            Some(s) if !string_items => format!("write a list: [{s}]"),
            _ => format!("write a list: [{value}]"),
        });
    }
    if (types.contains(&"integer") || types.contains(&"number")) && value.is_string() {
        return Some("write the number without quotes".into());
    }
    if types.contains(&"object") && value.is_array() {
        return Some("write `name: value` pairs, not a list".into());
    }
    if types.contains(&"boolean") && value.is_string() {
        return Some("write true or false without quotes".into());
    }
    None
}

/// `a string "abc"`, `an integer 3`, `a list`, …
pub fn describe(v: &Value) -> String {
    match v {
        Value::Null => "nothing (null)".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) if n.is_f64() => format!("the number {n}"),
        Value::Number(n) => format!("the integer {n}"),
        Value::String(s) => format!("the string \"{s}\""),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

fn first_sentence(s: &str) -> &str {
    s.split_terminator(". ")
        .next()
        .unwrap_or(s)
        .trim_end_matches('.')
}
