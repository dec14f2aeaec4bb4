//! `provision`: get llama.cpp inference servers running from a declarative config.

mod allocator;
mod args;
mod cmd;
mod dispatch;
mod exit;
mod gpu_reading;
mod handoff_paths;
mod interrupt;
mod progress;
mod report;
mod session;
mod unrecorded;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::cmd::{apply, down, export, inspect, plan, status, supervise, validate};
// Named `crate::…` by the commands.
use crate::args::Format;
use crate::report::{report, state_error};

/// mimalloc: parsing and planning a large config is allocation-bound (a third of `plan`'s time
/// for 1,000 pools was the system allocator's malloc/free); mimalloc makes it ~15% faster. Large
/// freed blocks go back to the system at once (see `allocator`).
#[global_allocator]
static GLOBAL: allocator::Allocator = allocator::Allocator;

#[derive(Parser)]
#[command(
    name = "provision",
    version,
    about = "Get llama.cpp inference servers running on GPU machines from a declarative config",
    after_help = exit::help()
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show every step `apply` will take, with the exact commands and flags, in order; with a
    /// state file, mark each step `run` (and why) or `skip`.
    #[command(after_help = exit::help())]
    Plan(plan::PlanArgs),
    /// Make it so: run the plan, skipping what is still valid.
    #[command(after_help = exit::help())]
    Apply(apply::ApplyArgs),
    /// What the state file says, checked against the world and the config.
    #[command(after_help = exit::help())]
    Status(status::StatusArgs),
    /// Check a config and report every problem at once.
    #[command(after_help = exit::help())]
    Validate(validate::ValidateArgs),
    /// Stop the replicas the state file knows: handoff removed, SIGTERM to each server provision
    /// can prove it started, SIGKILL after the grace period, pid file removed; the next apply
    /// starts them again.
    #[command(after_help = exit::help())]
    Down(down::DownArgs),
    /// Apply, then stay in the foreground: a replica whose server exits is restarted with
    /// exponential backoff (its handoff removed while it is down); Ctrl-C or SIGTERM stops every
    /// replica.
    #[command(after_help = exit::help())]
    Supervise(supervise::SuperviseArgs),
    /// Write the pools as manifests for a cluster engine: `export kubernetes` (same config and
    /// flag normalisation as `plan`).
    #[command(subcommand)]
    Export(export::Export),
    /// Resolve a model ref, read its GGUF header and show its metadata and memory estimate.
    Inspect(inspect::InspectArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Plan(args) => plan::run(args),
        Command::Apply(args) => apply::run(args),
        Command::Status(args) => status::run(args),
        Command::Validate(args) => validate::run(args),
        Command::Down(args) => down::run(args),
        Command::Supervise(args) => supervise::run(args),
        Command::Export(what) => export::run(what),
        Command::Inspect(args) => inspect::run(args),
    }
}
