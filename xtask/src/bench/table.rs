//! The one table `cargo xtask bench` prints: a row per figure, each beside its baseline.

/// Whether a row's target was met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Met,
    Missed,
    /// No target (context), or it could not be measured here.
    Info,
}

#[derive(Debug, Clone)]
pub struct Row {
    pub figure: String,
    pub what: String,
    pub value: String,
    pub baseline: String,
    pub target: String,
    pub verdict: Verdict,
}

impl Row {
    pub fn new(figure: &str, what: impl Into<String>) -> Row {
        Row {
            figure: figure.into(),
            what: what.into(),
            value: String::new(),
            baseline: String::new(),
            target: String::new(),
            verdict: Verdict::Info,
        }
    }

    pub fn value(mut self, v: impl Into<String>) -> Row {
        self.value = v.into();
        self
    }

    pub fn baseline(mut self, b: impl Into<String>) -> Row {
        self.baseline = b.into();
        self
    }

    /// A target and whether it was met.
    pub fn target(mut self, t: impl Into<String>, met: bool) -> Row {
        self.target = t.into();
        self.verdict = if met { Verdict::Met } else { Verdict::Missed };
        self
    }
}

fn cell(s: &str) -> String {
    if s.is_empty() {
        "—".into()
    } else {
        s.replace('|', "\\|")
    }
}

/// The rows as a Markdown table (readable as plain text too).
pub fn render(rows: &[Row]) -> String {
    let mut out = String::from(
        "| fig | measure | value (median, min–max, n) | baseline, same run | target | met |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let met = match r.verdict {
            Verdict::Met => "yes",
            Verdict::Missed => "**MISSED**",
            Verdict::Info => "",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.figure,
            cell(&r.what),
            cell(&r.value),
            cell(&r.baseline),
            cell(&r.target),
            if met.is_empty() { "—" } else { met },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_verdicts_and_escapes_pipes() {
        let rows = vec![
            Row::new("1", "a|b").value("3 ms").target("≤ 25 ms", true),
            Row::new("2", "c").value("9").target("0", false),
            Row::new("3", "d"),
        ];
        let t = render(&rows);
        assert!(
            t.contains("| 1 | a\\|b | 3 ms | — | ≤ 25 ms | yes |"),
            "{t}"
        );
        assert!(t.contains("| 2 | c | 9 | — | 0 | **MISSED** |"), "{t}");
        assert!(t.contains("| 3 | d | — | — | — | — |"), "{t}");
    }
}
