//! Reading a config document: YAML or JSON (chosen by content), parsed into a JSON value, plus
//! an index from field paths to their line and column so that every later check can point at
//! the text that caused it.

use std::fmt::{self, Write as _};
use std::path::Path;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::diagnostic::{ConfigError, Diagnostic, Location};
use crate::input_limits::{too_many_for_the_general_reader, MAX_GENERAL_VALUES};
use crate::span_index::{index_spans, NodeSpan, SpanIndex};

pub use crate::config_file::MAX_CONFIG_BYTES;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

/// A parsed config document.
#[derive(Debug, Clone)]
pub struct Document {
    /// The file name as the user gave it; used in every message.
    pub file: String,
    pub text: String,
    pub format: Format,
    pub value: Value,
    spans: SpanIndex,
}

impl Document {
    /// Read and parse `path`. A file that cannot be read is reported like any other problem;
    /// so is one that is not a regular file (a FIFO, a device, a directory: refused before
    /// anything is read) or is larger than [`MAX_CONFIG_BYTES`].
    pub fn read(path: &Path) -> Result<Document, ConfigError> {
        let file = path.display().to_string();
        match crate::config_file::read_bounded(path) {
            Ok(text) => Document::parse(&file, text),
            Err(problem) => Err(ConfigError::new(file, None, vec![problem])),
        }
    }

    /// Parse `text`. JSON when the content is a JSON object or array, YAML otherwise; the
    /// extension does not decide.
    pub fn parse(file: &str, text: String) -> Result<Document, ConfigError> {
        let looks_like_json = matches!(
            text.trim_start_matches('\u{feff}')
                .trim_start()
                .chars()
                .next(),
            Some('{') | Some('[')
        );
        // JSON by serde_json; YAML, when it is ordinary, built in the same pass as the span
        // index (see `crate::yaml_value`), and through serde_norway otherwise.
        let json = looks_like_json.then(|| parse_json(&text));
        let wants_yaml = !matches!(json, Some(Ok(_)));
        // Duplicate keys come before any other problem: the YAML parser stops at the first
        // one, pointing at its mapping rather than at the key, and JSON silently keeps the
        // last one.
        let (spans, duplicates, direct, over_limit, values) = index_spans(&text, wants_yaml);
        // Too deep or too many aliases: nothing else reads the document.
        if let Some(problem) = over_limit {
            return Err(ConfigError::new(file, Some(text), vec![problem]));
        }
        if !duplicates.is_empty() {
            let diags = duplicates
                .into_iter()
                .map(|(path, key, loc, first)| {
                    Diagnostic::error(path, format!("duplicate key `{key}`"))
                        .at(Some(loc))
                        .with_help(format!(
                            "the same key is already set on line {}; keep one",
                            first.line
                        ))
                })
                .collect();
            return Err(ConfigError::new(file, Some(text), diags));
        }
        // The general reader takes a bounded document only (see `MAX_GENERAL_VALUES`); past
        // that, a syntax error is the YAML parser's here rather than serde_norway's, and a
        // document that looks like JSON and is not shows its JSON error.
        let (values, syntax_error) = values;
        let over_general = (values > MAX_GENERAL_VALUES)
            .then(|| syntax_error.unwrap_or_else(|| too_many_for_the_general_reader(values)));
        let parsed = match (json, direct, over_general) {
            (Some(Ok(v)), _, _) => Ok((Format::Json, v)),
            (_, Some(v), _) => Ok((Format::Yaml, v)),
            (Some(Err(json_err)), None, Some(_)) => Err(json_err),
            (None, None, Some(too_many)) => Err(too_many),
            // A YAML flow mapping also starts with `{`: accept it when it is valid YAML.
            (Some(Err(json_err)), None, None) => parse_yaml(&text)
                .map(|v| (Format::Yaml, v))
                .map_err(|_| json_err),
            (None, None, None) => parse_yaml(&text).map(|v| (Format::Yaml, v)),
        };
        let (format, value) = match parsed {
            Ok(ok) => ok,
            Err(mut diag) => {
                match diag.location {
                    // An error at the end of the input: show the last line.
                    Some(loc) => diag.location = Some(clamp_to_text(&text, loc)),
                    // A value the parser accepted but JSON cannot hold (a tag, a complex key):
                    // point at it through the span index.
                    None => diag.location = spans.locate(&diag.path).map(NodeSpan::value_location),
                }
                return Err(ConfigError::new(file, Some(text), vec![diag]));
            }
        };
        Ok(Document {
            file: file.to_string(),
            text,
            format,
            value,
            spans,
        })
    }

    /// Where the value at `path` starts.
    pub fn value_location(&self, path: &str) -> Option<Location> {
        self.spans.locate(path).map(NodeSpan::value_location)
    }

    /// Where the key of the field at `path` is written (its value when it has no key).
    pub fn key_location(&self, path: &str) -> Option<Location> {
        self.spans.locate(path).map(NodeSpan::key_location)
    }

    /// [`Document::key_location`] of each field `key` of the mapping at `path`, `path` looked up
    /// once rather than once per field.
    pub fn field_key_locations<'k>(
        &self,
        path: &str,
        keys: impl IntoIterator<Item = &'k str>,
    ) -> Vec<Option<Location>> {
        let mapping = self.spans.locate_exact(path);
        // Where a field the index does not hold (one from a merge key or an alias) points.
        let fallback = std::cell::OnceCell::new();
        keys.into_iter()
            .map(|key| {
                let span = match mapping {
                    Some(node) if self.spans.is_plain_key(key) => self
                        .spans
                        .child(node, key)
                        .or_else(|| *fallback.get_or_init(|| self.spans.locate(path))),
                    _ => self.spans.locate(&join_key(path, key)),
                };
                span.map(NodeSpan::key_location)
            })
            .collect()
    }
}

/// `pools[0].id` → `pools[0]` → `pools` → ``.
pub fn parent_path(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(&path[..cut])
}

pub fn join_key(parent: &str, key: &str) -> String {
    let mut path = String::new();
    join_key_into(&mut path, parent, key);
    path
}

pub fn join_index(parent: &str, index: usize) -> String {
    let mut path = String::new();
    join_index_into(&mut path, parent, index);
    path
}

/// [`join_key`] into `path`, reusing its allocation.
pub fn join_key_into(path: &mut String, parent: &str, key: &str) {
    path.clear();
    path.reserve(parent.len() + 1 + key.len());
    path.push_str(parent);
    if !parent.is_empty() {
        path.push('.');
    }
    path.push_str(key);
}

/// [`join_index`] into `path`, reusing its allocation.
pub fn join_index_into(path: &mut String, parent: &str, index: usize) {
    path.clear();
    let _ = write!(path, "{parent}[{index}]");
}

/// A location past the end of `text` (an unexpected end of input) moved to the end of its
/// last non-empty line, so that the line can be shown.
fn clamp_to_text(text: &str, loc: Location) -> Location {
    let lines: Vec<&str> = text.lines().collect();
    match lines.iter().rposition(|l| !l.trim().is_empty()) {
        Some(last) if loc.line > last + 1 => Location {
            line: last + 1,
            column: lines[last].trim_end().chars().count() + 1,
            len: 1,
        },
        _ => loc,
    }
}

fn parse_json(text: &str) -> Result<Value, Diagnostic> {
    serde_json::from_str(text).map_err(|e| {
        // The location is shown separately: drop serde_json's own " at line L column C".
        let message = e.to_string();
        let message = message.split(" at line ").next().unwrap_or(&message);
        Diagnostic::error("", format!("invalid JSON: {message}"))
            .at(Some(Location {
                line: e.line(),
                column: e.column().max(1),
                len: 1,
            }))
            .with_help("fix the syntax; JSON configs are parsed by content, whatever the extension")
    })
}

/// YAML straight into JSON when nothing in it needs serde_norway's own value (see
/// [`PlainJson`]); through that value otherwise, which is also what reports every problem. For
/// the YAML that `crate::yaml_value` does not build from the span index's events.
pub(crate) fn parse_yaml(text: &str) -> Result<Value, Diagnostic> {
    match serde_norway::from_str::<PlainJson>(text) {
        Ok(PlainJson(value)) => Ok(value),
        Err(_) => parse_yaml_value(text),
    }
}

/// The problem of a YAML syntax error, `message` at `loc`.
pub(crate) fn yaml_syntax_error(message: &str, loc: impl Into<Option<Location>>) -> Diagnostic {
    Diagnostic::error("", format!("invalid YAML: {message}"))
        .at(loc.into())
        .with_help("fix the YAML syntax (indentation, quoting, a missing `:`)")
}

fn parse_yaml_value(text: &str) -> Result<Value, Diagnostic> {
    let mut yaml: serde_norway::Value = serde_norway::from_str(text).map_err(|e| {
        let message = e.to_string();
        let message = message.split(" at line ").next().unwrap_or(&message);
        yaml_syntax_error(
            message,
            e.location().map(|l| Location {
                line: l.line(),
                column: l.column(),
                len: 1,
            }),
        )
    })?;
    yaml.apply_merge()
        .map_err(|e| Diagnostic::error("", format!("invalid YAML merge key: {e}")))?;
    // Taken apart as it is converted: each part's strings move and its nodes are freed, so the
    // document is not held twice at its peak (an alias or merge key repeats its nodes in both).
    yaml_to_json(yaml, "")
}

fn yaml_to_json(v: serde_norway::Value, path: &str) -> Result<Value, Diagnostic> {
    use serde_norway::Value as Y;
    Ok(match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .ok_or_else(|| {
                        Diagnostic::error(path, format!("the number {f} is not allowed here"))
                    })?
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| yaml_to_json(item, &join_index(path, i)))
                .collect::<Result<_, _>>()?,
        ),
        Y::Mapping(map) => {
            let mut out = serde_json::Map::new();
            for (k, val) in map {
                let key = match k {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    _ => {
                        return Err(
                            Diagnostic::error(path, "a mapping key must be a plain string")
                                .with_help("write keys as plain words, e.g. `id: my-pool`"),
                        )
                    }
                };
                let child = yaml_to_json(val, &join_key(path, &key))?;
                out.insert(key, child);
            }
            Value::Object(out)
        }
        Y::Tagged(t) => {
            return Err(
                Diagnostic::error(path, format!("YAML tag `{}` is not supported", t.tag))
                    .with_help("remove the `!tag`; provision configs use plain YAML values"),
            )
        }
    })
}

/// A YAML document read directly as a JSON value, without building serde_norway's value first
/// (which held the whole document a second time). It accepts only what [`yaml_to_json`] would
/// turn into the same JSON unchanged: plain scalars, lists, and mappings with distinct string
/// keys. A tag, a merge key (`<<`), any other key, a repeated key or a number JSON cannot hold
/// is an error here, and the document then takes the general path.
struct PlainJson(Value);

impl<'de> Deserialize<'de> for PlainJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PlainVisitor).map(PlainJson)
    }
}

struct PlainVisitor;

impl<'de> Visitor<'de> for PlainVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML value that JSON holds as it is")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Value, E> {
        Ok(Value::from(i))
    }

    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Value, E> {
        Ok(Value::from(u))
    }

    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| E::custom("not a finite number"))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(PlainJson(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(PlainKey(key)) = map.next_key()? {
            if key == "<<" {
                return Err(de::Error::custom("a merge key"));
            }
            match out.entry(key) {
                serde_json::map::Entry::Vacant(slot) => {
                    slot.insert(map.next_value::<PlainJson>()?.0);
                }
                serde_json::map::Entry::Occupied(_) => {
                    return Err(de::Error::custom("a repeated key"))
                }
            }
        }
        Ok(Value::Object(out))
    }
}

/// A mapping key that is a string (the only kind [`PlainJson`] takes).
struct PlainKey(String);

impl<'de> Deserialize<'de> for PlainKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = String;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<String, E> {
                Ok(s.to_owned())
            }

            fn visit_string<E: de::Error>(self, s: String) -> Result<String, E> {
                Ok(s)
            }
        }
        deserializer.deserialize_any(KeyVisitor).map(PlainKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_nested_fields_in_yaml() {
        let text = "pools:\n  - id: a\n    provisioning:\n      flags: [--metrics, -c, \"4\"]\n";
        let doc = Document::parse("c.yaml", text.into()).unwrap();
        assert_eq!(doc.format, Format::Yaml);
        let key = doc.key_location("pools[0].provisioning").unwrap();
        assert_eq!((key.line, key.column), (3, 5));
        let flag = doc
            .value_location("pools[0].provisioning.flags[2]")
            .unwrap();
        // A quoted scalar starts at its opening quote.
        assert_eq!((flag.line, flag.column, flag.len), (4, 30, 3));
        // Unknown paths fall back to the nearest located ancestor.
        let missing = doc.key_location("pools[0].provisioning.nope").unwrap();
        assert_eq!(missing.line, 3);
    }

    #[test]
    fn json_is_chosen_by_content_and_located() {
        let text = "{\n  \"pools\": [\n    {\"id\": \"a\", \"devices\": [0]}\n  ]\n}\n";
        let doc = Document::parse("c.yaml", text.into()).unwrap();
        assert_eq!(doc.format, Format::Json);
        let id = doc.key_location("pools[0].devices").unwrap();
        assert_eq!((id.line, id.column), (3, 17));
    }

    #[test]
    fn yaml_flow_mapping_is_not_mistaken_for_json() {
        let doc = Document::parse("c.yml", "{pools: []}".into()).unwrap();
        assert_eq!(doc.format, Format::Yaml);
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let err = Document::parse("c.yaml", "pools: []\npools: []\n".into()).unwrap_err();
        assert!(err.to_string().contains("duplicate"), "{err}");
    }

    #[test]
    fn plain_yaml_is_read_directly_and_as_the_general_path_reads_it() {
        let text = "pools:\n  - id: a\n    ctx: 4096\n    ratio: 0.5\n    neg: -3\n    \
                    on: true\n    none: ~\n    empty:\n    quoted: \"4\"\n    \
                    leading: 007\n    flags: [--metrics, \"-c\", '8']\n";
        let direct = serde_norway::from_str::<PlainJson>(text)
            .expect("plain YAML")
            .0;
        assert_eq!(direct, parse_yaml_value(text).unwrap());
        assert_eq!(direct["pools"][0]["leading"], "007");
    }

    #[test]
    fn yaml_that_needs_the_general_path_takes_it() {
        for text in [
            // A merge key.
            "base: &b {x: 1}\nm:\n  <<: *b\n  y: 2\n",
            // Keys that are not strings.
            "1: a\ntrue: b\n",
            // A tag, and a number JSON cannot hold.
            "a: !t x\n",
            "a: .nan\n",
        ] {
            assert!(serde_norway::from_str::<PlainJson>(text).is_err(), "{text}");
            let via = parse_yaml(text).map_err(|d| d.message);
            assert_eq!(via, parse_yaml_value(text).map_err(|d| d.message), "{text}");
        }
        assert_eq!(
            parse_yaml("1: a\ntrue: b\n").unwrap(),
            serde_json::json!({"1": "a", "true": "b"})
        );
    }

    #[test]
    fn paths_through_keys_with_dots_find_the_last_node_written() {
        // `a.b` is both the key `a.b` and the key `b` under `a`; the later one wins, as a
        // map from path strings to spans kept it.
        let text = "x:\n  a.b: 1\n  a: {b: 2}\n  \"c[0]\": 3\n  c: [4]\n  \"\": {d: 5}\n";
        let doc = Document::parse("c.yaml", text.into()).unwrap();
        assert_eq!(doc.value_location("x.a.b").map(|l| l.line), Some(3));
        let c0 = doc.value_location("x.c[0]").unwrap();
        assert_eq!((c0.line, c0.column), (5, 7));
        assert_eq!(doc.value_location("x..d").map(|l| l.line), Some(6));
        // Unknown paths fall back to the nearest located ancestor.
        assert_eq!(doc.key_location("x.a.zz").map(|l| l.line), Some(3));
        assert_eq!(doc.key_location("x.c[01]").map(|l| l.line), Some(5));
    }

    /// A document serde_norway would read (an anchor, a tag) past `MAX_GENERAL_VALUES` is
    /// refused, naming the cap: that reader took ~300 bytes a value (150 MiB for a 1 MiB
    /// list). Plain documents are read whatever their size, and a syntax error stays one.
    #[test]
    fn the_general_reader_takes_a_bounded_document_only() {
        let items = vec!["a"; MAX_GENERAL_VALUES as usize].join(",");
        let doc = Document::parse("c.yaml", format!("x: [{items}]\n")).unwrap();
        let last = doc.value_location(&format!("x[{}]", MAX_GENERAL_VALUES - 1));
        assert_eq!(
            last.map(|l| l.column),
            Some(2 * MAX_GENERAL_VALUES as usize + 3)
        );
        for text in [
            format!("x: [{items}, !t a]\n"),
            format!("x: &b [{items}]\n"),
        ] {
            let err = Document::parse("c.yaml", text).unwrap_err().to_string();
            assert!(err.contains("at most 200000 are allowed there"), "{err}");
        }
        let few = vec!["a"; 1_000].join(",");
        let doc = Document::parse("c.yaml", format!("x: &b [{few}]\ny: *b\n")).unwrap();
        assert_eq!(doc.value["y"].as_array().map(Vec::len), Some(1_000));
        let err = Document::parse("c.yaml", format!("x: [{items}\n  b: c\n")).unwrap_err();
        assert!(err.to_string().contains("invalid YAML"), "{err}");
        assert_eq!(err.diagnostics[0].location.map(|l| l.line), Some(2));
    }

    #[test]
    fn field_key_locations_agree_with_key_location() {
        let text = "base: &b {engine: llamacpp}\npools:\n  - <<: *b\n    id: a\n    \
                    src: &s {repo: r}\n  - id: b\n    src: *s\n";
        let doc = Document::parse("c.yaml", text.into()).unwrap();
        for path in ["", "pools[0]", "pools[1].src", "pools[0].src", "nowhere"] {
            let keys = ["id", "engine", "src", "repo", "missing", "a.b", ""];
            let each: Vec<_> = keys
                .iter()
                .map(|k| doc.key_location(&join_key(path, k)))
                .collect();
            assert_eq!(doc.field_key_locations(path, keys), each, "{path}");
        }
    }
}
