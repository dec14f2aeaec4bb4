//! `provision`: get llama.cpp inference servers running from a declarative config.

mod args;
mod cmd;
mod dispatch;
mod exit;
mod handoff_paths;
mod progress;
mod report;
mod unrecorded;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::args::{default_cache_dir, parse_seconds, Format, Target};
use crate::cmd::{apply::cmd_apply, down, export, inspect, plan::cmd_plan, status::cmd_status};
use crate::cmd::{supervise, validate::cmd_validate};
use crate::dispatch::StepDispatch;
use crate::exit::EXIT_CODES;
use crate::progress::Verbosity;
use crate::report::{lock_error, report, state_error};

/// mimalloc: parsing and planning a large config is allocation-bound (a third of `plan`'s time
/// for 1,000 pools was the system allocator's malloc/free); mimalloc makes it ~15% faster.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "provision",
    version,
    about = "Get llama.cpp inference servers running on GPU machines from a declarative config",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show every step `apply` will take, with the exact commands and flags, in order; with a
    /// state file, mark each step `run` (and why) or `skip`.
    #[command(after_help = EXIT_CODES)]
    Plan {
        #[command(flatten)]
        target: Target,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Exit 0 when nothing would run, 2 when something would, 1 on error.
        #[arg(long)]
        detailed_exitcode: bool,
        /// Ask the repository again for a tag resolved before (tags are otherwise immutable).
        #[arg(long)]
        refresh_refs: bool,
    },
    /// Make it so: run the plan, skipping what is still valid.
    #[command(after_help = EXIT_CODES)]
    Apply {
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
        /// One JSON event per line on stdout.
        #[arg(long)]
        json: bool,
        /// Show why each step runs, and skipped steps; `-vv` also traces decisions
        /// (fingerprints, facts). `RUST_LOG` overrides.
        #[arg(short, long, action = clap::ArgAction::Count)]
        verbose: u8,
        /// Only errors.
        #[arg(short, long, conflicts_with = "verbose")]
        quiet: bool,
    },
    /// What the state file says, checked against the world and the config.
    #[command(after_help = EXIT_CODES)]
    Status {
        #[command(flatten)]
        target: Target,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Check a config and report every problem at once.
    #[command(after_help = EXIT_CODES)]
    Validate {
        /// The pool config (YAML or JSON, told apart by content).
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Stop the replicas the state file knows: handoff removed, SIGTERM to each server provision
    /// can prove it started, SIGKILL after the grace period, pid file removed; the next apply
    /// starts them again.
    #[command(after_help = EXIT_CODES)]
    Down {
        /// The pool config. Optional: down works from the state file; when given, it is
        /// validated first, like for the other commands.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: Option<PathBuf>,
        /// Only this pool.
        #[arg(long, value_name = "ID")]
        pool: Option<String>,
        /// Where logs, pid files, state and handoff files go.
        #[arg(long, value_name = "DIR", default_value = ".runtime")]
        runtime_dir: PathBuf,
        /// The state file [default: <runtime-dir>/state.json].
        #[arg(long, value_name = "PATH")]
        state: Option<PathBuf>,
        /// Seconds between SIGTERM and SIGKILL.
        #[arg(long, value_name = "SECS", default_value = "5.0", value_parser = parse_seconds)]
        grace: std::time::Duration,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Apply, then stay in the foreground: a replica whose server exits is restarted with
    /// exponential backoff (its handoff removed while it is down); Ctrl-C or SIGTERM stops every
    /// replica.
    #[command(after_help = EXIT_CODES)]
    Supervise {
        #[command(flatten)]
        target: Target,
        /// Seconds before the first restart; doubled after each failure in a row.
        #[arg(long, value_name = "SECS", default_value = "1.0", value_parser = parse_seconds)]
        backoff_base: std::time::Duration,
        /// The longest pause between two restarts, in seconds.
        #[arg(long, value_name = "SECS", default_value = "60.0", value_parser = parse_seconds)]
        backoff_cap: std::time::Duration,
        /// A replica healthy this many seconds has its failures forgotten.
        #[arg(long, value_name = "SECS", default_value = "60.0", value_parser = parse_seconds)]
        reset_after: std::time::Duration,
        /// Seconds between SIGTERM and SIGKILL when stopping.
        #[arg(long, value_name = "SECS", default_value = "5.0", value_parser = parse_seconds)]
        grace: std::time::Duration,
        /// One JSON event per line on stdout.
        #[arg(long)]
        json: bool,
        /// Show why each step runs, and skipped steps.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Write the pools as manifests for a cluster engine: `export kubernetes` (same config and
    /// flag normalisation as `plan`).
    #[command(subcommand)]
    Export(export::Export),
    /// Resolve a model ref, read its GGUF header and show its metadata and memory estimate.
    Inspect {
        /// A path, `file:PATH`, `hf:ORG/REPO/FILE.gguf[@REV]`, `https://…` or a cached name.
        model_ref: String,
        /// Context size for the estimate [default: the model's training context].
        #[arg(long, value_name = "N")]
        ctx: Option<u64>,
        /// `--parallel` slots (they share the context in llama-server).
        #[arg(long, value_name = "N", default_value_t = 1)]
        parallel: u64,
        /// JSON output.
        #[arg(long)]
        json: bool,
        /// Where downloaded models are cached [default: as for `plan`].
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Plan {
            target,
            format,
            detailed_exitcode,
            refresh_refs,
        } => cmd_plan(target, format, detailed_exitcode, refresh_refs),
        Command::Apply {
            target,
            jobs,
            fail_fast,
            force,
            wait,
            refresh_refs,
            json,
            verbose,
            quiet,
        } => cmd_apply(
            target,
            jobs,
            fail_fast,
            force,
            wait,
            refresh_refs,
            json,
            verbose,
            quiet,
        ),
        Command::Status { target, json } => cmd_status(target, json),
        Command::Export(what) => export::run(what),
        Command::Inspect {
            model_ref,
            ctx,
            parallel,
            json,
            cache_dir,
        } => inspect::run(
            &model_ref,
            ctx,
            parallel,
            json,
            &cache_dir.unwrap_or_else(default_cache_dir),
        ),
        Command::Down {
            config,
            pool,
            runtime_dir,
            state,
            grace,
            json,
        } => {
            if let Some(config) = &config {
                if let Err(e) = provision_plan::load(config) {
                    return report(&e, if json { Format::Json } else { Format::Text });
                }
            }
            down::run(
                &state.unwrap_or_else(|| runtime_dir.join("state.json")),
                &runtime_dir,
                pool.as_deref(),
                grace,
                json,
            )
        }
        Command::Supervise {
            target,
            backoff_base,
            backoff_cap,
            reset_after,
            grace,
            json,
            verbose,
        } => {
            // First: a signal from here on stops supervise cleanly (exit 130 or 0), never kills it.
            let cancel = supervise::on_interrupt();
            let format = if json { Format::Json } else { Format::Text };
            match target
                .plan(format)
                .and_then(|p| target.prepare_runtime(&target.state_file()).map(|()| p))
            {
                Err(code) => code,
                Ok((_, plan)) => supervise::run(
                    &plan,
                    &StepDispatch::new(),
                    &target.state_file(),
                    &provision_steps_spawn::SuperviseOptions {
                        backoff_base,
                        backoff_cap,
                        reset_after,
                        grace,
                        ..Default::default()
                    },
                    json,
                    if verbose {
                        Verbosity::Verbose
                    } else {
                        Verbosity::Normal
                    },
                    &cancel,
                ),
            }
        }
        Command::Validate { config, format } => match cmd_validate(config, format) {
            Ok(code) => code,
            Err(err) => {
                eprintln!("error: {err:#}");
                ExitCode::from(exit::FAILURE)
            }
        },
    }
}
