//! The scheduler: a ready set over the plan DAG. A step starts when all its dependencies
//! passed; independent steps run at the same time (at most `jobs`, and at most one heavy step
//! such as a build that already uses every core). A failed step blocks its dependents while
//! independent branches finish; `--fail-fast` or a cancellation stops everything.
//!
//! The scheduler works in passes: start every step that is ready, write the state file once,
//! then wait for a result and take every other result already waiting. One write per pass, not
//! per transition, and each write precedes what depends on it: a step's `running` record (its
//! old fingerprint cleared) is on disk before the step runs, a result is on disk before its
//! event is emitted and before the steps it unblocks run, and everything is written before
//! `apply` returns. A write whose changes are all records of [`is_volatile`] steps is not
//! fsynced.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use provision_plan::redact::Redactor;
use provision_plan::{Plan, Step};

use crate::dirty_reason::{compare, Current, DirtyReason};
use crate::dispatch::{Cancel, Dispatch, Facts, Outcome, Outputs, StepContext, StepError};
use crate::events::{Event, EventSink};
use crate::fingerprint::{dep_contribution, fingerprint, secret_digest, spec_value};
use crate::state::{now_rfc3339, Durability, State, StateError, StateFile, StepRecord, StepStatus};

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Steps running at once.
    pub jobs: usize,
    /// Parallelism given to a build (`${jobs}`).
    pub build_jobs: usize,
    /// Stop everything at the first failure.
    pub fail_fast: bool,
    /// Run every step, fresh or not.
    pub force: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        ApplyOptions {
            jobs: cores.max(4),
            build_jobs: cores,
            fail_fast: false,
            force: false,
        }
    }
}

/// How a step ended in one apply.
#[derive(Debug, Clone, PartialEq)]
pub enum StepResult {
    /// It ran and passed.
    Ran,
    /// Fresh: skipped.
    Fresh,
    /// A liveness step whose world still matched: kept (a healthy server is not restarted).
    Kept,
    Failed(StepError),
    /// Not run: the named dependency failed or was blocked.
    Blocked(String),
    Cancelled,
    /// Not started because apply stopped (fail-fast or cancellation).
    NotStarted,
}

impl StepResult {
    pub fn passed(&self) -> bool {
        matches!(self, StepResult::Ran | StepResult::Fresh | StepResult::Kept)
    }
}

#[derive(Debug, Clone)]
pub struct ApplyReport {
    /// Every step of the plan, in plan order.
    pub results: Vec<(String, StepResult)>,
    pub cancelled: bool,
    pub duration: Duration,
    /// Scheduler passes: times the scheduler looked for steps to start (a test hook: each
    /// pass follows at least one message from a step thread, never a timer).
    pub passes: u64,
}

impl ApplyReport {
    pub fn ok(&self) -> bool {
        self.results.iter().all(|(_, r)| r.passed())
    }

    pub fn count(&self, f: impl Fn(&StepResult) -> bool) -> usize {
        self.results.iter().filter(|(_, r)| f(r)).count()
    }

    pub fn failures(&self) -> Vec<(&str, &StepError)> {
        self.results
            .iter()
            .filter_map(|(id, r)| match r {
                StepResult::Failed(e) => Some((id.as_str(), e)),
                _ => None,
            })
            .collect()
    }
}

/// Steps that use every core by themselves: never two at once (the kind decides:
/// [`provision_plan::StepKind::is_heavy`]).
pub fn is_heavy(step: &Step) -> bool {
    step.spec.step_kind().is_heavy()
}

/// Steps whose state records need no fsync: the liveness steps (gpu-check, spawn, probe), which
/// check the world on every apply and are never fresh from the state file alone, and the
/// handoff, which describes a running server and reruns whenever its probe does. A power loss
/// that undoes the last writes of their records also stops the servers they describe, so the
/// next apply redoes them either way. Records of every other step (tools, clone, configure,
/// build, model, vram fit) are fsynced: there a stale fingerprint would skip needed work.
/// The kind decides: [`provision_plan::StepKind::is_volatile`].
pub fn is_volatile(step: &Step) -> bool {
    step.spec.step_kind().is_volatile()
}

/// What one scheduler pass changed and has not yet written: the state records touched, and the
/// events that must wait for that write (each event describing a change, and, to keep their
/// order, every event after it).
#[derive(Default)]
struct Unsaved {
    changed: bool,
    /// A record of a step that is not [`is_volatile`] changed: fsync this write.
    durable: bool,
    events: Vec<Event>,
}

impl Unsaved {
    /// `step`'s record changed; `event` says how.
    fn change(&mut self, step: &Step, event: Event) {
        self.changed = true;
        self.durable |= !is_volatile(step);
        self.events.push(event);
    }

    /// An event that changes no record: emitted now unless earlier ones wait for a write.
    fn note(&mut self, events: &dyn EventSink, event: Event) {
        if self.events.is_empty() {
            events.emit(event);
        } else {
            self.events.push(event);
        }
    }

    /// Write what changed (once), then emit the events that waited for it.
    fn flush(
        &mut self,
        file: &StateFile,
        state: &State,
        events: &dyn EventSink,
    ) -> Result<(), StateError> {
        if self.changed {
            let durability = match self.durable {
                true => Durability::Fsync,
                false => Durability::NoSync,
            };
            file.save_with(state, durability)?;
        }
        for event in self.events.drain(..) {
            events.emit(event);
        }
        self.changed = false;
        self.durable = false;
        Ok(())
    }
}

/// The log file of a step: `<runtime>/logs/steps/<id>.log` (id made file-safe).
pub fn step_log(plan: &Plan, step: &Step) -> PathBuf {
    let safe: String = step
        .id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    PathBuf::from(
        plan.roots
            .expand(&format!("${{runtime}}/logs/steps/{safe}.log")),
    )
}

fn context<'a>(
    plan: &'a Plan,
    redactor: &Arc<Redactor>,
    step: &'a Step,
    outputs: &HashMap<&str, Outputs>,
    state: &State,
    opts: &ApplyOptions,
    cancel: &Cancel,
) -> StepContext<'a> {
    StepContext {
        roots: &plan.roots,
        redactor: redactor.clone(),
        step,
        deps: step
            .deps
            .iter()
            .filter_map(|d| outputs.get(d.as_str()).map(|o| (d.clone(), o.clone())))
            .collect(),
        previous: state.steps.get(&step.id).map(|r| r.outputs.clone()),
        log: step_log(plan, step),
        jobs: opts.build_jobs,
        cancel: cancel.clone(),
    }
}

/// Fingerprint inputs of a step whose dependencies are all done.
struct Decision {
    fingerprint: String,
    spec: serde_json::Value,
    facts: Facts,
    deps: BTreeMap<String, String>,
    verdict: Result<(), DirtyReason>,
}

fn decide(
    dispatch: &dyn Dispatch,
    cx: &StepContext<'_>,
    contributions: &HashMap<&str, String>,
    state: &State,
    force: bool,
) -> Result<Decision, StepError> {
    let step = cx.step;
    let mut facts = dispatch.facts(cx)?;
    if let Some(d) = secret_digest(step) {
        facts.insert("secrets".into(), d);
    }
    let spec = spec_value(step);
    let deps: BTreeMap<String, String> = step
        .deps
        .iter()
        .filter_map(|d| {
            contributions
                .get(d.as_str())
                .map(|c| (d.clone(), c.clone()))
        })
        .collect();
    let fp = fingerprint(&spec, &facts, &deps);
    let record = state.steps.get(&step.id);
    tracing::debug!(
        step = %step.id,
        fingerprint = %fp,
        recorded = ?record.and_then(|r| r.fingerprint.as_deref()),
        facts = ?facts,
        "decide"
    );
    let verdict = if force {
        Err(DirtyReason::Forced)
    } else {
        compare(
            record,
            &Current {
                fingerprint: &fp,
                spec: &spec,
                facts: &facts,
                deps: &deps,
            },
        )
    }
    .and_then(|()| {
        let record = record.expect("fresh implies a record");
        match record
            .artifacts
            .iter()
            .find(|a| !std::path::Path::new(a).exists())
        {
            Some(missing) => Err(DirtyReason::OutputMissing {
                path: missing.clone(),
            }),
            None => Ok(()),
        }
    })
    .and_then(|()| {
        if step.is_liveness() {
            dispatch
                .check_alive(cx)
                .map_err(|detail| DirtyReason::NotAlive { detail })
        } else {
            Ok(())
        }
    });
    Ok(Decision {
        fingerprint: fp,
        spec,
        facts,
        deps,
        verdict,
    })
}

/// Run `plan`: skip what is fresh, run what is dirty, record everything in `file`.
pub fn apply(
    plan: &Plan,
    dispatch: &dyn Dispatch,
    file: &StateFile,
    state: &mut State,
    opts: &ApplyOptions,
    events: &dyn EventSink,
    cancel: &Cancel,
) -> Result<ApplyReport, StateError> {
    let started = Instant::now();
    let steps = &plan.steps;
    let index: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let mut results: Vec<Option<StepResult>> = vec![None; steps.len()];
    let mut outputs: HashMap<&str, Outputs> = HashMap::new();
    let mut contributions: HashMap<&str, String> = HashMap::new();
    let mut fingerprints: HashMap<usize, String> = HashMap::new();
    let mut running: BTreeSet<usize> = BTreeSet::new();
    let mut heavy_running = false;
    let mut any_failed = false;
    let jobs = opts.jobs.max(1);
    // Every step error is redacted before it reaches the state, the events or the terminal.
    let redactor = &Arc::new(Redactor::for_plan(plan));

    let saves_before = file.save_counts();
    let mut passes = 0;
    std::thread::scope(|scope| -> Result<(), StateError> {
        let (tx, rx) = mpsc::channel::<(usize, Result<Outcome, StepError>, Instant)>();
        let mut unsaved = Unsaved::default();
        // A state that cannot be written (its lock lost, a full disk): the running steps stop,
        // and nothing more is written.
        let stop = |e: StateError| {
            cancel.cancel();
            e
        };
        loop {
            passes += 1;
            let stopping = cancel.is_cancelled() || (opts.fail_fast && any_failed);
            let mut progressed = false;
            // Steps whose `running` record is set: they start once it is written.
            let mut starting: Vec<(usize, StepContext<'_>)> = Vec::new();
            if !stopping {
                for i in 0..steps.len() {
                    if results[i].is_some() || running.contains(&i) {
                        continue;
                    }
                    let step = &steps[i];
                    let mut ready = true;
                    let mut blocked_by = None;
                    for dep in &step.deps {
                        match index.get(dep.as_str()).and_then(|&j| results[j].as_ref()) {
                            Some(r) if r.passed() => {}
                            Some(_) => blocked_by = Some(dep.clone()),
                            None => ready = false,
                        }
                    }
                    if let Some(by) = blocked_by {
                        unsaved.note(
                            events,
                            Event::Blocked {
                                step: step.id.clone(),
                                kind: step.kind().into(),
                                by: by.clone(),
                            },
                        );
                        results[i] = Some(StepResult::Blocked(by));
                        progressed = true;
                        continue;
                    }
                    if !ready || running.len() >= jobs || (is_heavy(step) && heavy_running) {
                        continue;
                    }
                    progressed = true;
                    let cx = context(plan, redactor, step, &outputs, state, opts, cancel);
                    let decision = match decide(dispatch, &cx, &contributions, state, opts.force) {
                        Ok(d) => d,
                        Err(err) => {
                            let err = err.redacted(redactor);
                            // The world could not even be checked (e.g. an unreachable repo).
                            unsaved.note(
                                events,
                                Event::Failed {
                                    step: step.id.clone(),
                                    kind: step.kind().into(),
                                    error: err.message.clone(),
                                    hint: err.hint.clone(),
                                    tail: err.tail.clone(),
                                    log: cx.log.display().to_string(),
                                    duration_ms: 0,
                                },
                            );
                            any_failed = true;
                            results[i] = Some(StepResult::Failed(err));
                            continue;
                        }
                    };
                    match decision.verdict {
                        Ok(()) => {
                            let record = &state.steps[&step.id];
                            let out = record.outputs.clone();
                            contributions
                                .insert(&step.id, dep_contribution(&decision.fingerprint, &out));
                            outputs.insert(&step.id, out);
                            let kept = step.is_liveness();
                            unsaved.note(
                                events,
                                Event::Skipped {
                                    step: step.id.clone(),
                                    kind: step.kind().into(),
                                    kept,
                                },
                            );
                            results[i] = Some(if kept {
                                StepResult::Kept
                            } else {
                                StepResult::Fresh
                            });
                        }
                        Err(reason) => {
                            // The old fingerprint is cleared before the step runs.
                            state.steps.insert(
                                step.id.clone(),
                                StepRecord {
                                    kind: step.kind().into(),
                                    status: StepStatus::Running,
                                    fingerprint: None,
                                    spec: decision.spec,
                                    facts: decision.facts,
                                    deps: decision.deps,
                                    outputs: BTreeMap::new(),
                                    artifacts: Vec::new(),
                                    started_at: Some(now_rfc3339()),
                                    finished_at: None,
                                    duration_ms: None,
                                    reason: Some(reason.clone()),
                                    error: None,
                                },
                            );
                            unsaved.change(
                                step,
                                Event::Started {
                                    step: step.id.clone(),
                                    kind: step.kind().into(),
                                    reason,
                                    log: cx.log.display().to_string(),
                                },
                            );
                            fingerprints.insert(i, decision.fingerprint);
                            running.insert(i);
                            heavy_running |= is_heavy(step);
                            starting.push((i, cx));
                        }
                    }
                }
            }
            // One write for this pass: the results taken at the end of the last pass and the
            // `running` records of the steps starting now, before any of them runs.
            unsaved.flush(file, state, events).map_err(&stop)?;
            for (i, cx) in starting {
                let tx = tx.clone();
                scope.spawn(move || {
                    let t = Instant::now();
                    let result = dispatch.run(&cx).map_err(|e| e.redacted(redactor));
                    let _ = tx.send((i, result, t));
                });
            }
            if running.is_empty() {
                if stopping || !progressed {
                    break;
                }
                continue;
            }
            let first = match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(msg) => msg,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // A lost lock stops the running steps now, not at the next write.
                    file.check_held().map_err(&stop)?;
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            // This result and every other one already waiting, recorded in one write.
            for (i, result, t) in std::iter::once(first).chain(rx.try_iter()) {
                running.remove(&i);
                let step = &steps[i];
                if is_heavy(step) {
                    heavy_running = false;
                }
                let duration_ms = t.elapsed().as_millis() as u64;
                let record = state
                    .steps
                    .get_mut(&step.id)
                    .expect("inserted when started");
                record.finished_at = Some(now_rfc3339());
                record.duration_ms = Some(duration_ms);
                let log = step_log(plan, step).display().to_string();
                match result {
                    Ok(outcome) => {
                        let fp = fingerprints.remove(&i).expect("set when started");
                        record.status = StepStatus::Passed;
                        record.outputs = outcome.outputs.clone();
                        record.artifacts = outcome
                            .artifacts
                            .iter()
                            .map(|p| p.display().to_string())
                            .collect();
                        record.fingerprint = Some(fp.clone());
                        contributions.insert(&step.id, dep_contribution(&fp, &outcome.outputs));
                        outputs.insert(&step.id, outcome.outputs);
                        unsaved.change(
                            step,
                            Event::Finished {
                                step: step.id.clone(),
                                kind: step.kind().into(),
                                duration_ms,
                            },
                        );
                        results[i] = Some(StepResult::Ran);
                    }
                    Err(err) if err.cancelled => {
                        record.status = StepStatus::Cancelled;
                        record.error = Some(err.message.clone());
                        unsaved.change(
                            step,
                            Event::Cancelled {
                                step: step.id.clone(),
                                kind: step.kind().into(),
                            },
                        );
                        results[i] = Some(StepResult::Cancelled);
                    }
                    Err(err) => {
                        record.status = StepStatus::Failed;
                        record.error = Some(err.message.clone());
                        unsaved.change(
                            step,
                            Event::Failed {
                                step: step.id.clone(),
                                kind: step.kind().into(),
                                error: err.message.clone(),
                                hint: err.hint.clone(),
                                tail: err.tail.clone(),
                                log,
                                duration_ms,
                            },
                        );
                        any_failed = true;
                        if opts.fail_fast {
                            cancel.cancel();
                        }
                        results[i] = Some(StepResult::Failed(err));
                    }
                }
            }
        }
        // Every path out of the loop has written what it changed; this is the guarantee.
        unsaved.flush(file, state, events).map_err(&stop)
    })?;
    let saves = file.save_counts();
    tracing::debug!(
        saves = saves.saves - saves_before.saves,
        fsynced = saves.synced - saves_before.synced,
        "state file written"
    );

    Ok(ApplyReport {
        results: steps
            .iter()
            .zip(results)
            .map(|(s, r)| (s.id.clone(), r.unwrap_or(StepResult::NotStarted)))
            .collect(),
        cancelled: cancel.is_cancelled(),
        duration: started.elapsed(),
        passes,
    })
}

/// What `apply` would do now, without doing it: each step `run` (with the reason) or `skip`.
#[derive(Debug, Clone, PartialEq)]
pub enum Preview {
    Run(DirtyReason),
    Skip { kept: bool },
}

/// Preview an apply against the state. Checks the world as apply would (facts, outputs,
/// liveness) but runs nothing and writes nothing.
pub fn preview(
    plan: &Plan,
    dispatch: &dyn Dispatch,
    state: &State,
    force: bool,
) -> Vec<(String, Preview)> {
    let opts = ApplyOptions::default();
    let cancel = Cancel::new();
    let redactor = &Arc::new(Redactor::for_plan(plan));
    let mut outputs: HashMap<&str, Outputs> = HashMap::new();
    let mut contributions: HashMap<&str, String> = HashMap::new();
    let mut will_run: BTreeSet<&str> = BTreeSet::new();
    let mut out = Vec::new();
    for step in &plan.steps {
        let running_deps: Vec<String> = step
            .deps
            .iter()
            .filter(|d| will_run.contains(d.as_str()))
            .cloned()
            .collect();
        let preview = if !running_deps.is_empty() {
            Preview::Run(DirtyReason::DependencyWillRun { deps: running_deps })
        } else {
            let cx = context(plan, redactor, step, &outputs, state, &opts, &cancel);
            match decide(dispatch, &cx, &contributions, state, force) {
                Ok(d) => match d.verdict {
                    Ok(()) => {
                        let out = state.steps[&step.id].outputs.clone();
                        contributions.insert(&step.id, dep_contribution(&d.fingerprint, &out));
                        outputs.insert(&step.id, out);
                        Preview::Skip {
                            kept: step.is_liveness(),
                        }
                    }
                    Err(reason) => Preview::Run(reason),
                },
                Err(err) => Preview::Run(DirtyReason::NotAlive {
                    detail: format!("cannot check: {}", redactor.redact(&err.message)),
                }),
            }
        };
        if matches!(preview, Preview::Run(_)) {
            will_run.insert(&step.id);
        }
        out.push((step.id.clone(), preview));
    }
    out
}
