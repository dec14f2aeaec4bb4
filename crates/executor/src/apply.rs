//! Apply a plan: its options, each step's result and the report; deciding whether a step is
//! fresh (its fingerprint against its record, its outputs on disk, a liveness step's world);
//! and [`preview`], which decides without running. The scheduling itself (a ready set over
//! the plan DAG, event-driven, one state write per pass) is [`crate::scheduler`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use provision_plan::redact::Redactor;
use provision_plan::{Plan, Step};

use crate::dirty_reason::{compare, Current, DirtyReason};
use crate::dispatch::{Cancel, Dispatch, Facts, StepContext, StepError};
use crate::events::EventSink;
use crate::fingerprint::{contribution_of, fingerprint, secret_digest, spec_value};
use crate::scheduler::{Env, Scheduler};
use crate::state::{State, StateError, StateFile, StepRecord};
use provision_plan::StepOutputs;

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

pub(crate) fn context<'a>(
    plan: &'a Plan,
    redactor: &Arc<Redactor>,
    step: &'a Step,
    outputs: &HashMap<&str, Option<StepOutputs>>,
    state: &State,
    opts: &ApplyOptions,
    cancel: &Cancel,
) -> StepContext<'a> {
    StepContext {
        roots: &plan.roots,
        redactor: redactor.clone(),
        step,
        deps: ancestors(plan, step)
            .into_iter()
            .filter_map(|d| Some((d.to_string(), outputs.get(d)?.clone()?)))
            .collect(),
        previous: state.steps.get(&step.id).and_then(|r| r.outputs.clone()),
        log: step_log(plan, step),
        jobs: opts.build_jobs,
        cancel: cancel.clone(),
        secrets: plan.secrets.for_step(&step.id),
    }
}

/// The ids of every step `step` depends on, directly or through others: all done before it
/// runs, and all in its fingerprint through its direct dependencies'. A gate passes nothing
/// on: it is there, but what it depends on is not reached through it (a server's vram-fit
/// depends on the models of the pools sharing its GPUs; they are not the server's).
fn ancestors<'p>(plan: &'p Plan, step: &'p Step) -> BTreeSet<&'p str> {
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut todo: Vec<&str> = step.deps.iter().map(String::as_str).collect();
    while let Some(id) = todo.pop() {
        if !seen.insert(id) {
            continue;
        }
        if let Some(s) = plan.step(id).filter(|s| !s.spec.step_kind().is_gate()) {
            todo.extend(s.deps.iter().map(String::as_str));
        }
    }
    seen
}

/// Fingerprint inputs of a step whose dependencies are all done.
pub(crate) struct Decision {
    pub fingerprint: String,
    pub spec: serde_json::Value,
    pub facts: Facts,
    pub deps: BTreeMap<String, String>,
    pub verdict: Result<(), DirtyReason>,
}

/// Check a step whose dependencies all passed against its record: fresh or dirty, and why.
/// `deps` are the dependencies' contributions to its fingerprint. Runs on a check worker.
pub(crate) fn decide(
    dispatch: &dyn Dispatch,
    cx: &StepContext<'_>,
    deps: BTreeMap<String, String>,
    record: Option<&StepRecord>,
    force: bool,
) -> Result<Decision, StepError> {
    let step = cx.step;
    let mut facts = dispatch.facts(cx)?;
    if let Some(d) = secret_digest(step, cx.secrets) {
        facts.insert("secrets".into(), d);
    }
    let spec = spec_value(step);
    let fp = fingerprint(&spec, &facts, &deps);
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
    let saves_before = file.save_counts();
    let env = Env {
        plan,
        dispatch,
        file,
        opts,
        events,
        cancel,
    };
    let (results, passes) = Scheduler::new(env, state).run()?;
    let saves = file.save_counts();
    tracing::debug!(
        saves = saves.saves - saves_before.saves,
        fsynced = saves.synced - saves_before.synced,
        passes,
        "state file written"
    );
    Ok(ApplyReport {
        results: plan
            .steps
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
    let mut outputs: HashMap<&str, Option<StepOutputs>> = HashMap::new();
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
            let deps = step
                .deps
                .iter()
                .filter_map(|d| Some((d.clone(), contributions.get(d.as_str())?.clone())))
                .collect();
            match decide(dispatch, &cx, deps, state.steps.get(&step.id), force) {
                Ok(d) => match d.verdict {
                    Ok(()) => {
                        let out = state.steps[&step.id].outputs.clone();
                        contributions.insert(
                            &step.id,
                            contribution_of(step, &d.fingerprint, out.as_ref()),
                        );
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
