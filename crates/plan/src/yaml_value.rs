//! A YAML document's JSON value built from the parser events the span index reads, so that
//! ordinary YAML is parsed once, without serde_norway (whose deserializer holds every event of
//! the document at once: most of the heap of a large config).
//!
//! The YAML parser here (saphyr, YAML 1.2) and serde_norway (libyaml, its own scalar rules) do
//! not read every plain scalar alike, and serde_norway's reading is the meaning of a config. So
//! this builder resolves only the plain scalars whose meaning is unambiguous, with serde_norway's
//! rules, and gives up on anything else: an anchor, an alias, a tag, a merge key (`<<`), a key
//! that is not a string or is repeated, a complex key, a second document, and every plain scalar
//! that could be read as something other than what it resolves to here (`0x1f`, `007`, `.inf`,
//! `1e3`, `1_000`, `yes`, `12:30`, …). The two parsers also accept different syntax at the
//! edges, so it gives up too on a byte order mark, a directive (`%…`), a plain scalar that
//! starts with an indicator (`:x`, `|` in a flow), a one-pair mapping in a flow sequence and a
//! block scalar at the root. The document then takes serde_norway's path, which also reports
//! every problem. The tests below check both paths give the same value whenever this one does
//! not give up.

use std::borrow::Cow;

use saphyr_parser::{Event, ScalarStyle};
use serde_json::{Map, Number, Value};

/// A node being read.
enum Open {
    Seq(Vec<Value>),
    /// The mapping so far and the key whose value comes next.
    Map(Map<String, Value>, Option<String>),
}

/// Builds the value of the first document from its parser events (see the module).
pub(crate) struct ValueBuilder<'t> {
    text: &'t str,
    /// `text` is ASCII: a character index is a byte offset.
    ascii: bool,
    /// A character index and its byte offset in `text`, where the last lookup ended.
    cursor: (usize, usize),
    /// The open nodes, each with whether it is written in flow style (`[…]`, `{…}`).
    stack: Vec<(Open, bool)>,
    root: Option<Value>,
    documents: u32,
    /// Something in the document needs serde_norway's path.
    unusual: bool,
}

impl<'t> ValueBuilder<'t> {
    pub(crate) fn new(text: &'t str) -> Self {
        ValueBuilder {
            text,
            ascii: text.is_ascii(),
            cursor: (0, 0),
            stack: Vec::new(),
            root: None,
            documents: 0,
            // libyaml reads some documents after a byte order mark apart (as two documents), and
            // the parsers accept different directives (`%YAML 1.2`).
            unusual: text.starts_with(['\u{feff}', '%']) || text.contains("\n%"),
        }
    }

    /// The character at character index `index` of the text.
    fn char_at(&mut self, index: usize) -> Option<char> {
        if self.ascii {
            return self.text.as_bytes().get(index).map(|&b| char::from(b));
        }
        if index < self.cursor.0 {
            self.cursor = (0, 0);
        }
        let (chars, bytes) = self.cursor;
        let (offset, c) = self.text[bytes..].char_indices().nth(index - chars)?;
        self.cursor = (index, bytes + offset);
        Some(c)
    }

    /// The document's value; `None` when it needs serde_norway's path.
    pub(crate) fn finish(self) -> Option<Value> {
        if self.unusual || !self.stack.is_empty() {
            return None;
        }
        self.root
    }

    /// Give up: the document takes serde_norway's path.
    pub(crate) fn give_up(&mut self) {
        self.unusual = true;
        self.stack = Vec::new();
        self.root = None;
    }

    /// The next event, which starts at character index `start` of the text.
    pub(crate) fn on_event(&mut self, ev: Event<'_>, start: usize) {
        if self.unusual {
            return;
        }
        match ev {
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    self.give_up();
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                if anchor != 0 || tag.is_some() {
                    return self.give_up();
                }
                if let Some((Open::Map(map, key @ None), _)) = self.stack.last_mut() {
                    // A key: a string, not `<<`, not repeated.
                    let is_string = style != ScalarStyle::Plain
                        || matches!(resolve_plain(&text), Some(Value::String(_)));
                    if !is_string || text == "<<" || map.contains_key(text.as_ref()) {
                        return self.give_up();
                    }
                    *key = Some(exact(text));
                    return;
                }
                let block = matches!(style, ScalarStyle::Literal | ScalarStyle::Folded);
                if block && self.stack.is_empty() {
                    // A block scalar at the root (`|` then lines at column 0): the parsers end
                    // it at different lines.
                    return self.give_up();
                }
                let value = if style == ScalarStyle::Plain {
                    match resolve_plain(&text) {
                        Some(Value::String(_)) => Value::String(exact(text)),
                        Some(value) => value,
                        None => return self.give_up(),
                    }
                } else {
                    Value::String(exact(text))
                };
                self.add(value);
            }
            Event::SequenceStart(anchor, ref tag) | Event::MappingStart(anchor, ref tag) => {
                let complex_key = matches!(self.stack.last(), Some((Open::Map(_, None), _)));
                let in_flow = matches!(self.stack.last(), Some((_, true)));
                let flow = matches!(self.char_at(start), Some('[' | '{'));
                // A mapping of one pair in a flow sequence (`[a: b]`): the parsers accept
                // different ones.
                if anchor != 0 || tag.is_some() || complex_key || (in_flow && !flow) {
                    return self.give_up();
                }
                let open = if matches!(ev, Event::SequenceStart(..)) {
                    Open::Seq(Vec::new())
                } else {
                    Open::Map(Map::new(), None)
                };
                self.stack.push((open, flow));
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some((Open::Seq(items), _)) => self.add(Value::Array(items)),
                Some((Open::Map(map, None), _)) => self.add(Value::Object(map)),
                _ => self.give_up(),
            },
            Event::Alias(_) => self.give_up(),
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
    }

    /// A complete node under the open one.
    fn add(&mut self, value: Value) {
        match self.stack.last_mut() {
            Some((Open::Seq(items), _)) => items.push(value),
            Some((Open::Map(map, key), _)) => match key.take() {
                Some(key) => {
                    map.insert(key, value);
                }
                None => self.give_up(),
            },
            None if self.root.is_none() => self.root = Some(value),
            None => self.give_up(),
        }
    }
}

/// `text` in a string of its own length: the parser's strings keep the room they grew into,
/// and the value holds every one of them for as long as the document lives.
fn exact(text: Cow<'_, str>) -> String {
    match text {
        Cow::Borrowed(s) => s.to_owned(),
        Cow::Owned(mut s) => {
            s.shrink_to_fit();
            s
        }
    }
}

/// A plain scalar as serde_norway reads it, when that is unambiguous: null, a boolean, a
/// decimal integer, a simple decimal fraction (`-12.5`), or a string that no number, null or
/// boolean rule could match. `None` for anything else (serde_norway decides). The string of a
/// string is not copied: `Value::String` of an empty string stands for it.
fn resolve_plain(s: &str) -> Option<Value> {
    // A plain scalar that starts with an indicator (`:x`, `?x`, `|` in a flow, …): the two
    // parsers do not accept the same ones. `-x` (a flag) is read alike.
    if s.starts_with(|c: char| "?:,[]{}#&*!|>'\"%@`".contains(c)) {
        return None;
    }
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Some(Value::Null),
        "true" | "True" | "TRUE" => return Some(Value::Bool(true)),
        "false" | "False" | "FALSE" => return Some(Value::Bool(false)),
        _ => {}
    }
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let all_digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if all_digits(digits) {
        if digits.len() > 1 && digits.starts_with('0') {
            return None;
        }
        return if negative {
            s.parse::<i64>().ok().map(Value::from)
        } else {
            s.parse::<u64>().ok().map(Value::from)
        };
    }
    if let Some((whole, fraction)) = digits.split_once('.') {
        if all_digits(whole) && all_digits(fraction) {
            return s
                .parse::<f64>()
                .ok()
                .and_then(Number::from_f64)
                .map(Value::Number);
        }
    }
    let lower = s.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
    ) {
        return None;
    }
    // Number-like: an integer in any base, a float in any form, infinity or NaN, each with an
    // optional sign. Such a scalar is a string for certain only when it holds a character none
    // of those forms (nor `_` or `:`) can hold: a hexadecimal digit only after an `x`.
    let unsigned = lower.strip_prefix(['+', '-']).unwrap_or(&lower);
    if ["inf", "nan", ".inf", ".nan"]
        .iter()
        .any(|p| unsigned.starts_with(p))
    {
        return None;
    }
    if unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        let hex = lower.contains('x');
        let number_char = |c: char| {
            c.is_ascii_digit() || ".+-_:exob".contains(c) || (hex && c.is_ascii_hexdigit())
        };
        if lower.chars().all(number_char) {
            return None;
        }
    }
    Some(Value::String(String::new()))
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    use proptest::prelude::*;

    use super::*;
    use crate::document::parse_yaml;
    use crate::span_index::index_spans;

    /// The value built from the parser's events, when the document is ordinary.
    fn direct(text: &str) -> Option<Value> {
        index_spans(text, true).2
    }

    /// Whenever the events give a value, serde_norway's path gives the same one.
    fn assert_agrees(text: &str) -> bool {
        let Some(value) = direct(text) else {
            return false;
        };
        match parse_yaml(text) {
            Ok(reference) => assert_eq!(value, reference, "{text:?}"),
            Err(e) => panic!("{text:?}: built {value} where serde_norway reports {e:?}"),
        }
        true
    }

    /// Plain scalars, most of them ones that YAML 1.1, YAML 1.2 and serde_norway read apart.
    const SCALARS: &[&str] = &[
        "",
        "~",
        "null",
        "Null",
        "NULL",
        "nUll",
        "true",
        "True",
        "TRUE",
        "tRue",
        "false",
        "False",
        "FALSE",
        "yes",
        "Yes",
        "NO",
        "no",
        "on",
        "On",
        "OFF",
        "y",
        "Y",
        "n",
        "N",
        "0",
        "-0",
        "+0",
        "1",
        "-1",
        "+1",
        "42",
        "007",
        "-007",
        "08",
        "0x1F",
        "0X1f",
        "-0x1",
        "0o17",
        "0O17",
        "0b101",
        "-0b1",
        "1_000",
        "1__0",
        "1e3",
        "1E3",
        "1e-3",
        "-1.5e+3",
        "1.5",
        "-1.5",
        "00.5",
        "0.0",
        "-0.0",
        "1.",
        ".5",
        "-.5",
        "+.5",
        "1.0",
        "1.50",
        "3.14159265358979323846",
        ".inf",
        ".Inf",
        ".INF",
        "-.inf",
        "+.inf",
        ".nan",
        ".NaN",
        ".NAN",
        "inf",
        "-inf",
        "infinity",
        "Infinity",
        "NaN",
        "nan",
        "12:30",
        "1:2:3",
        "-1:30",
        "190:20:30.15",
        "2001-12-14",
        "2001-12-14t21:59:43.10-05:00",
        "12345678901234567890",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "-9223372036854775809",
        "340282366920938463463374607431768211456",
        "1000000000000000000000000000000000000000000000000000000000000000000000000000000000000\
         0000000000000000000000000000000000000000000000000000000000000000000000000000000000000\
         0000000000000000000000000000000000000000000000000000000000000000000000000000000000000\
         00000000000000000000000000000000000000000000000000000.5",
        "b4567",
        "pool-00001",
        "--metrics",
        "-c",
        "-DGGML_CUDA=ON",
        "hf:org/repo/m-q4_k_m.gguf",
        "https://github.com/ggml-org/llama.cpp.git",
        "4096MiB",
        "3a5f0c",
        "deadbeef",
        "1a",
        "0xZZ",
        "<<",
        "&a x",
        "*a",
        "!t x",
        "!!str 1",
        "!!int 1",
        "! 1",
        "a b",
        "x #c",
        "-",
        "+",
        "+x",
        ".",
        "..",
        "é",
        "ünï",
        "1 2",
        "a:b",
        "%x",
        "@x",
        "`x",
        "'",
        "\"",
        "[a]",
        "{a: 1}",
        "? x",
        "- x",
        "a: b",
        "|",
        ">",
    ];
    /// Scalars of everyday configs, so that most generated documents are built.
    const ORDINARY: &[&str] = &[
        "id",
        "pool-1",
        "--metrics",
        "-c",
        "-",
        "4",
        "0",
        "-3",
        "1.5",
        "-0.25",
        "true",
        "False",
        "~",
        "",
        "hf:org/r/m.gguf",
        "https://x.y/z.git",
        "a b",
        "703f9e3",
        "b4567",
        "-DGGML_CUDA=ON",
        "é",
        "a:b",
        "a#b",
        "x-y_z",
        "4096MiB",
        "v1.2.3",
        "a, b",
        "x - y",
    ];
    const KEYS: &[&str] = &[
        "id", "a b", "x.y", "c[0]", "1", "0x1", "1.5", "true", "yes", "null", "~", "", "<<", "on",
        "k", "-k", "é", "&a k", "*a", "!t k",
    ];

    #[derive(Debug, Clone)]
    enum Scalar {
        Plain(&'static str),
        Single(&'static str),
        Double(&'static str),
        /// Lines of a literal (`|`) or, when true, folded (`>`) block scalar.
        Block(Vec<&'static str>, bool),
    }

    #[derive(Debug, Clone)]
    enum Node {
        Scalar(Scalar),
        Seq(Vec<Node>),
        Map(Vec<(Scalar, Node)>),
    }

    fn pick(items: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
        proptest::sample::select(items)
    }

    fn scalar(items: &'static [&'static str]) -> impl Strategy<Value = Scalar> {
        prop_oneof![
            6 => pick(items).prop_map(Scalar::Plain),
            1 => pick(items).prop_map(Scalar::Single),
            1 => pick(items).prop_map(Scalar::Double),
            1 => (proptest::collection::vec(pick(items), 1..3), any::<bool>())
                .prop_map(|(lines, folded)| Scalar::Block(lines, folded)),
        ]
    }

    fn node() -> impl Strategy<Value = Node> {
        prop_oneof![1 => scalar(SCALARS), 3 => scalar(ORDINARY)]
            .prop_map(Node::Scalar)
            .prop_recursive(4, 24, 4, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4).prop_map(Node::Seq),
                    proptest::collection::vec((scalar(KEYS), inner), 0..4).prop_map(Node::Map),
                ]
            })
    }

    fn write_scalar(out: &mut String, s: &Scalar, indent: usize, flow: bool) {
        match s {
            Scalar::Plain(t) => out.push_str(t),
            Scalar::Single(t) => {
                let _ = write!(out, "'{}'", t.replace('\'', "''"));
            }
            Scalar::Double(t) => out.push_str(&serde_json::to_string(t).expect("a string")),
            Scalar::Block(lines, folded) if !flow => {
                out.push(if *folded { '>' } else { '|' });
                for line in lines {
                    let _ = write!(out, "\n{:w$}{line}", "", w = indent + 2);
                }
            }
            Scalar::Block(lines, _) => {
                out.push_str(&serde_json::to_string(&lines.join("\n")).expect("a string"))
            }
        }
    }

    fn write_flow(out: &mut String, node: &Node) {
        match node {
            Node::Scalar(s) => write_scalar(out, s, 0, true),
            Node::Seq(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write_flow(out, item);
                }
                out.push(']');
            }
            Node::Map(entries) => {
                out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write_scalar(out, k, 0, true);
                    out.push_str(": ");
                    write_flow(out, v);
                }
                out.push('}');
            }
        }
    }

    /// `node` in block style at `indent`, as the value after a key or `-` that is already
    /// written (on the same line); `flow` picks flow style for collections from `choices`.
    fn write_block(
        out: &mut String,
        node: &Node,
        indent: usize,
        choices: &mut impl Iterator<Item = bool>,
    ) {
        let flow = choices.next().unwrap_or(false);
        match node {
            Node::Scalar(s) => write_scalar(out, s, indent, false),
            Node::Seq(items) if !items.is_empty() && !flow => {
                for item in items {
                    let _ = write!(out, "\n{:indent$}- ", "");
                    write_block(out, item, indent + 2, choices);
                }
            }
            Node::Map(entries) if !entries.is_empty() && !flow => {
                for (k, v) in entries {
                    let _ = write!(out, "\n{:w$}", "", w = indent + 2);
                    write_scalar(out, k, indent + 2, true);
                    out.push(':');
                    // A block collection starts on the next line (`write_block` writes it).
                    out.push(' ');
                    write_block(out, v, indent + 2, choices);
                }
            }
            _ => write_flow(out, node),
        }
    }

    fn document() -> impl Strategy<Value = String> {
        (
            node(),
            proptest::collection::vec(any::<bool>(), 16),
            0..8u8,
            any::<bool>(),
        )
            .prop_map(|(node, choices, frame, top_flow)| {
                let mut body = String::new();
                if top_flow {
                    write_flow(&mut body, &node);
                } else {
                    write_block(&mut body, &node, 0, &mut choices.into_iter().cycle());
                }
                // Block collections start on a new line; the top one at column 0.
                let body = body.strip_prefix('\n').map_or(body.clone(), |b| {
                    b.lines()
                        .map(|l| l.strip_prefix("  ").unwrap_or(l))
                        .collect::<Vec<_>>()
                        .join("\n")
                });
                match frame {
                    0 => format!("---\n{body}\n"),
                    1 => format!("{body}\n...\n"),
                    2 => format!("%YAML 1.2\n---\n{body}\n"),
                    3 => format!("{body}\n---\nx: 1\n"),
                    4 => format!("\u{feff}{body}\n"),
                    5 => format!("# c\n{body}\n# d\n"),
                    _ => format!("{body}\n"),
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        #[test]
        fn built_values_are_serde_norways(text in document()) {
            assert_agrees(&text);
        }

        #[test]
        fn plain_scalars_resolve_as_serde_norway_resolves_them(
            s in "[-+0-9.eE_:xXoObBinfaINFAtrusyTRUSYlLNdfgz~ é]{0,8}",
        ) {
            assert_agrees(&format!("k: {s}\n"));
            assert_agrees(&format!("[{s}]\n"));
            assert_agrees(&format!("{s}: v\n"));
        }
    }

    #[test]
    fn generated_documents_are_mostly_built() {
        let mut runner = TestRunner::deterministic();
        let strategy = document();
        let built = (0..2000)
            .filter(|_| {
                let text = strategy
                    .new_tree(&mut runner)
                    .expect("a document")
                    .current();
                assert_agrees(&text)
            })
            .count();
        assert!(built >= 400, "only {built} of 2000 documents were built");
    }

    #[test]
    fn every_corpus_scalar_agrees_and_ordinary_ones_are_built() {
        let mut built = 0;
        for s in SCALARS.iter().chain(KEYS) {
            for text in [
                format!("k: {s}\n"),
                format!("k: '{}'\n", s.replace('\'', "''")),
                format!("{s}: v\n"),
                format!("- [{s}, x]\n"),
            ] {
                built += usize::from(assert_agrees(&text));
            }
        }
        assert!(built > SCALARS.len(), "only {built} documents were built");
        for (text, expected) in [
            ("k: 12\n", serde_json::json!({"k": 12})),
            ("k: -12.5\n", serde_json::json!({"k": -12.5})),
            (
                "k: [~, true, FALSE, 'no', 007z]\n",
                serde_json::json!({"k": [null, true, false, "no", "007z"]}),
            ),
        ] {
            assert_eq!(direct(text), Some(expected), "{text}");
        }
        for unusual in [
            "k: 007\n",
            "k: yes\n",
            "k: 0x1\n",
            "k: .inf\n",
            "k: 1e3\n",
            "k: 12:30\n",
            "k: 1_0\n",
            "1: v\n",
            "a: &x 1\n",
            "a: !t 1\n",
            "<<: {}\n",
            "a: 1\na: 2\n",
            "? [a]\n: 1\n",
            "a: 1\n---\nb: 2\n",
            "",
        ] {
            assert_eq!(direct(unusual), None, "{unusual:?}");
        }
    }

    #[test]
    fn every_fixture_reads_alike_both_ways() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
        let mut built = 0;
        for dir in ["configs", "invalid", "e2e"] {
            let mut entries: Vec<_> = std::fs::read_dir(root.join(dir))
                .expect("a fixture folder")
                .map(|e| e.expect("an entry").path())
                .collect();
            entries.sort();
            for path in entries {
                let text = std::fs::read_to_string(&path).expect("a fixture");
                let yaml = path.extension().is_some_and(|e| e == "yaml");
                let was_built = assert_agrees(&text);
                if dir != "invalid" {
                    assert!(
                        was_built || !yaml,
                        "{} takes serde_norway's path",
                        path.display()
                    );
                }
                built += usize::from(was_built);
            }
        }
        assert!(built > 20, "only {built} fixtures were built from events");
    }
}
