//! `provision supervise`: apply, then stay in the foreground watching the replicas. A replica
//! whose server exits (or no longer owns the listener on its port) loses its handoff at once and
//! is restarted (its spawn, probe and handoff run again through the executor, everything else is
//! kept) after an exponential backoff; SIGINT/SIGTERM stop every replica cleanly: exit 0 while
//! watching (its normal end), 130 when the signal interrupted the first apply.
//! The signal handler is set up before anything else, so a signal at any moment of the run is
//! an interruption (state written, servers stopped), never the default death (143). Holds the
//! apply lock the whole time, and writes the state only while its lock file is the one it holds.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use provision_executor::{ApplyOptions, Cancel, Dispatch};
use provision_plan::{Plan, StepId, StepKind, StepSpec};
use provision_steps_spawn::{DownReport, ReplicaKey, SuperviseEvent, SuperviseOptions};

use crate::args::{parse_seconds, Loudness, Output, Target};
use crate::dispatch::StepDispatch;
use crate::exit::Exit;
use crate::interrupt::Interrupt;
use crate::progress::{self, Verbosity};
use crate::session::{Opening, Session};

#[derive(Args)]
pub struct SuperviseArgs {
    #[command(flatten)]
    target: Target,
    /// Seconds before the first restart; doubled after each failure in a row.
    #[arg(long, value_name = "SECS", default_value = "1.0", value_parser = parse_seconds)]
    backoff_base: Duration,
    /// The longest pause between two restarts, in seconds.
    #[arg(long, value_name = "SECS", default_value = "60.0", value_parser = parse_seconds)]
    backoff_cap: Duration,
    /// A replica healthy this many seconds has its failures forgotten.
    #[arg(long, value_name = "SECS", default_value = "60.0", value_parser = parse_seconds)]
    reset_after: Duration,
    /// Seconds between SIGTERM and SIGKILL when stopping.
    #[arg(long, value_name = "SECS", default_value = "5.0", value_parser = parse_seconds)]
    grace: Duration,
    // `--format json`: one JSON event per line on stdout.
    #[command(flatten)]
    output: Output,
    #[command(flatten)]
    loudness: Loudness,
}

/// `provision supervise`: plan, prepare the runtime dir, then [`supervise`].
pub fn run(args: SuperviseArgs) -> ExitCode {
    // First: a signal from here on stops supervise cleanly (exit 130 or 0), never kills it.
    let cancel =
        Interrupt::install(args.loudness.quiet(), "supervise: stopping every replica").cancel;
    let SuperviseArgs {
        target,
        backoff_base,
        backoff_cap,
        reset_after,
        grace,
        output,
        loudness,
    } = args;
    loudness.init_tracing();
    match target
        .plan(output.format(), loudness.quiet())
        .and_then(|p| target.prepare_runtime(&target.state_file()).map(|()| p))
    {
        Err(code) => code,
        Ok((_, plan)) => supervise(
            &target,
            &plan,
            &StepDispatch::new(),
            &SuperviseOptions {
                backoff_base,
                backoff_cap,
                reset_after,
                grace,
                ..Default::default()
            },
            output.json(),
            loudness.verbosity(),
            &cancel,
        ),
    }
}

/// The plan restricted to one replica's handoff and everything it depends on.
fn replica_plan(plan: &Plan, key: &ReplicaKey) -> Plan {
    let mut keep = BTreeSet::new();
    let mut todo = vec![StepId::handoff(&key.0, key.1).to_string()];
    while let Some(id) = todo.pop() {
        if keep.insert(id.clone()) {
            if let Some(step) = plan.step(&id) {
                todo.extend(step.deps.iter().cloned());
            }
        }
    }
    let mut sub = plan.clone();
    sub.steps.retain(|s| keep.contains(&s.id));
    sub
}

/// Apply `plan` (or a part of it) in `session`: the failed steps, or the exit code of an
/// error (an unreadable state 4, a lost lock file 5).
fn apply(
    session: &mut Session,
    plan: &Plan,
    dispatch: &dyn Dispatch,
    sink: &dyn provision_executor::EventSink,
    cancel: &Cancel,
) -> Result<Vec<(String, String)>, ExitCode> {
    let report = session.apply(plan, dispatch, &ApplyOptions::default(), sink, cancel)?;
    Ok(report
        .failures()
        .into_iter()
        .map(|(id, e)| (id.to_string(), e.message.clone()))
        .collect())
}

/// Apply `plan`, then supervise its replicas until SIGINT/SIGTERM (`cancel`, from
/// [`Interrupt::install`]).
pub fn supervise(
    target: &Target,
    plan: &Plan,
    dispatch: &dyn Dispatch,
    opts: &SuperviseOptions,
    json: bool,
    verbosity: Verbosity,
    cancel: &Cancel,
) -> ExitCode {
    if cancel.is_cancelled() {
        eprintln!("supervise: interrupted before it started anything");
        return ExitCode::from(Exit::Interrupted);
    }
    let sink = progress::sink(json, verbosity);
    // The same session as apply's: what a killed apply left is stopped, what the config no
    // longer has is retired.
    let opening = Opening {
        target,
        plan,
        wait: false,
        held_hint: "stop that apply or supervisor first",
        stop_when_cancelled: None,
        quiet: verbosity == Verbosity::Quiet,
    };
    let mut session =
        match Session::open_apply(&opening, target.state_file(), sink.as_ref(), cancel) {
            Ok(s) => s,
            Err(code) => return code,
        };
    // Bound to the session's lock: the watch's writes check it too.
    let file = session.file().clone();

    // First, make it so.
    let failures = match apply(&mut session, plan, dispatch, sink.as_ref(), cancel) {
        Ok(f) => f,
        Err(code) => return code,
    };
    // Interrupted during the first apply: straight to stopping every replica.
    if !cancel.is_cancelled() {
        if let Err(code) = check_first_apply(&failures) {
            return code;
        }
    }
    let replicas: Vec<ReplicaKey> = plan
        .steps
        .iter()
        .filter_map(|s| match &s.spec {
            StepSpec::Spawn(sp) => Some((sp.pool.clone(), sp.replica)),
            _ => None,
        })
        .collect();
    let quiet = verbosity == Verbosity::Quiet;
    if replicas.is_empty() {
        if !quiet {
            eprintln!("supervise: no replicas provision runs (external servers only)");
        }
        return finish(&DownReport::default(), cancel.is_cancelled(), false);
    }
    // A signal from here on is supervise's normal end (exit 0); before, it interrupted the
    // first apply (exit 130).
    let interrupted_first_apply = cancel.is_cancelled();
    if !interrupted_first_apply && !quiet {
        eprintln!(
            "supervise: watching {} {} (Ctrl-C stops them all)",
            replicas.len(),
            if replicas.len() == 1 {
                "replica"
            } else {
                "replicas"
            }
        );
    }
    // Each restart reads the state the watch wrote, in the same session.
    let mut restart = |key: &ReplicaKey| match session.reload().and_then(|()| {
        apply(
            &mut session,
            &replica_plan(plan, key),
            dispatch,
            sink.as_ref(),
            cancel,
        )
    }) {
        Ok(f) if f.is_empty() => Ok(()),
        Ok(f) => Err(f
            .into_iter()
            .map(|(id, e)| format!("{id}: {e}"))
            .collect::<Vec<_>>()
            .join("; ")),
        Err(_) => Err("the state file could not be used".into()),
    };
    let mut events = |e: SuperviseEvent| {
        // Quiet: only a failed restart, an error.
        if json || !quiet || matches!(e, SuperviseEvent::RestartFailed { .. }) {
            print_event(e, json)
        }
    };
    let report = match provision_steps_spawn::supervise(
        &file,
        &replicas,
        opts,
        cancel,
        &mut restart,
        &mut events,
    ) {
        Ok(r) => r,
        Err(e) => return crate::state_error(&e),
    };
    session.close();
    finish(&report, interrupted_first_apply, quiet)
}

/// The failures of the first apply, reported; a build or check step failing ends supervise
/// (exit 3), a replica's does not (it is restarted).
fn check_first_apply(failures: &[(String, String)]) -> Result<(), ExitCode> {
    let replica_kinds = |id: &str| StepId::kind_of(id).is_some_and(StepKind::is_replica);
    for (id, err) in failures {
        eprintln!("error: step {id} failed: {err}");
    }
    if failures.iter().any(|(id, _)| !replica_kinds(id)) {
        eprintln!("supervise: a build or check step failed; fix it and run again");
        return Err(ExitCode::from(Exit::StepFailed));
    }
    Ok(())
}

fn print_event(e: SuperviseEvent, json: bool) {
    let line = match e {
        SuperviseEvent::Down { replica, why } => format!("{replica} is down: {why}"),
        SuperviseEvent::Restarting { replica, attempt } => {
            format!("{replica}: restarting (attempt {attempt})")
        }
        SuperviseEvent::Up { replica } => format!("{replica} is up again"),
        SuperviseEvent::RestartFailed {
            replica,
            error,
            retry_in,
        } => format!(
            "{replica}: restart failed: {error}; next try in {} ms",
            retry_in.as_millis()
        ),
        SuperviseEvent::Stopping => "stopping every replica".into(),
    };
    if json {
        println!(
            "{}",
            serde_json::json!({"event": "supervise", "message": line})
        );
    } else {
        eprintln!("supervise: {line}");
    }
}

/// What the final stop did, and the exit code: 130 when a signal interrupted the first apply
/// (it wins over a replica that could not be stopped, as for apply), else 1 when one could not
/// be stopped, else 0 (a signal while watching is how supervise is meant to end).
fn finish(report: &DownReport, interrupted: bool, quiet: bool) -> ExitCode {
    for s in report.stopped.iter().filter(|_| !quiet) {
        eprintln!("{}: {}", s.step, s.what);
    }
    for (s, e) in &report.failed {
        eprintln!("error: {s}: {e}");
    }
    if interrupted {
        eprintln!(
            "supervise was interrupted during its first apply: every replica it could stop was stopped, the state written"
        );
        ExitCode::from(Exit::Interrupted)
    } else if report.failed.is_empty() {
        ExitCode::from(Exit::Ok)
    } else {
        ExitCode::from(Exit::Unexpected)
    }
}
