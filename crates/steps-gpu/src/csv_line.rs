//! One line of what `nvidia-smi --format=csv,noheader,nounits` prints: its fields, and the
//! error that names the command, the line and what is wrong with it.

use crate::detect::DetectError;

/// Line `n` (from 0) of `command`'s output, trimmed, with its comma-separated fields.
pub struct CsvLine<'a> {
    command: &'a str,
    n: usize,
    line: &'a str,
    pub fields: Vec<&'a str>,
}

impl<'a> CsvLine<'a> {
    /// The non-empty lines of `out` that `skip` does not drop, each with exactly `expected`
    /// fields.
    pub fn all(
        command: &'a str,
        out: &'a str,
        expected: usize,
        skip: impl Fn(&str) -> bool,
    ) -> Result<Vec<CsvLine<'a>>, DetectError> {
        let mut lines = Vec::new();
        for (n, line) in out.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || skip(line) {
                continue;
            }
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let l = CsvLine {
                command,
                n,
                line,
                fields,
            };
            if l.fields.len() != expected {
                return Err(l.garbage(format!("{} fields, expected {expected}", l.fields.len())));
            }
            lines.push(l);
        }
        Ok(lines)
    }

    /// The error for this line: `why` it is not what the query prints.
    pub fn garbage(&self, why: String) -> DetectError {
        DetectError::Garbage {
            command: self.command.into(),
            line: self.n + 1,
            text: self.line.chars().take(200).collect(),
            why,
        }
    }

    /// Field `i` as a number, else the error naming it `what`.
    pub fn number(&self, i: usize, what: &str) -> Result<u64, DetectError> {
        self.fields[i]
            .parse::<u64>()
            .map_err(|_| self.garbage(format!("{what} `{}` is not a number", self.fields[i])))
    }

    /// Field `i`, which must be a GPU (or MIG instance) UUID.
    pub fn uuid(&self, i: usize) -> Result<&'a str, DetectError> {
        let f = self.fields[i];
        if f.starts_with("GPU-") || f.starts_with("MIG-") {
            Ok(f)
        } else {
            Err(self.garbage(format!("`{f}` is not a GPU UUID")))
        }
    }
}
