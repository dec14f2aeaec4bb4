//! Supervision: watch the replicas recorded in the state file; when one's server exits, or runs
//! on while the listener on its URL's port is not its own (another process took the port, or
//! nobody listens), remove its handoff at once (and stop that server) and restart it (through
//! the caller, who runs its steps) after an exponential backoff that resets once it has stayed
//! healthy for a while. On cancellation (SIGINT, SIGTERM) every supervised replica is stopped.
//! Once the state's lock file is removed or replaced, nothing more is touched or written.

use std::collections::BTreeSet;
use std::thread;
use std::time::{Duration, Instant};

use provision_executor::{Cancel, State, StateError, StateFile, StepStatus};
use provision_plan::{ReplicaId, StepId};

use crate::down::{down, DownReport};
use crate::server_handle::ServerHandle;

#[derive(Debug, Clone)]
pub struct SuperviseOptions {
    /// The pause before the first restart; doubled after each failure in a row.
    pub backoff_base: Duration,
    /// The longest pause between two restarts.
    pub backoff_cap: Duration,
    /// A replica healthy this long has its failures forgotten.
    pub reset_after: Duration,
    /// How often the replicas are checked.
    pub poll: Duration,
    /// SIGTERM → SIGKILL grace when stopping at the end.
    pub grace: Duration,
}

impl Default for SuperviseOptions {
    fn default() -> Self {
        SuperviseOptions {
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(60),
            reset_after: Duration::from_secs(60),
            poll: Duration::from_millis(200),
            grace: crate::replica::DEFAULT_GRACE,
        }
    }
}

/// `base * 2^failures`, at most `cap`.
pub fn backoff(base: Duration, cap: Duration, failures: u32) -> Duration {
    let factor = 1u32.checked_shl(failures.min(30)).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(cap)
}

/// One replica: `(pool, replica index)`.
pub type ReplicaKey = (String, u32);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SuperviseEvent {
    /// Its server is not running; its handoff file was removed.
    Down { replica: String, why: String },
    /// A restart starts now (`attempt` counts failures in a row, from 1).
    Restarting { replica: String, attempt: u32 },
    /// Restarted and ready.
    Up { replica: String },
    RestartFailed {
        replica: String,
        error: String,
        retry_in: Duration,
    },
    /// Cancelled: stopping every supervised replica.
    Stopping,
}

struct Watch {
    key: ReplicaKey,
    failures: u32,
    up_since: Option<Instant>,
    next_try: Option<Instant>,
}

/// Supervise `replicas` until `cancel` is set, then stop them all (the report of that stop is
/// returned). `restart` runs a replica's steps again (spawn, probe, handoff) and updates the
/// state file; `events` hears what happens.
pub fn supervise(
    file: &StateFile,
    replicas: &[ReplicaKey],
    opts: &SuperviseOptions,
    cancel: &Cancel,
    restart: &mut dyn FnMut(&ReplicaKey) -> Result<(), String>,
    events: &mut dyn FnMut(SuperviseEvent),
) -> Result<DownReport, StateError> {
    let now = Instant::now();
    let mut watches: Vec<Watch> = replicas
        .iter()
        .map(|k| Watch {
            key: k.clone(),
            failures: 0,
            up_since: Some(now),
            next_try: None,
        })
        .collect();
    while !cancel.is_cancelled() {
        for w in &mut watches {
            if cancel.is_cancelled() {
                break;
            }
            let replica = ReplicaId::new(&w.key.0, w.key.1);
            let name = replica.to_string();
            // The lock file removed or replaced: another provision may hold the state now.
            // Nothing more is touched (no handoff removed, no restart, no stop), nothing written.
            file.check_held()?;
            let state = file.load()?;
            let alive = health(&state, &replica);
            match (&alive, w.next_try) {
                (Ok(()), None) if w.up_since.is_some_and(|t| t.elapsed() >= opts.reset_after) => {
                    w.failures = 0;
                }
                (Err(Unhealthy { why, serverless }), None) => {
                    // Just noticed: nobody may be sent to it any more.
                    if let Some(r) = state
                        .steps
                        .get(&StepId::Handoff(replica.clone()).to_string())
                    {
                        let _ = crate::down::take_handoff_away(r);
                    }
                    // Alive but not serving its port: stopped, so that the restart starts a
                    // new server rather than keeping this one.
                    if let Some(server) = serverless {
                        let _ = server.stop(opts.grace);
                    }
                    if w.up_since.is_some_and(|t| t.elapsed() >= opts.reset_after) {
                        w.failures = 0;
                    }
                    let delay = backoff(opts.backoff_base, opts.backoff_cap, w.failures);
                    w.failures += 1;
                    w.up_since = None;
                    w.next_try = Some(Instant::now() + delay);
                    events(SuperviseEvent::Down {
                        replica: name.clone(),
                        why: format!("{why}; restarting in {} ms", delay.as_millis()),
                    });
                }
                (_, Some(t)) if Instant::now() >= t => {
                    events(SuperviseEvent::Restarting {
                        replica: name.clone(),
                        attempt: w.failures,
                    });
                    match restart(&w.key) {
                        Ok(()) => {
                            w.up_since = Some(Instant::now());
                            w.next_try = None;
                            events(SuperviseEvent::Up { replica: name });
                        }
                        Err(error) if cancel.is_cancelled() => {
                            let _ = error;
                        }
                        Err(error) => {
                            let delay = backoff(opts.backoff_base, opts.backoff_cap, w.failures);
                            w.failures += 1;
                            w.next_try = Some(Instant::now() + delay);
                            events(SuperviseEvent::RestartFailed {
                                replica: name,
                                error,
                                retry_in: delay,
                            });
                        }
                    }
                }
                _ => {}
            }
        }
        sleep_unless_cancelled(opts.poll, cancel);
    }
    events(SuperviseEvent::Stopping);
    let mut state = file.load()?;
    let pools: BTreeSet<&str> = replicas.iter().map(|(p, _)| p.as_str()).collect();
    let mut report = DownReport::default();
    for pool in pools {
        let r = down(file, &mut state, Some(pool), opts.grace, None)?;
        report.stopped.extend(r.stopped);
        report.failed.extend(r.failed);
    }
    Ok(report)
}

/// Why a replica is not healthy.
struct Unhealthy {
    why: String,
    /// Its server, still running (proven provision's), whose port another process holds or
    /// nobody listens on.
    serverless: Option<Box<ServerHandle>>,
}

/// Is `replica` healthy: its spawn passed, its server still runs, and the listener on its
/// URL's port is that server's (never another process that took the port)?
fn health(state: &State, replica: &ReplicaId) -> Result<(), Unhealthy> {
    let down = |why: String| Unhealthy {
        why,
        serverless: None,
    };
    let record = match state.steps.get(&StepId::Spawn(replica.clone()).to_string()) {
        Some(r) if r.status == StepStatus::Passed => r,
        Some(r) => return Err(down(format!("its last spawn {}", status_text(r.status)))),
        None => return Err(down("never started".into())),
    };
    let server = record
        .outputs
        .as_ref()
        .and_then(ServerHandle::of_outputs)
        .ok_or_else(|| down("no process recorded".into()))?;
    server.check().map_err(|e| down(e.to_string()))?;
    server.verify_listener(server.url()).map_err(|e| Unhealthy {
        why: format!("{e}; its server was stopped"),
        serverless: Some(Box::new(server)),
    })
}

fn status_text(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Running => "was interrupted",
        StepStatus::Passed => "passed",
        StepStatus::Failed => "failed",
        StepStatus::Cancelled => "was stopped",
    }
}

fn sleep_unless_cancelled(total: Duration, cancel: &Cancel) {
    let deadline = Instant::now() + total;
    while !cancel.is_cancelled() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        thread::sleep(left.min(Duration::from_millis(20)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = Duration::from_millis(100);
        let cap = Duration::from_secs(1);
        let got: Vec<u128> = (0..6).map(|n| backoff(b, cap, n).as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff(b, cap, 200), cap);
    }
}
