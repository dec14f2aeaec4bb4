//! Showing apply's events: an indicatif display on a TTY, plain timestamped lines elsewhere,
//! or one JSON object per line with `--json`.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use provision_executor::{Event, EventSink};

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
        Box::new(Plain {
            verbosity,
            start: Instant::now(),
        })
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

/// Plain lines on stderr, with the time since apply started (CI logs).
pub struct Plain {
    pub verbosity: Verbosity,
    pub start: Instant,
}

impl EventSink for Plain {
    fn emit(&self, event: Event) {
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

/// A spinner per running step with its elapsed time; finished steps print above.
pub struct Tty {
    verbosity: Verbosity,
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Tty {
    fn new(verbosity: Verbosity) -> Self {
        Tty {
            verbosity,
            multi: MultiProgress::new(),
            bars: Mutex::new(HashMap::new()),
        }
    }
}

impl EventSink for Tty {
    fn emit(&self, event: Event) {
        let mut bars = self.bars.lock().expect("not poisoned");
        if let Event::Started { step, .. } = &event {
            let bar = self.multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                    .expect("valid template"),
            );
            bar.set_message(step.clone());
            bar.enable_steady_tick(Duration::from_millis(120));
            bars.insert(step.clone(), bar);
        } else if let Some(bar) = bars.remove(event.step()) {
            bar.finish_and_clear();
        }
        if let Some(line) = describe(&event, self.verbosity) {
            if !matches!(event, Event::Started { .. }) || self.verbosity == Verbosity::Verbose {
                let _ = self.multi.println(line);
            }
        }
    }
}
