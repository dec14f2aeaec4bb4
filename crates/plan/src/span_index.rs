//! The span index of a document: where every node is written, found by its field path
//! (`pools[0].provisioning.flags[2]`), built from the YAML parser's events in one pass, with
//! the document's duplicate keys found on the way.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

use saphyr_parser::{Event, Parser, Span, SpannedEventReceiver};

use serde_json::Value;

use crate::diagnostic::{Diagnostic, Location};
use crate::document::parent_path;
use crate::input_limits::InputLimits;
use crate::yaml_value::ValueBuilder;

/// A [`Location`] in 12 bytes rather than 24: the index holds one or two per node.
#[derive(Debug, Clone, Copy)]
struct Pos {
    line: u32,
    column: u32,
    len: u32,
}

impl Pos {
    fn new(loc: Location) -> Pos {
        let small = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Pos {
            line: small(loc.line),
            column: small(loc.column),
            len: small(loc.len),
        }
    }

    fn location(self) -> Location {
        Location {
            line: self.line as usize,
            column: self.column as usize,
            len: self.len as usize,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct NodeSpan {
    key: Option<Pos>,
    value: Pos,
}

impl NodeSpan {
    /// Where the node's value starts.
    pub(crate) fn value_location(self) -> Location {
        self.value.location()
    }

    /// Where the node's key is written (its value when it has no key).
    pub(crate) fn key_location(self) -> Location {
        self.key.unwrap_or(self.value).location()
    }
}

/// Where a node sits in its parent: a mapping's under a key (interned), a list's at a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Segment {
    Key(u32),
    Index(u32),
}

/// The location of every node of the document, found by field path (`pools[0].id`): a tree of
/// nodes rather than one path string per node, which made the index most of a parsed config's
/// memory.
///
/// Paths are joined text ([`crate::document::join_key`], [`crate::document::join_index`]), so
/// several nodes can share one: keys may hold `.` or `[`, and a complex key is indexed as `?`,
/// like a key `?`. A path then names the last such node in the document, as it did when the
/// index was a map from path strings.
#[derive(Debug, Clone, Default)]
pub(crate) struct SpanIndex {
    /// Every node, in document order.
    nodes: Vec<NodeSpan>,
    root: Option<u32>,
    /// Each node under its mapping, by key: the last one when several share a place.
    children: HashMap<(u32, Segment), u32, FastHash>,
    /// The items of every list, each list's together, in order: 4 bytes an item where an entry
    /// of `children` took ~30 (a 1 MiB list holds 500,000 items).
    items: Vec<u32>,
    /// A list → where its items start in `items`, and how many there are.
    lists: HashMap<u32, (u32, u32), FastHash>,
    /// A node → the one before it at the same place (the root too), when there is one.
    shadowed: HashMap<u32, u32, FastHash>,
    /// Mapping keys, each text once.
    keys: HashMap<Box<str>, u32, FastHash>,
    /// A key is empty or holds a `.` or `[`: a path can then be cut into keys in more than one
    /// way, and every way is tried.
    odd_keys: bool,
}

impl SpanIndex {
    fn key_id(&mut self, text: &str) -> u32 {
        if let Some(&id) = self.keys.get(text) {
            return id;
        }
        let id = self.keys.len() as u32;
        self.odd_keys |= text.is_empty() || text.contains(['.', '[']);
        self.keys.insert(text.into(), id);
        id
    }

    /// Add a node under `place` (the root when `None`); its id. A list item is recorded by
    /// [`SpanIndex::close_list`], once its list is read.
    fn add(&mut self, place: Option<(u32, Segment)>, span: NodeSpan) -> u32 {
        let id = self.nodes.len() as u32;
        self.nodes.push(span);
        let before = match place {
            Some((_, Segment::Index(_))) => None,
            Some(place) => self.children.insert(place, id),
            None => self.root.replace(id),
        };
        if let Some(before) = before {
            self.shadowed.insert(id, before);
        }
        id
    }

    /// The list `node` holds `items` (node ids, in order).
    fn close_list(&mut self, node: u32, items: &[u32]) {
        let start = self.items.len() as u32;
        self.items.extend_from_slice(items);
        self.lists.insert(node, (start, items.len() as u32));
    }

    /// Item `i` of the list `node`.
    fn item(&self, node: u32, i: u32) -> Option<u32> {
        let &(start, len) = self.lists.get(&node)?;
        (i < len).then(|| self.items[(start + i) as usize])
    }

    /// The span of `path`, or of its nearest located ancestor.
    pub(crate) fn locate(&self, path: &str) -> Option<NodeSpan> {
        let root = self.root?;
        let mut p = path;
        loop {
            if let Some(node) = self.find_at(root, p, true) {
                return Some(self.nodes[node as usize]);
            }
            p = parent_path(p)?;
        }
    }

    /// The node of `path` itself, when it is in the index and no path can name several nodes:
    /// then `path.key`, for a key without `.` and `[`, is a child of it (see
    /// [`SpanIndex::child`]) or is not in the index.
    pub(crate) fn locate_exact(&self, path: &str) -> Option<u32> {
        if self.odd_keys || !self.shadowed.is_empty() {
            return None;
        }
        self.find(self.root?, path, true)
    }

    /// `key` can be looked up with [`SpanIndex::child`] under [`SpanIndex::locate_exact`].
    pub(crate) fn is_plain_key(&self, key: &str) -> bool {
        !self.odd_keys && !key.is_empty() && !key.contains(['.', '['])
    }

    /// The field `key` of the mapping `node`.
    pub(crate) fn child(&self, node: u32, key: &str) -> Option<NodeSpan> {
        let k = *self.keys.get(key)?;
        let child = *self.children.get(&(node, Segment::Key(k)))?;
        Some(self.nodes[child as usize])
    }

    /// [`SpanIndex::find`] below `node` and below every node it shadows; the last match.
    fn find_at(&self, node: u32, rest: &str, at_start: bool) -> Option<u32> {
        let mut found = None;
        let mut at = Some(node);
        while let Some(n) = at {
            found = found.max(self.find(n, rest, at_start));
            at = self.shadowed.get(&n).copied();
        }
        found
    }

    /// The last node at `rest` below `node` (whose own path is empty when `at_start`).
    fn find(&self, node: u32, rest: &str, at_start: bool) -> Option<u32> {
        let mut found = rest.is_empty().then_some(node);
        // A list item, `[i]`.
        if let Some((i, after)) = split_index(rest) {
            if let Some(child) = self.item(node, i) {
                found = found.max(self.find_at(child, after, false));
            }
        }
        // A mapping key: `.key`, or `key` when the path so far is empty.
        let Some(body) = (if at_start {
            Some(rest)
        } else {
            rest.strip_prefix('.')
        }) else {
            return found;
        };
        let mut try_key = |end: usize| {
            let child = self
                .keys
                .get(&body[..end])
                .and_then(|&k| self.children.get(&(node, Segment::Key(k))));
            if let Some(&child) = child {
                found = found.max(self.find_at(child, &body[end..], at_start && end == 0));
            }
        };
        if self.odd_keys {
            try_key(0);
            body.match_indices(['.', '['])
                .for_each(|(end, _)| try_key(end));
            try_key(body.len());
        } else {
            // Keys are plain words: the key is the text up to the first `.` or `[`.
            try_key(body.find(['.', '[']).unwrap_or(body.len()));
        }
        found
    }
}

/// foldhash, seeded per process: several times faster than the default SipHash on the short
/// keys of the span index. Not FxHash: its low bits follow the first bytes of a key, so keys
/// that differ only at the end (`u1000001`, `u1000002`, … by the million in an adversarial
/// config) crowded into neighbouring buckets and each lookup compared many of them.
type FastHash = foldhash::fast::RandomState;

/// `[12]…` → (12, `…`), for an index as [`crate::document::join_index`] writes it.
fn split_index(rest: &str) -> Option<(u32, &str)> {
    let (digits, after) = rest.strip_prefix('[')?.split_once(']')?;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if !canonical {
        return None;
    }
    Some((digits.parse().ok()?, after))
}

enum Frame {
    /// `path_len`: the length of the node's path, which the indexer's path buffer starts with
    /// while the node is open.
    Map {
        node: u32,
        path_len: usize,
        key: Option<(u32, Location)>,
    },
    Seq {
        node: u32,
        path_len: usize,
        next: u32,
        /// The items so far (see [`SpanIndex::close_list`]).
        items: Vec<u32>,
    },
    /// A complex (non-scalar) mapping key: skipped.
    Ignore(usize),
}

/// Path, key, where it is repeated, where it was first set.
pub(crate) type Duplicate = (String, String, Location, Location);

#[derive(Default)]
struct SpanIndexer<'t> {
    stack: Vec<Frame>,
    index: SpanIndex,
    /// The path of the node being read, built up and cut back as the reader moves; no string
    /// is kept per node.
    path: String,
    /// Where each scalar key of each mapping was first written: (mapping, key) → location.
    seen: HashMap<(u32, u32), Location, FastHash>,
    duplicates: Vec<Duplicate>,
    reported: BTreeSet<String>,
    /// The document's value, built in the same pass when asked for.
    value: Option<ValueBuilder<'t>>,
    limits: InputLimits,
    /// The limit the document passed: no later event is read.
    over_limit: Option<Diagnostic>,
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

/// Where a node goes: its parent and place (none for the root), and where its key is written.
type Place = (Option<(u32, Segment)>, Option<Location>);

impl SpanIndexer<'_> {
    /// The place of the node that starts now, with `path` set to its path; `None` when it is
    /// a mapping key.
    fn next_node(&mut self) -> Option<Place> {
        match self.stack.last() {
            None => {
                self.path.clear();
                Some((None, None))
            }
            Some(Frame::Map { key: None, .. }) | Some(Frame::Ignore(_)) => None,
            // `path` was set when the key was read.
            Some(Frame::Map {
                node,
                key: Some((k, loc)),
                ..
            }) => Some((Some((*node, Segment::Key(*k))), Some(*loc))),
            Some(Frame::Seq {
                node,
                path_len,
                next,
                ..
            }) => {
                self.path.truncate(*path_len);
                let _ = write!(self.path, "[{next}]");
                Some((Some((*node, Segment::Index(*next))), None))
            }
        }
    }

    /// The key `text` of the open mapping, at `loc`; a repeated scalar key is reported once.
    fn key(&mut self, text: &str, loc: Location, scalar: bool) {
        let Some(Frame::Map {
            node,
            path_len,
            key,
        }) = self.stack.last_mut()
        else {
            return;
        };
        let id = self.index.key_id(text);
        self.path.truncate(*path_len);
        if *path_len > 0 {
            self.path.push('.');
        }
        self.path.push_str(text);
        *key = Some((id, loc));
        if !scalar {
            return;
        }
        match self.seen.entry((*node, id)) {
            Entry::Occupied(first) => {
                if !self.reported.contains(&self.path) {
                    self.reported.insert(self.path.clone());
                    let first = *first.get();
                    self.duplicates
                        .push((self.path.clone(), text.to_string(), loc, first));
                }
            }
            Entry::Vacant(slot) => {
                slot.insert(loc);
            }
        }
    }

    /// Add a node at `place`, an item of the open list when it is one; its id.
    fn add(&mut self, place: Option<(u32, Segment)>, span: NodeSpan) -> u32 {
        let id = self.index.add(place, span);
        if let (Some((_, Segment::Index(_))), Some(Frame::Seq { items, .. })) =
            (place, self.stack.last_mut())
        {
            items.push(id);
        }
        id
    }

    /// The open node is complete: a list's items go to the index.
    fn close(&mut self) {
        if let Some(Frame::Seq { node, items, .. }) = self.stack.pop() {
            self.index.close_list(node, &items);
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

impl<'input> SpannedEventReceiver<'input> for SpanIndexer<'_> {
    fn on_event(&mut self, ev: Event<'input>, span: Span) {
        if let Some(problem) = self.limits.on_event(&ev, location(&span)) {
            self.over_limit = Some(problem);
            return;
        }
        self.index_event(&ev, span);
        if let Some(value) = &mut self.value {
            value.on_event(ev, span.start.index());
        }
    }
}

impl SpanIndexer<'_> {
    fn index_event(&mut self, ev: &Event<'_>, span: Span) {
        if let Some(Frame::Ignore(depth)) = self.stack.last_mut() {
            match ev {
                Event::MappingStart(..) | Event::SequenceStart(..) => *depth += 1,
                Event::MappingEnd | Event::SequenceEnd => {
                    *depth -= 1;
                    if *depth == 0 {
                        self.stack.pop();
                        self.key("?", location(&span), false);
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
                    let text = match ev {
                        Event::Scalar(v, ..) => v,
                        _ => "*alias",
                    };
                    self.key(text, loc, true);
                }
                Some((place, key)) => {
                    self.add(
                        place,
                        NodeSpan {
                            key: key.map(Pos::new),
                            value: Pos::new(loc),
                        },
                    );
                    self.advance();
                }
            },
            Event::MappingStart(..) | Event::SequenceStart(..) => match self.next_node() {
                None => self.stack.push(Frame::Ignore(1)),
                Some((place, key)) => {
                    let node = self.add(
                        place,
                        NodeSpan {
                            key: key.map(Pos::new),
                            value: Pos::new(Location { len: 1, ..loc }),
                        },
                    );
                    let path_len = self.path.len();
                    self.stack.push(if matches!(ev, Event::MappingStart(..)) {
                        Frame::Map {
                            node,
                            path_len,
                            key: None,
                        }
                    } else {
                        Frame::Seq {
                            node,
                            path_len,
                            next: 0,
                            items: Vec::new(),
                        }
                    });
                }
            },
            Event::MappingEnd | Event::SequenceEnd => {
                self.close();
                self.advance();
            }
            _ => {}
        }
    }
}

/// Locations of every node of the first document in `text`, and duplicate keys. JSON is
/// indexed by the same YAML parser (JSON is YAML's flow style); what it cannot read is simply
/// not located.
///
/// With `value`, also the document's JSON value when it is ordinary YAML (see
/// [`ValueBuilder`]): `None` when the parser found an error or anything else in the stream, or
/// the document needs serde_norway's reading.
///
/// The events are read one at a time (the parser's own `load` recurses once per level), and
/// reading stops at the first limit of [`InputLimits`] the document passes: that problem is
/// the fourth part, and the document must then be refused.
pub(crate) fn index_spans(text: &str, value: bool) -> Indexed {
    let mut indexer = SpanIndexer {
        value: value.then(|| ValueBuilder::new(text)),
        ..SpanIndexer::default()
    };
    let mut parser = Parser::new_from_str(text);
    let mut loaded = false;
    let mut syntax_error = None;
    while let Some(next) = parser.next_event() {
        let (ev, span) = match next {
            Ok(event) => event,
            Err(e) => {
                let at = e.marker();
                let loc = Location {
                    line: at.line(),
                    column: at.col() + 1,
                    len: 1,
                };
                // The scanner's own nesting limit (255 flow levels), met while it looks
                // ahead: the document is too deep before the events say so.
                if e.info().contains("recursion limit") {
                    indexer.over_limit = Some(crate::input_limits::too_deep(loc));
                }
                syntax_error = Some(crate::document::yaml_syntax_error(e.info(), loc));
                break;
            }
        };
        let last = matches!(ev, Event::DocumentEnd | Event::StreamEnd);
        indexer.on_event(ev, span);
        if indexer.over_limit.is_some() {
            break;
        }
        if last {
            loaded = true;
            break;
        }
    }
    // The lists a document cut short leaves open keep the items read.
    while !indexer.stack.is_empty() {
        indexer.close();
    }
    let value = match indexer.value.take() {
        Some(mut builder) => {
            // The first document was read: only the end of the stream may follow it.
            let ends = loaded
                && indexer.over_limit.is_none()
                && matches!(parser.next_event(), Some(Ok((Event::StreamEnd, _))));
            if !ends {
                builder.give_up();
            }
            builder.finish()
        }
        None => None,
    };
    let values = (indexer.limits.values(), syntax_error);
    (
        indexer.index,
        indexer.duplicates,
        value,
        indexer.over_limit,
        values,
    )
}

/// What [`index_spans`] finds: the index, the duplicate keys, the value when it was built, the
/// limit the document passed, and how many values it holds, aliases expanded
/// ([`InputLimits::values`]), with the syntax error the parser stopped at.
pub(crate) type Indexed = (
    SpanIndex,
    Vec<Duplicate>,
    Option<Value>,
    Option<Diagnostic>,
    (u64, Option<Diagnostic>),
);

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    /// Keys a config can hold by the million (`u0`, `u1`, …, `pool-00001`, …) spread over the
    /// buckets of a table: a hash whose low bits follow only the first bytes of a key put them
    /// all in a few buckets, and each lookup then compared the key with most of the others
    /// (1.3 million unknown fields took 20 s).
    #[test]
    fn similar_keys_spread_over_the_buckets() {
        let hasher = FastHash::default();
        for shape in ["u{}", "pool-{:05}", "{}x", "key_{}_name"] {
            let buckets: BTreeSet<u64> = (0..65_536)
                .map(|i| {
                    let key = shape
                        .replace("{}", &i.to_string())
                        .replace("{:05}", &format!("{i:05}"));
                    hasher.hash_one(key.as_str()) & 0xffff
                })
                .collect();
            // A random hash fills about 63 % of 65,536 buckets with 65,536 keys.
            assert!(
                buckets.len() > 30_000,
                "`{shape}`: 65,536 keys in {} of 65,536 buckets",
                buckets.len()
            );
        }
    }
}
