//! `provision apply`: run the plan under the lock, skipping what is still valid.

use std::process::ExitCode;

use clap::Args;
use provision_executor::{ApplyOptions, StateFile, StepResult};

use crate::args::{Loudness, Output, Target};
use crate::dispatch::StepDispatch;
use crate::exit::Exit;
use crate::interrupt::Interrupt;
use crate::progress;
use crate::session::{Opening, Session};

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
    let interrupt = Interrupt::install(quiet, "stopping: waiting for running steps to stop");
    let cancel = interrupt.cancel.clone();
    let (_, plan) = match target.plan(output.format(), quiet) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let file = target.state_file();
    if let Err(code) = target.prepare_runtime(&file) {
        return code;
    }
    let sink = progress::sink(json, loudness.verbosity());
    let opening = Opening {
        target: &target,
        plan: &plan,
        wait,
        held_hint: "wait for it to finish, or pass --wait",
        stop_when_cancelled: Some("apply"),
        quiet,
    };
    let mut session = match Session::open_apply(&opening, file, sink.as_ref(), &cancel) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let defaults = ApplyOptions::default();
    let opts = ApplyOptions {
        jobs: jobs.unwrap_or(defaults.jobs),
        build_jobs: defaults.build_jobs,
        fail_fast,
        force,
    };
    let dispatch = StepDispatch::new()
        .refresh_refs(refresh_refs)
        .over(session.state());
    let report = match session.apply(&plan, &dispatch, &opts, sink.as_ref(), &cancel) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let file = session.file().clone();
    session.close();
    apply_summary(&report, &file, json, quiet, &interrupt)
}

/// The one-line summary, the failures, and the exit code of an apply that ran.
fn apply_summary(
    report: &provision_executor::ApplyReport,
    file: &StateFile,
    json: bool,
    quiet: bool,
    interrupt: &Interrupt,
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
    if interrupt.signalled() {
        eprintln!("apply was interrupted; run it again to resume");
        return ExitCode::from(Exit::Interrupted);
    }
    if !failed.is_empty() {
        return ExitCode::from(Exit::StepFailed);
    }
    ExitCode::from(Exit::Ok)
}
