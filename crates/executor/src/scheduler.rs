//! The scheduler: event-driven over the plan DAG. Each step counts the dependencies it still
//! waits for; a step that passes releases exactly its dependents, and a step that reaches zero
//! joins the ready set. Step threads report on one channel, and the scheduler wakes only for
//! those reports (and, in between, to check that the state lock still holds); it never
//! rescans the plan.
//!
//! A ready step is first *checked*: its facts, its outputs on disk and, for a liveness step,
//! the world (`git ls-remote`, `nvidia-smi`, `/health`), on the check workers ([`Checkers`]),
//! never on the scheduler thread, so independent checks overlap and a slow one holds up only
//! its own dependents. A fresh step passes at once; a dirty one gets its `running` record and then runs on a thread
//! of its own. Checking and running steps together are at most `jobs`, and at most one heavy
//! step (a build that already uses every core) is checking or running at a time.
//!
//! A failed step blocks its dependents while independent branches finish; `--fail-fast` or a
//! cancellation stops everything (what was not started stays not started). Each step's events
//! come in causal order; independent steps' events come in the order they complete.
//!
//! The scheduler works in passes: take every report waiting and hand what it made ready to
//! the checkers; when steps were found dirty, write the state file once (the results taken and
//! the `running` records of those steps), then emit the events of what changed and start them
//! (see [`Unsaved`]); checks still out do not hold them back. A pass with nothing to start
//! leaves what changed for the write of a later pass.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::Scope;
use std::time::{Duration, Instant};

use provision_plan::redact::Redactor;
use provision_plan::{Plan, Step};

use crate::apply::{context, is_heavy, step_log, ApplyOptions, Decision, StepResult};
use crate::checkers::{Check, Checkers};
use crate::dispatch::{Cancel, Dispatch, Outcome, StepContext, StepError};
use crate::events::{Event, EventSink};
use crate::fingerprint::{contribution_of, fingerprint};
use crate::state::{now_rfc3339, State, StateError, StateFile, StepRecord, StepStatus};
use crate::unsaved::Unsaved;
use provision_plan::StepOutputs;

/// How often a waiting scheduler checks that its state lock still holds, so that a lost lock
/// stops the running steps now rather than at the next write. Nothing is scheduled then.
const LOCK_WATCH: Duration = Duration::from_millis(200);

/// What a worker thread reports.
pub(crate) enum Report<'a> {
    /// Step `i` was checked: fresh or dirty (or the world could not be checked).
    Decided(usize, StepContext<'a>, Result<Decision, StepError>),
    /// Step `i` ran, from the given instant.
    Ran(usize, Result<Outcome, StepError>, Instant),
}

/// Everything an apply needs to schedule a plan.
pub(crate) struct Env<'a> {
    pub plan: &'a Plan,
    pub dispatch: &'a dyn Dispatch,
    pub file: &'a StateFile,
    pub opts: &'a ApplyOptions,
    pub events: &'a dyn EventSink,
    pub cancel: &'a Cancel,
}

pub(crate) struct Scheduler<'a> {
    env: Env<'a>,
    state: &'a mut State,
    /// Every step error is redacted before it reaches the state, the events or the terminal.
    redactor: Arc<Redactor>,
    /// Each step's dependencies and dependents, by index.
    deps: Vec<Vec<usize>>,
    dependents: Vec<Vec<usize>>,
    /// Dependencies each step still waits for.
    waiting_on: Vec<usize>,
    /// Steps whose dependencies all passed, not yet decided (plan order).
    ready: BTreeSet<usize>,
    results: Vec<Option<StepResult>>,
    outputs: HashMap<&'a str, Option<StepOutputs>>,
    contributions: HashMap<&'a str, String>,
    /// Fingerprints of the running steps, recorded when they pass.
    fingerprints: HashMap<usize, String>,
    deciding: usize,
    running: usize,
    /// A heavy step is deciding or running.
    heavy_busy: bool,
    any_failed: bool,
    unsaved: Unsaved,
    /// Steps whose `running` record is set: they start once it is written.
    starting: Vec<(usize, StepContext<'a>)>,
    passes: u64,
}

impl<'a> Scheduler<'a> {
    pub(crate) fn new(env: Env<'a>, state: &'a mut State) -> Self {
        let steps = &env.plan.steps;
        let index: HashMap<&str, usize> = steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.as_str(), i))
            .collect();
        let deps: Vec<Vec<usize>> = steps
            .iter()
            .map(|s| {
                s.deps
                    .iter()
                    .filter_map(|d| index.get(d.as_str()).copied())
                    .collect()
            })
            .collect();
        let mut dependents = vec![Vec::new(); steps.len()];
        for (i, ds) in deps.iter().enumerate() {
            for &j in ds {
                dependents[j].push(i);
            }
        }
        let waiting_on: Vec<usize> = deps.iter().map(Vec::len).collect();
        let ready = (0..steps.len()).filter(|&i| waiting_on[i] == 0).collect();
        Scheduler {
            redactor: Arc::new(Redactor::for_plan(env.plan)),
            env,
            state,
            deps,
            dependents,
            waiting_on,
            ready,
            results: vec![None; steps.len()],
            outputs: HashMap::new(),
            contributions: HashMap::new(),
            fingerprints: HashMap::new(),
            deciding: 0,
            running: 0,
            heavy_busy: false,
            any_failed: false,
            unsaved: Unsaved::default(),
            starting: Vec::new(),
            passes: 0,
        }
    }

    /// Run the plan to its end: every path out writes what it changed. Returns each step's
    /// result (`None`: not started) and the number of passes.
    pub(crate) fn run(mut self) -> Result<(Vec<Option<StepResult>>, u64), StateError> {
        std::thread::scope(|scope| {
            let (tx, rx) = mpsc::channel::<Report<'a>>();
            let (dispatch, force) = (self.env.dispatch, self.env.opts.force);
            let mut checkers = Checkers::new(scope, tx.clone(), dispatch, force);
            let done = self.passes_until_done(scope, &mut checkers, &tx, &rx);
            // The check workers stop; the scope waits for them and for the steps.
            drop(checkers);
            // A state that cannot be written (its lock lost, a full disk): the running steps
            // stop, and nothing more is written.
            done.inspect_err(|_| self.env.cancel.cancel())
        })?;
        Ok((self.results, self.passes))
    }

    fn passes_until_done<'s>(
        &mut self,
        scope: &'s Scope<'s, 'a>,
        checkers: &mut Checkers<'s, 'a>,
        tx: &Sender<Report<'a>>,
        rx: &Receiver<Report<'a>>,
    ) -> Result<(), StateError> {
        loop {
            self.passes += 1;
            self.start(scope, checkers, tx)?;
            if self.deciding + self.running == 0 {
                break;
            }
            let first = self.wait(rx)?;
            // This report and every other one already waiting, taken in one pass.
            for report in std::iter::once(first).chain(rx.try_iter()) {
                self.finish(report);
            }
        }
        self.flush()
    }

    fn stopping(&self) -> bool {
        self.env.cancel.is_cancelled() || (self.env.opts.fail_fast && self.any_failed)
    }

    fn flush(&mut self) -> Result<(), StateError> {
        let env = &self.env;
        self.unsaved.flush(env.file, self.state, env.events)
    }

    /// The next report; meanwhile, a lost lock stops everything.
    fn wait(&self, rx: &Receiver<Report<'a>>) -> Result<Report<'a>, StateError> {
        loop {
            match rx.recv_timeout(LOCK_WATCH) {
                Ok(report) => return Ok(report),
                Err(mpsc::RecvTimeoutError::Timeout) => self.env.file.check_held()?,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    unreachable!("the scheduler holds a sender")
                }
            }
        }
    }

    /// Check what is ready (within `jobs` and the one heavy step), then write the state once
    /// and start the steps found dirty. Checks still out do not hold them back (a `git
    /// ls-remote` that takes 20 s must not delay another pool's server); with no step to
    /// start, what changed waits for the checks out, to share their write.
    fn start<'s>(
        &mut self,
        scope: &'s Scope<'s, 'a>,
        checkers: &mut Checkers<'s, 'a>,
        tx: &Sender<Report<'a>>,
    ) -> Result<(), StateError> {
        if !self.stopping() {
            self.submit_ready(checkers);
        }
        if self.deciding > 0 && self.starting.is_empty() {
            return Ok(());
        }
        self.flush()?;
        for (i, cx) in self.starting.drain(..) {
            let tx = tx.clone();
            let (dispatch, redactor) = (self.env.dispatch, self.redactor.clone());
            scope.spawn(move || {
                let t = Instant::now();
                let result = dispatch.run(&cx).map_err(|e| e.redacted(&redactor));
                let _ = tx.send(Report::Ran(i, result, t));
            });
        }
        Ok(())
    }

    /// Hand the ready steps (within `jobs` and the one heavy step) to the check workers: never
    /// checked here, so a slow check (an unreachable git host, a hung `nvidia-smi`) never
    /// keeps the scheduler from taking the reports of the others.
    fn submit_ready(&mut self, checkers: &mut Checkers<'_, 'a>) {
        let jobs = self.env.opts.jobs.max(1);
        let mut picked = Vec::new();
        for &i in &self.ready {
            if self.deciding + self.running + picked.len() >= jobs {
                break;
            }
            if is_heavy(&self.env.plan.steps[i]) {
                if self.heavy_busy {
                    continue;
                }
                self.heavy_busy = true;
            }
            picked.push(i);
        }
        for &i in &picked {
            self.ready.remove(&i);
            self.deciding += 1;
            checkers.submit(self.check(i), self.deciding);
        }
    }

    /// What a worker needs to check step `i`.
    fn check(&self, i: usize) -> Check<'a> {
        let env = &self.env;
        let step: &'a Step = &env.plan.steps[i];
        let cx = context(
            env.plan,
            &self.redactor,
            step,
            &self.outputs,
            self.state,
            env.opts,
            env.cancel,
        );
        let deps: BTreeMap<String, String> = step
            .deps
            .iter()
            .filter_map(|d| {
                let c = self.contributions.get(d.as_str())?;
                Some((d.clone(), c.clone()))
            })
            .collect();
        let record = self.state.steps.get(&step.id).cloned();
        Check {
            i,
            cx,
            deps,
            record,
        }
    }

    fn finish(&mut self, report: Report<'a>) {
        match report {
            Report::Decided(i, cx, decision) => {
                self.deciding -= 1;
                if self.stopping() {
                    // Not started: apply is stopping.
                    self.heavy_done(i);
                    return;
                }
                match decision {
                    Ok(d) => self.decided(i, cx, d),
                    Err(err) => {
                        // The world could not even be checked (e.g. an unreachable repo).
                        self.heavy_done(i);
                        let err = err.redacted(&self.redactor);
                        let step = &self.env.plan.steps[i];
                        let event = failed_event(step, &err, cx.log.display().to_string(), 0);
                        self.unsaved.note(self.env.events, event);
                        self.any_failed = true;
                        self.results[i] = Some(StepResult::Failed(err));
                        self.block_dependents(i);
                    }
                }
            }
            Report::Ran(i, result, t) => {
                self.running -= 1;
                self.heavy_done(i);
                self.ran(i, result, t);
            }
        }
    }

    fn heavy_done(&mut self, i: usize) {
        if is_heavy(&self.env.plan.steps[i]) {
            self.heavy_busy = false;
        }
    }

    /// A checked step: fresh, it passes now; dirty, its `running` record (old fingerprint
    /// cleared) is set and it starts once that is written.
    fn decided(&mut self, i: usize, cx: StepContext<'a>, d: Decision) {
        let step: &'a Step = &self.env.plan.steps[i];
        match d.verdict {
            Ok(()) => {
                self.heavy_done(i);
                let out = self.state.steps[&step.id].outputs.clone();
                self.contributions.insert(
                    &step.id,
                    contribution_of(step, &d.fingerprint, out.as_ref()),
                );
                self.outputs.insert(&step.id, out);
                let kept = step.is_liveness();
                let event = Event::Skipped {
                    step: step.id.clone(),
                    kind: step.kind().into(),
                    kept,
                };
                self.unsaved.note(self.env.events, event);
                self.results[i] = Some(match kept {
                    true => StepResult::Kept,
                    false => StepResult::Fresh,
                });
                self.release(i);
            }
            Err(reason) => {
                self.state.steps.insert(
                    step.id.clone(),
                    StepRecord {
                        kind: step.kind().into(),
                        status: StepStatus::Running,
                        fingerprint: None,
                        spec: d.spec,
                        facts: d.facts,
                        deps: d.deps,
                        outputs: None,
                        artifacts: Vec::new(),
                        started_at: Some(now_rfc3339()),
                        finished_at: None,
                        duration_ms: None,
                        reason: Some(reason.clone()),
                        error: None,
                    },
                );
                let event = Event::Started {
                    step: step.id.clone(),
                    kind: step.kind().into(),
                    reason,
                    log: cx.log.display().to_string(),
                };
                self.unsaved.change(step, event);
                self.fingerprints.insert(i, d.fingerprint);
                self.running += 1;
                self.starting.push((i, cx));
            }
        }
    }

    /// A step that ran: its record and result; it releases its dependents or blocks them.
    fn ran(&mut self, i: usize, result: Result<Outcome, StepError>, t: Instant) {
        let step: &'a Step = &self.env.plan.steps[i];
        let duration_ms = t.elapsed().as_millis() as u64;
        let record = self
            .state
            .steps
            .get_mut(&step.id)
            .expect("inserted when started");
        record.finished_at = Some(now_rfc3339());
        record.duration_ms = Some(duration_ms);
        let (event, result) = match result {
            Ok(outcome) => {
                let mut fp = self.fingerprints.remove(&i).expect("set when started");
                if !outcome.settled.is_empty() {
                    // What the run learned replaces the check's placeholders (a digest).
                    record.facts.extend(outcome.settled);
                    fp = fingerprint(&record.spec, &record.facts, &record.deps);
                }
                record.status = StepStatus::Passed;
                record.outputs = outcome.outputs.clone();
                record.artifacts = outcome
                    .artifacts
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                record.fingerprint = Some(fp.clone());
                self.contributions.insert(
                    &step.id,
                    contribution_of(step, &fp, outcome.outputs.as_ref()),
                );
                self.outputs.insert(&step.id, outcome.outputs);
                let event = Event::Finished {
                    step: step.id.clone(),
                    kind: step.kind().into(),
                    duration_ms,
                };
                (event, StepResult::Ran)
            }
            Err(err) if err.cancelled => {
                record.status = StepStatus::Cancelled;
                record.error = Some(err.message.clone());
                let event = Event::Cancelled {
                    step: step.id.clone(),
                    kind: step.kind().into(),
                };
                (event, StepResult::Cancelled)
            }
            Err(err) => {
                record.status = StepStatus::Failed;
                record.error = Some(err.message.clone());
                let log = step_log(self.env.plan, step).display().to_string();
                let event = failed_event(step, &err, log, duration_ms);
                self.any_failed = true;
                if self.env.opts.fail_fast {
                    self.env.cancel.cancel();
                }
                (event, StepResult::Failed(err))
            }
        };
        self.unsaved.change(step, event);
        let passed = result.passed();
        self.results[i] = Some(result);
        match passed {
            true => self.release(i),
            false => self.block_dependents(i),
        }
    }

    /// `i` passed: each dependent waits for one dependency less.
    fn release(&mut self, i: usize) {
        for &d in &self.dependents[i] {
            self.waiting_on[d] -= 1;
            if self.waiting_on[d] == 0 && self.results[d].is_none() {
                self.ready.insert(d);
            }
        }
    }

    /// `i` did not pass: its dependents, and theirs, are blocked (in plan order, each by the
    /// last of its dependencies that did not pass). Not when apply is stopping: then they are
    /// not started.
    fn block_dependents(&mut self, i: usize) {
        if self.stopping() {
            return;
        }
        let steps = &self.env.plan.steps;
        let mut todo: BTreeSet<usize> = self.dependents[i].iter().copied().collect();
        while let Some(d) = todo.pop_first() {
            if self.results[d].is_some() {
                continue;
            }
            let step = &steps[d];
            let failed = |&&j: &&usize| matches!(&self.results[j], Some(r) if !r.passed());
            let Some(&by) = self.deps[d].iter().rev().find(failed) else {
                continue;
            };
            let by = steps[by].id.clone();
            let event = Event::Blocked {
                step: step.id.clone(),
                kind: step.kind().into(),
                by: by.clone(),
            };
            self.unsaved.note(self.env.events, event);
            self.results[d] = Some(StepResult::Blocked(by.clone()));
            self.ready.remove(&d);
            todo.extend(self.dependents[d].iter().copied());
        }
    }
}

/// The event of a failed step (failed to run, or failed to be checked: `duration_ms` 0).
fn failed_event(step: &Step, err: &StepError, log: String, duration_ms: u64) -> Event {
    Event::Failed {
        step: step.id.clone(),
        kind: step.kind().into(),
        error: err.message.clone(),
        hint: err.hint.clone(),
        tail: err.tail.clone(),
        log,
        duration_ms,
        failed_command: err.command.clone(),
    }
}
