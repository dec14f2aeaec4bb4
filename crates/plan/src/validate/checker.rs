//! The checker: collects each problem at its path, bounded in memory.

use crate::diagnostic::{Diagnostic, Location, MAX_DIAGNOSTICS};
use crate::document::Document;
use crate::unpassable::{starts_with_tilde, TILDE_HELP};

pub(super) struct Checker<'a> {
    pub(super) doc: &'a Document,
    /// The problems kept: at most [`KEPT_DIAGNOSTICS`].
    pub(super) diags: Vec<Diagnostic>,
    /// Errors found, kept or not.
    pub(super) errors: usize,
    pub(super) omitted_errors: usize,
    pub(super) omitted_warnings: usize,
}

/// The most problems validation keeps while it runs (only the first [`MAX_DIAGNOSTICS`] in
/// document order are shown; more are kept than shown because they are found out of order):
/// the rest are counted, so that a config with a million mistakes costs no more memory than
/// one with a thousand.
pub(crate) const KEPT_DIAGNOSTICS: usize = 10 * MAX_DIAGNOSTICS;

impl Checker<'_> {
    pub(super) fn push(&mut self, d: Diagnostic, at_key: bool) {
        if d.is_error() {
            self.errors += 1;
        }
        if self.diags.len() >= KEPT_DIAGNOSTICS {
            match d.is_error() {
                true => self.omitted_errors += 1,
                false => self.omitted_warnings += 1,
            }
            return;
        }
        let loc = if at_key {
            self.doc.key_location(&d.path)
        } else {
            self.doc.value_location(&d.path)
        };
        self.diags.push(d.at(loc));
    }

    pub(super) fn error(&mut self, path: &str, at_key: bool, message: &str, help: Option<&str>) {
        let mut d = Diagnostic::error(path, message);
        d.help = help.map(str::to_string);
        self.push(d, at_key);
    }

    pub(super) fn warning(&mut self, path: &str, message: &str, help: Option<&str>) {
        let mut d = Diagnostic::warning(path, message);
        d.help = help.map(str::to_string);
        self.push(d, true);
    }

    /// A path field that starts with `~` is an error: provision does not expand it.
    pub(super) fn no_tilde(&mut self, path: &str, value: &str) {
        if starts_with_tilde(value) {
            let message = format!("`{value}` starts with `~`, which provision does not expand");
            self.error(path, false, &message, Some(TILDE_HELP));
        }
    }

    pub(super) fn line_of(&self, path: &str) -> String {
        match self.doc.key_location(path) {
            Some(Location { line, .. }) => format!("{path} (line {line})"),
            None => path.to_string(),
        }
    }
}
