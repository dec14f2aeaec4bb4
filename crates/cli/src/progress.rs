//! Showing apply's events: an indicatif display on a TTY, plain timestamped lines elsewhere,
//! or one JSON object per line with `--format json`.
//!
//! A running step's progress is read from the tail of its log: a build's `[x/y]`, a model's
//! hashing (bytes, rate, ETA). The TTY shows it beside the step's spinner, plain output every
//! 30 seconds; `--format json` carries no progress: its events are the steps' changes of
//! state, each `started` event names the log that holds the progress lines.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use provision_executor::{Event, EventSink};
use provision_steps_model::hash_progress::last_of;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

/// The sink for this terminal and these flags.
pub fn sink(json: bool, verbosity: Verbosity) -> Box<dyn EventSink + Send> {
    if json {
        Box::new(JsonLines)
    } else if std::io::stderr().is_terminal() && verbosity != Verbosity::Quiet {
        Box::new(Tty::new(verbosity))
    } else {
        Box::new(Plain::new(verbosity))
    }
}

/// One JSON object per line on stdout.
pub struct JsonLines;

impl EventSink for JsonLines {
    fn emit(&self, event: Event) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string(&event).expect("events serialise")
        );
        let _ = out.flush();
    }
}

/// Describe an event as one line, or `None` when it is not shown at this verbosity.
pub fn describe(event: &Event, verbosity: Verbosity) -> Option<String> {
    let verbose = verbosity == Verbosity::Verbose;
    match event {
        Event::Started {
            step, reason, log, ..
        } => Some(if verbose {
            format!("start  {step}  ({reason}; log {log})")
        } else {
            format!("start  {step}")
        }),
        Event::Skipped { step, kept, .. } if verbose => {
            Some(format!("{}  {step}", if *kept { "kept " } else { "fresh" }))
        }
        Event::Skipped { .. } => None,
        Event::Finished {
            step, duration_ms, ..
        } => Some(format!("done   {step}  ({})", secs(*duration_ms))),
        Event::Failed {
            step,
            error,
            hint,
            tail,
            log,
            ..
        } => {
            let mut s = format!("FAILED {step}: {error}");
            if let Some(t) = tail.as_ref().filter(|t| !t.trim().is_empty()) {
                s.push_str(&format!("\n{}", indent(t)));
            }
            if let Some(h) = hint {
                s.push_str(&format!("\n       hint: {h}"));
            }
            s.push_str(&format!("\n       log: {log}"));
            Some(s)
        }
        Event::Blocked { step, by, .. } => Some(format!("blocked {step}  (by {by})")),
        Event::Cancelled { step, .. } => Some(format!("cancelled {step}")),
        Event::Retired {
            step, error: None, ..
        } => Some(format!("retired {step}  (no longer in the config)")),
        Event::Retired {
            step,
            error: Some(e),
            ..
        } => Some(format!("could not retire {step}: {e}")),
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("       | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn secs(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

/// Plain lines on stderr, with the time since apply started (CI logs). A running step's
/// progress ([`step_progress`]: a build's `[x/y]`, a model's hashing) is printed every 30
/// seconds.
pub struct Plain {
    pub verbosity: Verbosity,
    pub start: Instant,
    pub running: std::sync::Arc<Mutex<HashMap<String, std::path::PathBuf>>>,
}

impl Plain {
    fn new(verbosity: Verbosity) -> Self {
        let running: std::sync::Arc<Mutex<HashMap<String, std::path::PathBuf>>> =
            Default::default();
        let start = Instant::now();
        if verbosity != Verbosity::Quiet {
            let watched = std::sync::Arc::downgrade(&running);
            std::thread::spawn(move || loop {
                std::thread::sleep(Duration::from_secs(30));
                let Some(running) = watched.upgrade() else {
                    return;
                };
                for (step, log) in running.lock().expect("not poisoned").iter() {
                    if let Some(progress) = step_progress(log) {
                        let t = start.elapsed().as_secs_f64();
                        eprintln!("[{t:>7.2}s] ...    {step}  {progress}");
                    }
                }
            });
        }
        Plain {
            verbosity,
            start,
            running,
        }
    }
}

impl EventSink for Plain {
    fn emit(&self, event: Event) {
        {
            let mut running = self.running.lock().expect("not poisoned");
            match &event {
                Event::Started { step, log, .. } => {
                    running.insert(step.clone(), log.into());
                }
                other => {
                    running.remove(other.step());
                }
            }
        }
        let quiet_ok = matches!(event, Event::Failed { .. });
        if self.verbosity == Verbosity::Quiet && !quiet_ok {
            return;
        }
        if let Some(line) = describe(&event, self.verbosity) {
            let t = self.start.elapsed().as_secs_f64();
            eprintln!("[{t:>7.2}s] {line}");
        }
    }
}

/// The last `[done/total]` a build tool (ninja, make via CMake) printed to a step's log.
fn build_progress_of(text: &str) -> Option<(u64, u64)> {
    text.lines().rev().find_map(|line| {
        let inner = line.trim_start().strip_prefix('[')?.split(']').next()?;
        let (done, total) = inner.split_once('/')?;
        Some((done.trim().parse().ok()?, total.trim().parse().ok()?))
    })
}

/// The last 8 KiB of a step's log.
fn log_tail(log: &std::path::Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(log).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(8192))).ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    Some(String::from_utf8_lossy(&tail).into_owned())
}

/// What a running step's log says of its progress: a build's `[x/y]`, or how far the hashing
/// of a model is (bytes, rate, ETA: [`provision_steps_model::hash_progress`]).
pub fn step_progress(log: &std::path::Path) -> Option<String> {
    let text = log_tail(log)?;
    if let Some((done, total)) = build_progress_of(&text) {
        return Some(format!("[{done}/{total}]"));
    }
    last_of(&text).map(|p| p.describe())
}

/// A spinner per running step with its elapsed time and its progress read from the step's
/// log ([`step_progress`]); finished steps print above.
pub struct Tty {
    verbosity: Verbosity,
    multi: MultiProgress,
    bars: std::sync::Arc<Mutex<HashMap<String, (ProgressBar, std::path::PathBuf)>>>,
}

impl Tty {
    fn new(verbosity: Verbosity) -> Self {
        let bars: std::sync::Arc<Mutex<HashMap<String, (ProgressBar, std::path::PathBuf)>>> =
            Default::default();
        let watched = std::sync::Arc::downgrade(&bars);
        std::thread::spawn(move || {
            while let Some(bars) = watched.upgrade() {
                for (step, (bar, log)) in bars.lock().expect("not poisoned").iter() {
                    if let Some(progress) = step_progress(log) {
                        bar.set_message(format!("{step} {progress}"));
                    }
                }
                drop(bars);
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        Tty {
            verbosity,
            multi: MultiProgress::new(),
            bars,
        }
    }
}

impl EventSink for Tty {
    fn emit(&self, event: Event) {
        let mut bars = self.bars.lock().expect("not poisoned");
        if let Event::Started { step, log, .. } = &event {
            let bar = self.multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                    .expect("valid template"),
            );
            bar.set_message(step.clone());
            bar.enable_steady_tick(Duration::from_millis(120));
            bars.insert(step.clone(), (bar, log.into()));
        } else if let Some((bar, _)) = bars.remove(event.step()) {
            bar.finish_and_clear();
        }
        if let Some(line) = describe(&event, self.verbosity) {
            if !matches!(event, Event::Started { .. }) || self.verbosity == Verbosity::Verbose {
                let _ = self.multi.println(line);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_progress_is_read_from_the_log_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("b.log");
        std::fs::write(&log, "$ cmake --build b\n[1/212] Building C object x.o\n[131/212] Building CXX object y.o\nwarning: z\n").unwrap();
        assert_eq!(step_progress(&log).as_deref(), Some("[131/212]"));
        std::fs::write(&log, "no progress here\n").unwrap();
        assert_eq!(step_progress(&log), None);
        assert_eq!(step_progress(&dir.path().join("none.log")), None);
    }

    #[test]
    fn hashing_progress_is_read_from_the_log_tail_with_rate_and_eta() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("m.log");
        std::fs::write(
            &log,
            "hashed 1073741824 of 5368709120 bytes in 1000 ms: /m/a.gguf\n\
             hashed 2147483648 of 5368709120 bytes in 2000 ms: /m/a.gguf\n",
        )
        .unwrap();
        assert_eq!(
            step_progress(&log).as_deref(),
            Some("hashing 2.0 GiB of 5.0 GiB, 1.0 GiB/s, ETA 3s")
        );
    }
}
