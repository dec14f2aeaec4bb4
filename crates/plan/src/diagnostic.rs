//! Problems found in a config, each pointing at a file, line, column and field path, rendered
//! the way rustc renders errors: what is wrong, where, the source line, and what to do.

use std::collections::HashMap;
use std::fmt;

use serde::Serialize;

use crate::excerpt::excerpt;

/// A 1-based line and column, plus the length of the text it covers on that line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Location {
    pub line: usize,
    pub column: usize,
    #[serde(skip)]
    pub len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem in a config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Field path, e.g. `pools[0].provisioning.flags[2]`; empty for the document itself.
    pub path: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            path: path.into(),
            message: message.into(),
            location: None,
            help: None,
        }
    }

    pub fn warning(path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(path, message)
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn at(mut self, location: Option<Location>) -> Self {
        self.location = location;
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Render with the file name and, when the source text is given, the offending line.
    pub fn render(&self, file: &str, source: Option<&str>) -> String {
        let line = self
            .location
            .and_then(|loc| source_line(source?, loc.line))
            .filter(|l| !may_hold_secret(l));
        self.render_with_line(file, line)
    }

    /// [`Diagnostic::render`] with the source line already looked up (and checked for
    /// secrets); only a window of it around the problem is shown.
    fn render_with_line(&self, file: &str, line_text: Option<&str>) -> String {
        let mut out = String::new();
        let kind = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        out.push_str(&format!("{kind}: {}\n", self.message));
        match self.location {
            Some(loc) => {
                out.push_str(&format!("  --> {file}:{}:{}\n", loc.line, loc.column));
                if let Some(text) = line_text {
                    let gutter = loc.line.to_string().len();
                    let pad = " ".repeat(gutter);
                    let shown = excerpt(text, loc.column, loc.len);
                    out.push_str(&format!("{pad} |\n"));
                    out.push_str(&format!("{} | {}\n", loc.line, shown.text));
                    out.push_str(&format!("{pad} | {}\n", shown.carets));
                }
            }
            None => out.push_str(&format!("  --> {file}\n")),
        }
        if !self.path.is_empty() {
            out.push_str(&format!("   = field: {}\n", self.path));
        }
        if let Some(help) = &self.help {
            out.push_str(&format!("   = help: {help}\n"));
        }
        out
    }
}

/// Line `line` (1-based) of `source`.
fn source_line(source: &str, line: usize) -> Option<&str> {
    source.lines().nth(line.checked_sub(1)?)
}

/// Each of `diags` rendered (see [`Diagnostic::render`]), separated by blank lines, then a
/// line saying how many more were found when `omitted` is not 0. Each source line is looked up
/// and checked for secrets once, however many diagnostics point at it.
pub fn render_all(
    diags: &[Diagnostic],
    file: &str,
    source: Option<&str>,
    omitted: usize,
) -> String {
    let mut lines: HashMap<usize, Option<&str>> = HashMap::new();
    let mut parts: Vec<String> = diags
        .iter()
        .map(|d| {
            let line = d.location.and_then(|loc| {
                *lines.entry(loc.line).or_insert_with(|| {
                    source
                        .and_then(|s| source_line(s, loc.line))
                        .filter(|l| !may_hold_secret(l))
                })
            });
            d.render_with_line(file, line)
        })
        .collect();
    if omitted > 0 {
        parts.push(format!(
            "… and {omitted} more {} not shown (the first {} are above)\n",
            if omitted == 1 { "problem" } else { "problems" },
            diags.len()
        ));
    }
    parts.join("\n")
}

/// An invalid config: every problem found, in document order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigError {
    pub file: String,
    pub diagnostics: Vec<Diagnostic>,
    #[serde(skip)]
    pub source: Option<String>,
    /// Problems found beyond the first [`MAX_DIAGNOSTICS`], not kept.
    #[serde(skip_serializing_if = "is_zero")]
    pub omitted: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The most diagnostics kept (and shown) per file; the rest are counted.
pub const MAX_DIAGNOSTICS: usize = 100;

impl ConfigError {
    /// The first [`MAX_DIAGNOSTICS`] of `diagnostics` are kept, the rest counted.
    pub fn new(
        file: impl Into<String>,
        source: Option<String>,
        mut diagnostics: Vec<Diagnostic>,
    ) -> Self {
        let omitted = diagnostics.len().saturating_sub(MAX_DIAGNOSTICS);
        diagnostics.truncate(MAX_DIAGNOSTICS);
        ConfigError {
            file: file.into(),
            diagnostics,
            source,
            omitted,
        }
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = render_all(
            &self.diagnostics,
            &self.file,
            self.source.as_deref(),
            self.omitted,
        );
        writeln!(f, "{shown}")?;
        let n = self.errors().count() + self.omitted;
        write!(
            f,
            "{}: {n} {} in the config; nothing was changed",
            self.file,
            if n == 1 { "problem" } else { "problems" }
        )
    }
}

impl std::error::Error for ConfigError {}

/// Whether a config line may hold a secret: a secret-looking name (the redactor's rule:
/// `TOKEN`, `KEY`, `SECRET`, `PASS`, `AUTH`, `CREDENTIAL`) or a URL with credentials
/// (userinfo, signed query parameters).
pub fn may_hold_secret(line: &str) -> bool {
    crate::redact::is_secret_name(line) || crate::redact::redact_text(line) != line
}

/// The closest of `candidates` to `word`, when close enough to be a likely misspelling.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_with_secrets_are_not_echoed() {
        let source = "a: 1\nflags: [--api-key, sk-123, -x]\nrepo: https://u:p@host/r.git\n";
        for line in [2, 3] {
            let d = Diagnostic::error("p", "bad").at(Some(Location {
                line,
                column: 3,
                len: 1,
            }));
            let shown = d.render("c.yaml", Some(source));
            assert!(
                !shown.contains("sk-123") && !shown.contains("u:p"),
                "{shown}"
            );
            assert!(shown.contains(&format!("c.yaml:{line}:3")));
        }
        let d = Diagnostic::error("p", "bad").at(Some(Location {
            line: 1,
            column: 1,
            len: 1,
        }));
        assert!(d.render("c.yaml", Some(source)).contains("1 | a: 1"));
    }

    #[test]
    fn signed_urls_and_secret_names_are_secret_lines() {
        assert!(may_hold_secret(
            "model: https://h/m.gguf?X-Amz-Signature=abc"
        ));
        assert!(may_hold_secret("  DB_PASS: hunter2"));
        assert!(may_hold_secret("  AUTH: x"));
        assert!(!may_hold_secret("model: https://h/m.gguf?rev=2"));
        assert!(!may_hold_secret("  replicas: 2"));
    }
}
