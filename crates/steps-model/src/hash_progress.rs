//! The progress of hashing a model file, as lines in the step's log: model-resolve writes one
//! every half second while it reads a file (and one when it is done), and the cli reads the
//! last one from the log's tail to show bytes, rate and ETA beside the step's spinner on a
//! TTY (as it shows a build's `[x/y]`). The line is the one format both sides know:
//!
//! `hashed 1073741824 of 4294967296 bytes in 3500 ms: /models/llama-8b.gguf`

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, Instant};

/// How often a line is logged while a file is hashed.
pub const INTERVAL: Duration = Duration::from_millis(500);

/// Bytes of a file hashed so far, of how many, and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashProgress {
    pub done: u64,
    pub total: u64,
    pub elapsed_ms: u64,
}

impl HashProgress {
    /// The log line for `path`.
    pub fn line(&self, path: &Path) -> String {
        format!(
            "hashed {} of {} bytes in {} ms: {}",
            self.done,
            self.total,
            self.elapsed_ms,
            path.display()
        )
    }

    /// A line written by [`HashProgress::line`].
    pub fn parse(line: &str) -> Option<HashProgress> {
        let rest = line.trim_start().strip_prefix("hashed ")?;
        let words: Vec<&str> = rest.splitn(7, ' ').collect();
        let [done, "of", total, "bytes", "in", ms, path] = words[..] else {
            return None;
        };
        if !path.starts_with("ms:") {
            return None;
        }
        Some(HashProgress {
            done: done.parse().ok()?,
            total: total.parse().ok()?,
            elapsed_ms: ms.parse().ok()?,
        })
    }

    /// Bytes per second so far (`None` before the first millisecond).
    pub fn rate(&self) -> Option<u64> {
        (self.elapsed_ms > 0).then(|| self.done.saturating_mul(1000) / self.elapsed_ms)
    }

    /// Time left at the rate so far.
    pub fn eta(&self) -> Option<Duration> {
        let rate = self.rate().filter(|r| *r > 0)?;
        let left = self.total.saturating_sub(self.done);
        Some(Duration::from_millis(left.saturating_mul(1000) / rate))
    }

    /// `hashing 1.2 GiB of 4.9 GiB, 310.0 MiB/s, ETA 12s` (what the TTY shows).
    pub fn describe(&self) -> String {
        if self.done >= self.total {
            return format!("hashed {}", bytes(self.total));
        }
        let mut s = format!("hashing {} of {}", bytes(self.done), bytes(self.total));
        if let (Some(rate), Some(eta)) = (self.rate(), self.eta()) {
            s.push_str(&format!(", {}/s, ETA {}", bytes(rate), clock(eta)));
        }
        s
    }
}

/// `512 B`, `1.5 KiB`, `310.0 MiB`, `4.9 GiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `45s`, `3m05s`, `1h02m`.
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Turns a hasher's `(done, total)` calls into log lines: the first, then one each
/// [`INTERVAL`], and the last.
pub struct HashLog<'a> {
    path: &'a Path,
    start: Instant,
    last: Option<Instant>,
    log: &'a mut dyn FnMut(String),
}

impl<'a> HashLog<'a> {
    pub fn new(path: &'a Path, log: &'a mut dyn FnMut(String)) -> Self {
        HashLog {
            path,
            start: Instant::now(),
            last: None,
            log,
        }
    }

    /// `done` bytes of `total` hashed.
    pub fn update(&mut self, done: u64, total: u64) {
        if done < total && self.last.is_some_and(|t| t.elapsed() < INTERVAL) {
            return;
        }
        self.last = Some(Instant::now());
        let p = HashProgress {
            done,
            total,
            elapsed_ms: self.start.elapsed().as_millis() as u64,
        };
        (self.log)(p.line(self.path));
    }
}

/// The progress line that ends a step's log, if any (see [`last_of`]).
pub fn last_in(log: &Path) -> Option<HashProgress> {
    let mut file = std::fs::File::open(log).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(8192))).ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    last_of(&String::from_utf8_lossy(&tail))
}

/// The progress of a hashing under way: the last line of `text` (a log), when it is a
/// progress line. A line after it means the step moved on; an earlier run's lines (logs are
/// appended to) are not the current one's.
pub fn last_of(text: &str) -> Option<HashProgress> {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .and_then(HashProgress::parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_reads_back_and_describes_bytes_rate_and_eta() {
        let p = HashProgress {
            done: 1 << 30,
            total: 4 << 30,
            elapsed_ms: 2000,
        };
        let line = p.line(Path::new("/models/a model.gguf"));
        assert_eq!(
            line,
            "hashed 1073741824 of 4294967296 bytes in 2000 ms: /models/a model.gguf"
        );
        assert_eq!(HashProgress::parse(&line), Some(p));
        assert_eq!(p.rate(), Some(512 << 20));
        assert_eq!(p.eta(), Some(Duration::from_secs(6)));
        assert_eq!(
            p.describe(),
            "hashing 1.0 GiB of 4.0 GiB, 512.0 MiB/s, ETA 6s"
        );
        let done = HashProgress { done: 4 << 30, ..p };
        assert_eq!(done.describe(), "hashed 4.0 GiB");
        assert_eq!(HashProgress::parse("[3/10] Building x.o"), None);
        assert_eq!(HashProgress::parse("hashed the model"), None);
    }

    #[test]
    fn lines_come_at_most_each_interval_and_always_at_the_end() {
        let mut lines = Vec::new();
        let mut log = |l: String| lines.push(l);
        let path = Path::new("/m.gguf");
        let mut h = HashLog::new(path, &mut log);
        for done in 1..=99 {
            h.update(done, 100);
        }
        h.update(100, 100);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].starts_with("hashed 1 of 100 bytes in "));
        assert!(lines[1].starts_with("hashed 100 of 100 bytes in "));
    }

    #[test]
    fn only_a_progress_line_that_ends_the_log_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("m.log");
        let a = HashProgress {
            done: 10,
            total: 100,
            elapsed_ms: 5,
        };
        let b = HashProgress { done: 60, ..a };
        let text = format!(
            "resolving\n{}\n{}\n",
            a.line(Path::new("/m")),
            b.line(Path::new("/m"))
        );
        std::fs::write(&log, &text).unwrap();
        assert_eq!(last_in(&log), Some(b));
        // The step moved on (or this is an earlier run's log): no hashing under way.
        std::fs::write(&log, format!("{text}model /m (100 bytes)\n")).unwrap();
        assert_eq!(last_in(&log), None);
        assert_eq!(last_in(&dir.path().join("none.log")), None);
    }
}
