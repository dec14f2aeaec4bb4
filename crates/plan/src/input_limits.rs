//! Limits on the shape of a document, checked on the parser's events before anything is built
//! from them: how deep collections nest, and how many nodes aliases stand for. Every later
//! step (serde_json, serde_norway, the schema walk, dropping the value) recurses once per
//! level, and an alias is expanded wherever it is used; past these limits the document is
//! refused rather than overflowing the stack or growing without bound.

use std::collections::HashMap;

use saphyr_parser::Event;

use crate::diagnostic::{Diagnostic, Location};

/// The deepest nesting of lists and mappings a config may have. A provision config is about 6
/// levels deep (`pools[0].provisioning.source.build.cmake_flags[0]`).
pub const MAX_DEPTH: usize = 64;

/// The most nodes all the aliases of a document may stand for, counted as expanded (an alias
/// of an anchor that itself holds aliases counts all of them). Ten thousand pools sharing a
/// 25-node section through one anchor (`<<: *defaults`) stand for 250,000. Each expanded node
/// is built in full, and through a merge key twice over (serde_norway's value, then JSON):
/// ~80 MiB of peak RSS for 290,000 of them, 190 MiB for 970,000 at the earlier cap of 1,000,000
/// (BENCHMARKS.md, "Issue 13 regressions traced").
pub const MAX_ALIAS_NODES: u64 = 250_000;

/// The most values (scalars, lists, mappings and aliases, each key and each item counted) a
/// document may hold. A config of 10,000 pools, the most there may be, is about 300,000 (30
/// each); every value costs the span index and the parsed document 100–170 bytes, so a 16 MiB
/// list of 8 million items once took 950 MB and 6 s before the schema refused it.
pub const MAX_NODES: u64 = 2_000_000;

/// The most values a document may hold when it is read by serde_norway, the general YAML reader
/// (see `crate::yaml_value` for what sends a document there: an anchor or alias, a tag, a merge
/// key `<<`, a key that is not a plain string, several documents, …), each alias counted as the
/// values it stands for. That reader holds every parser event and its own value besides the
/// JSON one, ~300 bytes a value: 524,000 one-letter items in 1 MiB peaked at 150 MiB. At this
/// cap it stays near 70 MiB (BENCHMARKS.md, "Issue 13 regressions traced"). Plain YAML and
/// JSON are built directly and take [`MAX_NODES`]; a config of 10,000 pools written out in
/// full is one of them. Every alias sends a document here, so this cap, not
/// [`MAX_ALIAS_NODES`], is the one such a document meets first: 10,000 pools merging a
/// 25-value section (250,000 values) are now refused.
pub const MAX_GENERAL_VALUES: u64 = 200_000;

/// Follows the events of one document and reports the first limit it passes.
#[derive(Default)]
pub(crate) struct InputLimits {
    /// Values read so far.
    nodes: u64,
    /// The open collections: each one's anchor id (0 for none) and its size so far, in nodes.
    open: Vec<(usize, u64)>,
    /// The size of each anchored node, by anchor id.
    anchors: HashMap<usize, u64>,
    /// Nodes the aliases seen so far stand for.
    aliased: u64,
}

impl InputLimits {
    /// Take in the next event, which starts at `loc`; the problem, when it passes a limit.
    pub(crate) fn on_event(&mut self, ev: &Event<'_>, loc: Location) -> Option<Diagnostic> {
        if matches!(
            ev,
            Event::SequenceStart(..)
                | Event::MappingStart(..)
                | Event::Scalar(..)
                | Event::Alias(_)
        ) {
            self.nodes += 1;
            if self.nodes > MAX_NODES {
                return Some(too_many_nodes(loc));
            }
        }
        match ev {
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if self.open.len() >= MAX_DEPTH {
                    return Some(too_deep(loc));
                }
                self.open.push((*anchor, 1));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((anchor, size)) = self.open.pop() {
                    self.node(anchor, size);
                }
            }
            Event::Scalar(_, _, anchor, _) => self.node(*anchor, 1),
            Event::Alias(id) => {
                let size = self.anchors.get(id).copied().unwrap_or(1);
                self.aliased = self.aliased.saturating_add(size);
                if self.aliased > MAX_ALIAS_NODES {
                    return Some(too_many_aliased(loc));
                }
                self.node(0, size);
            }
            _ => {}
        }
        None
    }

    /// The values of the document read so far, each alias counted as the nodes it stands for.
    pub(crate) fn values(&self) -> u64 {
        self.nodes.saturating_add(self.aliased)
    }

    /// A complete node of `size` nodes, anchored as `anchor` (0: not anchored).
    fn node(&mut self, anchor: usize, size: u64) {
        if anchor != 0 {
            self.anchors.insert(anchor, size);
        }
        if let Some((_, parent)) = self.open.last_mut() {
            *parent = parent.saturating_add(size);
        }
    }
}

pub(crate) fn too_deep(loc: Location) -> Diagnostic {
    Diagnostic::error(
        "",
        format!("the document is nested more than {MAX_DEPTH} levels deep"),
    )
    .at(Some(loc))
    .with_help("a provision config is a few levels deep: check the brackets and the indentation")
}

fn too_many_nodes(loc: Location) -> Diagnostic {
    Diagnostic::error(
        "",
        format!("the document holds more than {MAX_NODES} values (keys, items and scalars)"),
    )
    .at(Some(loc))
    .with_help("a config of 10,000 pools holds about 300,000: check that this is the config file")
}

/// The problem of a document over [`MAX_GENERAL_VALUES`] that holds `values`.
pub(crate) fn too_many_for_the_general_reader(values: u64) -> Diagnostic {
    Diagnostic::error(
        "",
        format!(
            "the document holds {values} values (aliases expanded) and uses YAML that only the \
             general reader takes (an anchor or alias, a tag, a merge key `<<`, a key that is \
             not a plain string, several documents, …): at most {MAX_GENERAL_VALUES} are \
             allowed there"
        ),
    )
    .with_help(
        "write the config out in plain YAML or JSON, without anchors, aliases or tags; such a \
         config may hold 10,000 pools",
    )
}

fn too_many_aliased(loc: Location) -> Diagnostic {
    Diagnostic::error(
        "",
        format!("the aliases of this document stand for more than {MAX_ALIAS_NODES} nodes"),
    )
    .at(Some(loc))
    .with_help("write the shared parts with fewer aliases (`*name`); provision expands at most that many nodes through aliases")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_up_to_the_cap_are_read() {
        let loc = Location {
            line: 1,
            column: 1,
            len: 1,
        };
        let scalar = || Event::Scalar("1".into(), saphyr_parser::ScalarStyle::Plain, 0, None);
        let mut limits = InputLimits::default();
        assert!(limits
            .on_event(&Event::SequenceStart(0, None), loc)
            .is_none());
        for _ in 1..MAX_NODES {
            assert!(limits.on_event(&scalar(), loc).is_none());
        }
        let over = limits.on_event(&scalar(), loc).expect("one past the cap");
        assert!(
            over.message.contains("more than 2000000 values"),
            "{}",
            over.message
        );
    }
}
