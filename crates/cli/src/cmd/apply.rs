//! `provision apply`: run the plan under the lock, skipping what is still valid.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use provision_executor::{ApplyOptions, Cancel, StateFile, StepResult};

use crate::args::{Format, Loudness, Output, Target};
use crate::dispatch::StepDispatch;
use crate::exit;
use crate::progress;
use crate::report::{lock_error, state_error};
use crate::unrecorded;

#[derive(Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    target: Target,
    /// Steps running at once [default: the number of cores, at least 4].
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,
    /// Stop everything at the first failed step.
    #[arg(long)]
    fail_fast: bool,
    /// Rerun every step, fresh or not.
    #[arg(long)]
    force: bool,
    /// Wait for another apply holding the lock instead of failing.
    #[arg(long)]
    wait: bool,
    /// Ask the repository again for a tag resolved before (tags are otherwise immutable).
    #[arg(long)]
    refresh_refs: bool,
    // `--format json`: one JSON event per line on stdout.
    #[command(flatten)]
    output: Output,
    #[command(flatten)]
    loudness: Loudness,
}

pub fn run(args: ApplyArgs) -> ExitCode {
    let ApplyArgs {
        target,
        jobs,
        fail_fast,
        force,
        wait,
        refresh_refs,
        output,
        loudness,
    } = args;
    let (json, quiet) = (output.json(), loudness.quiet());
    loudness.init_tracing();
    // First: a signal from here on is an interruption (exit 130), never the default death.
    let cancel = Cancel::new();
    let interrupted = on_interrupt(&cancel);
    let (_, plan) = match target.plan(output.format(), quiet) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let file = target.state_file();
    if let Err(code) = target.prepare_runtime(&file) {
        return code;
    }
    let lock = match take_apply_lock(&plan, &file, wait) {
        Ok(l) => l,
        Err(code) => return code,
    };
    if cancel.is_cancelled() {
        eprintln!("apply was interrupted before it changed anything");
        return ExitCode::from(exit::INTERRUPTED);
    }
    // Every write checks that the lock file is still the one held.
    let file = file.held_by(&lock);
    let mut state = match file.load() {
        Ok(s) => s,
        Err(e) => return state_error(&e),
    };
    // A killed apply's servers that it never recorded: stopped before anything runs.
    unrecorded::stop(&plan, &state);

    let sink = progress::sink(json, loudness.verbosity());

    if let Err(code) = retire_removed(&target, &plan, &file, &mut state, sink.as_ref()) {
        return code;
    }

    let defaults = ApplyOptions::default();
    let opts = ApplyOptions {
        jobs: jobs.unwrap_or(defaults.jobs),
        build_jobs: defaults.build_jobs,
        fail_fast,
        force,
    };
    let report = match provision_executor::apply(
        &plan,
        &StepDispatch::new().refresh_refs(refresh_refs),
        &file,
        &mut state,
        &opts,
        sink.as_ref(),
        &cancel,
    ) {
        Ok(r) => r,
        Err(e) => return state_error(&e),
    };
    drop(lock);
    apply_summary(&report, &file, json, quiet, &interrupted)
}

/// Take the apply lock on `file` (exit 5 naming the holder when another apply has it), then
/// stop what a killed apply left running: we hold the lock, so that apply is gone.
fn take_apply_lock(
    plan: &provision_plan::Plan,
    file: &StateFile,
    wait: bool,
) -> Result<provision_executor::ApplyLock, ExitCode> {
    let lock = provision_executor::acquire(&file.path, wait)
        .map_err(|e| lock_error(&e, "wait for it to finish, or pass --wait"))?;
    if let Some(dead) = &lock.took_over {
        eprintln!("note: took over the lock left by an apply that is gone ({dead})");
    }
    let steps_logs = PathBuf::from(plan.roots.expand("${runtime}/logs/steps"));
    for killed in provision_executor::orphans::reap(&steps_logs) {
        eprintln!("note: stopped a command left running by an earlier apply: pid {killed}");
    }
    Ok(lock)
}

/// Ctrl-C or SIGTERM cancels `cancel` (a second one exits at once); the flag says it happened.
fn on_interrupt(cancel: &Cancel) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (handler_cancel, handler_flag) = (cancel.clone(), interrupted.clone());
    let mut signals = 0;
    let _ = ctrlc::set_handler(move || {
        signals += 1;
        if signals > 1 {
            std::process::exit(i32::from(exit::INTERRUPTED));
        }
        eprintln!("stopping: waiting for running steps to stop (again to exit at once)");
        handler_flag.store(true, std::sync::atomic::Ordering::SeqCst);
        handler_cancel.cancel();
    });
    interrupted
}

/// Pools and replicas removed from the config: stop their servers, remove their handoffs.
/// Known ids come from the whole config, so `--pool` never retires the other pools.
fn retire_removed(
    target: &Target,
    plan: &provision_plan::Plan,
    file: &StateFile,
    state: &mut provision_executor::State,
    sink: &dyn provision_executor::EventSink,
) -> Result<(), ExitCode> {
    let known: std::collections::BTreeSet<String> = match &target.pool {
        None => plan.steps.iter().map(|s| s.id.clone()).collect(),
        Some(_) => {
            let all = Target {
                pool: None,
                ..target.clone()
            };
            let (_, p) = all.plan(Format::Json, true)?;
            p.steps.iter().map(|s| s.id.clone()).collect()
        }
    };
    match provision_executor::retire_removed(&known, &StepDispatch::new(), file, state, sink) {
        Ok(failures) => {
            for (step, err) in failures {
                eprintln!("warning: could not retire {step} (no longer in the config): {err}");
            }
            Ok(())
        }
        Err(e) => Err(state_error(&e)),
    }
}

/// The one-line summary, the failures, and the exit code of an apply that ran.
fn apply_summary(
    report: &provision_executor::ApplyReport,
    file: &StateFile,
    json: bool,
    quiet: bool,
    interrupted: &std::sync::atomic::AtomicBool,
) -> ExitCode {
    let ran = report.count(|r| *r == StepResult::Ran);
    let skipped = report.count(|r| matches!(r, StepResult::Fresh | StepResult::Kept));
    let failed = report.failures();
    let blocked = report.count(|r| matches!(r, StepResult::Blocked(_)));
    if !json && !quiet {
        eprintln!(
            "apply: {ran} ran, {skipped} fresh, {} failed, {blocked} blocked in {:.2}s (state: {})",
            failed.len(),
            report.duration.as_secs_f64(),
            file.path.display()
        );
    }
    if !json {
        for (step, err) in &failed {
            eprintln!("error: step {step} failed: {err}");
        }
    }
    // A signal wins over failures: the user stopped it (fail-fast is not an interruption).
    if interrupted.load(std::sync::atomic::Ordering::SeqCst) {
        eprintln!("apply was interrupted; run it again to resume");
        return ExitCode::from(exit::INTERRUPTED);
    }
    if !failed.is_empty() {
        return ExitCode::from(exit::STEP_FAILED);
    }
    ExitCode::from(exit::OK)
}
