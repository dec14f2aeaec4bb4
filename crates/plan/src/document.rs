//! Reading a config document: YAML or JSON (chosen by content), parsed into a JSON value, plus
//! an index from field paths to their line and column so that every later check can point at
//! the text that caused it.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use saphyr_parser::{Event, Parser, Span, SpannedEventReceiver};
use serde_json::Value;

use crate::diagnostic::{ConfigError, Diagnostic, Location};

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
    spans: HashMap<String, NodeSpan>,
}

#[derive(Debug, Clone, Copy)]
struct NodeSpan {
    key: Option<Location>,
    value: Location,
}

impl Document {
    /// Read and parse `path`. A file that cannot be read is reported like any other problem.
    pub fn read(path: &Path) -> Result<Document, ConfigError> {
        let file = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Document::parse(&file, text),
            Err(err) => Err(ConfigError::new(
                file,
                None,
                vec![
                    Diagnostic::error("", format!("cannot read the config file: {err}"))
                        .with_help("pass an existing YAML or JSON file with --config"),
                ],
            )),
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
        // Duplicate keys first: the YAML parser would stop at the first one, pointing at its
        // mapping rather than at the key, and JSON would silently keep the last one.
        let (spans, duplicates) = index_spans(&text);
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
        let parsed = if looks_like_json {
            match parse_json(&text) {
                Ok(v) => Ok((Format::Json, v)),
                // A YAML flow mapping also starts with `{`: accept it when it is valid YAML.
                Err(json_err) => parse_yaml(&text)
                    .map(|v| (Format::Yaml, v))
                    .map_err(|_| json_err),
            }
        } else {
            parse_yaml(&text).map(|v| (Format::Yaml, v))
        };
        let (format, value) = match parsed {
            Ok(ok) => ok,
            Err(mut diag) => {
                match diag.location {
                    // An error at the end of the input: show the last line.
                    Some(loc) => diag.location = Some(clamp_to_text(&text, loc)),
                    // A value the parser accepted but JSON cannot hold (a tag, a complex key):
                    // point at it through the span index.
                    None => diag.location = locate(&spans, &diag.path).map(|s| s.value),
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
        self.lookup(path).map(|s| s.value)
    }

    /// Where the key of the field at `path` is written (its value when it has no key).
    pub fn key_location(&self, path: &str) -> Option<Location> {
        self.lookup(path).map(|s| s.key.unwrap_or(s.value))
    }

    /// The nearest located ancestor of `path` (itself included).
    fn lookup(&self, path: &str) -> Option<NodeSpan> {
        locate(&self.spans, path)
    }
}

/// The span of `path`, or of its nearest located ancestor.
fn locate(spans: &HashMap<String, NodeSpan>, path: &str) -> Option<NodeSpan> {
    let mut p = path;
    loop {
        if let Some(span) = spans.get(p) {
            return Some(*span);
        }
        p = parent_path(p)?;
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
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

pub fn join_index(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
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

fn parse_yaml(text: &str) -> Result<Value, Diagnostic> {
    let mut yaml: serde_norway::Value = serde_norway::from_str(text).map_err(|e| {
        let message = e.to_string();
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_string();
        Diagnostic::error("", format!("invalid YAML: {message}"))
            .at(e.location().map(|l| Location {
                line: l.line(),
                column: l.column(),
                len: 1,
            }))
            .with_help("fix the YAML syntax (indentation, quoting, a missing `:`)")
    })?;
    yaml.apply_merge()
        .map_err(|e| Diagnostic::error("", format!("invalid YAML merge key: {e}")))?;
    yaml_to_json(&yaml, "")
}

fn yaml_to_json(v: &serde_norway::Value, path: &str) -> Result<Value, Diagnostic> {
    use serde_norway::Value as Y;
    Ok(match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(*b),
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
        Y::String(s) => Value::String(s.clone()),
        Y::Sequence(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| yaml_to_json(item, &join_index(path, i)))
                .collect::<Result<_, _>>()?,
        ),
        Y::Mapping(map) => {
            let mut out = serde_json::Map::new();
            for (k, val) in map {
                let key = match k {
                    Y::String(s) => s.clone(),
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

enum Frame {
    Map {
        path: String,
        key: Option<(String, Location)>,
        seen: HashMap<String, Location>,
    },
    Seq {
        path: String,
        next: usize,
    },
    /// A complex (non-scalar) mapping key: skipped.
    Ignore(usize),
}

/// Path, key, where it is repeated, where it was first set.
type Duplicate = (String, String, Location, Location);

#[derive(Default)]
struct SpanIndexer {
    stack: Vec<Frame>,
    spans: HashMap<String, NodeSpan>,
    duplicates: Vec<Duplicate>,
    reported: BTreeSet<String>,
}

fn location(span: &Span) -> Location {
    let (s, e) = (span.start, span.end);
    let len = if e.line() == s.line() && e.index() > s.index() {
        e.index() - s.index()
    } else {
        1
    };
    Location {
        line: s.line(),
        column: s.col() + 1,
        len,
    }
}

impl SpanIndexer {
    /// The path and key location of the node that starts now; `None` when it is a mapping key.
    fn next_node(&mut self) -> Option<(String, Option<Location>)> {
        match self.stack.last() {
            None => Some((String::new(), None)),
            Some(Frame::Map { key: None, .. }) | Some(Frame::Ignore(_)) => None,
            Some(Frame::Map {
                path,
                key: Some((k, loc)),
                ..
            }) => Some((join_key(path, k), Some(*loc))),
            Some(Frame::Seq { path, next }) => Some((join_index(path, *next), None)),
        }
    }

    /// The node under the top frame is complete.
    fn advance(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Map { key, .. }) => *key = None,
            Some(Frame::Seq { next, .. }) => *next += 1,
            _ => {}
        }
    }
}

impl<'input> SpannedEventReceiver<'input> for SpanIndexer {
    fn on_event(&mut self, ev: Event<'input>, span: Span) {
        if let Some(Frame::Ignore(depth)) = self.stack.last_mut() {
            match ev {
                Event::MappingStart(..) | Event::SequenceStart(..) => *depth += 1,
                Event::MappingEnd | Event::SequenceEnd => {
                    *depth -= 1;
                    if *depth == 0 {
                        self.stack.pop();
                        if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                            *key = Some(("?".into(), location(&span)));
                        }
                    }
                }
                _ => {}
            }
            return;
        }
        let loc = location(&span);
        match ev {
            Event::Scalar(..) | Event::Alias(..) => match self.next_node() {
                None => {
                    let text = match &ev {
                        Event::Scalar(v, ..) => v.to_string(),
                        _ => "*alias".to_string(),
                    };
                    if let Some(Frame::Map { path, key, seen }) = self.stack.last_mut() {
                        if let Some(first) = seen.get(&text) {
                            let p = join_key(path, &text);
                            if self.reported.insert(p.clone()) {
                                self.duplicates.push((p, text.clone(), loc, *first));
                            }
                        } else {
                            seen.insert(text.clone(), loc);
                        }
                        *key = Some((text, loc));
                    }
                }
                Some((path, key)) => {
                    self.spans.insert(path, NodeSpan { key, value: loc });
                    self.advance();
                }
            },
            Event::MappingStart(..) | Event::SequenceStart(..) => match self.next_node() {
                None => self.stack.push(Frame::Ignore(1)),
                Some((path, key)) => {
                    self.spans.insert(
                        path.clone(),
                        NodeSpan {
                            key,
                            value: Location { len: 1, ..loc },
                        },
                    );
                    self.stack.push(if matches!(ev, Event::MappingStart(..)) {
                        Frame::Map {
                            path,
                            key: None,
                            seen: HashMap::new(),
                        }
                    } else {
                        Frame::Seq { path, next: 0 }
                    });
                }
            },
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.advance();
            }
            _ => {}
        }
    }
}

/// Locations of every node of the first document in `text`, and duplicate keys. JSON is
/// indexed by the same YAML parser (JSON is YAML's flow style); what it cannot read is simply
/// not located.
fn index_spans(text: &str) -> (HashMap<String, NodeSpan>, Vec<Duplicate>) {
    let mut indexer = SpanIndexer::default();
    let mut parser = Parser::new_from_str(text);
    let _ = parser.load(&mut indexer, false);
    (indexer.spans, indexer.duplicates)
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
}
