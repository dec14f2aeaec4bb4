//! `provision down [--pool ID]`: stop the replicas the state file knows (handoff removed first,
//! then SIGTERM to each verified server and its marked group members, a grace period, SIGKILL; pid file removed) and
//! record it, so the next apply starts them again. Works from the state file alone, under the
//! apply lock. Idempotent. With no state file (and no lock file) only the servers carrying this
//! runtime dir's marker are stopped (their state and pid files were deleted), and nothing is
//! created; a state file that is not a provision state is refused (exit 4) before the lock file
//! beside it is touched.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use provision_executor::StateFile;
use provision_plan::{Roots, StepId, StepKind};
use provision_steps_spawn::DownReport;

use crate::args::{parse_seconds, Loudness, Output, RuntimeDirs};
use crate::exit::Exit;
use crate::session::{exists, Session};

#[derive(Args)]
pub struct DownArgs {
    /// The pool config. Optional: down works from the state file; when given, it is
    /// validated first, like for the other commands.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Only this pool.
    #[arg(long, value_name = "ID")]
    pool: Option<String>,
    #[command(flatten)]
    dirs: RuntimeDirs,
    /// Seconds between SIGTERM and SIGKILL.
    #[arg(long, value_name = "SECS", default_value = "5.0", value_parser = parse_seconds)]
    grace: Duration,
    #[command(flatten)]
    output: Output,
    #[command(flatten)]
    loudness: Loudness,
}

/// `provision down`: the config (when given) validated first, then the replicas stopped.
pub fn run(args: DownArgs) -> ExitCode {
    args.loudness.init_tracing();
    if let Some(config) = &args.config {
        if let Err(e) = provision_plan::load(config) {
            return crate::report(&e, args.output.format());
        }
    }
    stop(
        &args.dirs.state_path(),
        &args.dirs.runtime_dir,
        args.pool.as_deref(),
        args.grace,
        args.output.json(),
        args.loudness.quiet(),
    )
}

/// Stop replicas recorded in `state_path` (only `pool`'s when given); `quiet`: only errors
/// on stderr.
fn stop(
    state_path: &Path,
    runtime_dir: &Path,
    pool: Option<&str>,
    grace: Duration,
    json: bool,
    quiet: bool,
) -> ExitCode {
    let file = StateFile::new(state_path);
    // Only this state file's servers carry the markers looked for.
    provision_steps_spawn::identity::use_state_file(state_path);
    let runtime = std::fs::canonicalize(runtime_dir)
        .or_else(|_| std::path::absolute(runtime_dir))
        .unwrap_or_else(|_| runtime_dir.to_path_buf());
    let roots = Roots {
        cache: String::new(),
        runtime: runtime.display().to_string(),
        config_dir: String::new(),
    };
    if !exists(&file.path) && !exists(&provision_executor::lock::lock_path(&file.path)) {
        // Nothing recorded, and no apply ever locked here (so none runs now): servers whose
        // state and pid files were deleted are still found by their marker. No file is created.
        let wanted = |p: &str| pool.is_none_or(|want| want == p);
        let report = provision_steps_spawn::down::stop_unrecorded(
            &provision_executor::State::default(),
            &roots,
            &wanted,
            grace,
        );
        return print_report(&file, &report, json, quiet);
    }
    if let Err(e) = file.load() {
        return crate::report::state_error(&e);
    }
    // Every write checks that the lock file is still the one held: one removed or replaced
    // (another provision may hold the state now) stops the writes, exit 5.
    let mut session = match Session::lock(
        file,
        false,
        "stop that apply or supervisor first (Ctrl-C stops a supervisor and its replicas)",
        quiet,
    ) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if let Some(p) = pool {
        let known = session.state().steps.values().any(|r| {
            StepKind::parse(&r.kind).is_some_and(StepKind::is_replica)
                && r.spec.get("pool").and_then(|v| v.as_str()) == Some(p)
        });
        if !known {
            eprintln!(
                "error: the state file {} has no replicas of pool `{p}`; nothing was changed",
                session.file().path.display()
            );
            return ExitCode::from(Exit::Invalid);
        }
    }
    let report = match session.down(pool, grace, &roots) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let file = session.file().clone();
    session.close();
    print_report(&file, &report, json, quiet)
}

/// What `down` did, on stdout (`--format json`) or stderr (only the failures when `quiet`);
/// exit 1 when a step could not be undone.
fn print_report(file: &StateFile, report: &DownReport, json: bool, quiet: bool) -> ExitCode {
    if json {
        let body = serde_json::json!({
            "state": file.path.display().to_string(),
            "stopped": report.stopped.iter().map(|s| serde_json::json!({"step": s.step, "what": s.what})).collect::<Vec<_>>(),
            "failed": report.failed.iter().map(|(s, e)| serde_json::json!({"step": s, "error": e})).collect::<Vec<_>>(),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&body).expect("serialisable")
        );
    } else {
        for s in report.stopped.iter().filter(|_| !quiet) {
            eprintln!("{}: {}", s.step, s.what);
        }
        for (s, e) in &report.failed {
            eprintln!("error: {s}: {e}");
        }
        if quiet {
            // Only the errors above.
        } else if report.stopped.is_empty() && report.failed.is_empty() {
            eprintln!("down: nothing was running");
        } else {
            let servers = report
                .stopped
                .iter()
                .filter(|s| StepId::kind_of(&s.step) == Some(StepKind::Spawn))
                .count();
            eprintln!(
                "down: {servers} {} stopped, {} failed (state: {})",
                if servers == 1 { "server" } else { "servers" },
                report.failed.len(),
                file.path.display()
            );
        }
    }
    if report.failed.is_empty() {
        ExitCode::from(Exit::Ok)
    } else {
        ExitCode::from(Exit::Unexpected)
    }
}
