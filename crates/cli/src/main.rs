//! `provision`: get llama.cpp inference servers running from a declarative config.

mod dispatch;
mod down;
mod export;
mod handoff_paths;
mod inspect;
mod progress;
mod supervise;
mod unrecorded;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use provision_executor::{
    ApplyOptions, Cancel, LockError, Preview, StateError, StateFile, StepResult, StepStatus,
};
use provision_plan::{ConfigError, Plan, PlanOptions, Roots, StepId, ValidConfig};

use crate::dispatch::StepDispatch;
use crate::progress::Verbosity;

/// mimalloc: parsing and planning a large config is allocation-bound (a third of `plan`'s time
/// for 1,000 pools was the system allocator's malloc/free); mimalloc makes it ~15% faster.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit codes. Documented in the README and in `--help`.
mod exit {
    pub const OK: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const INVALID_CONFIG: u8 = 2;
    pub const STEP_FAILED: u8 = 3;
    pub const STATE_UNREADABLE: u8 = 4;
    pub const LOCKED: u8 = 5;
    pub const INTERRUPTED: u8 = 130;
    /// `plan --detailed-exitcode`: something would run.
    pub const CHANGES: u8 = 2;
}

const EXIT_CODES: &str = "Exit codes:
  0    success (apply: every step passed or was fresh)
  1    unexpected failure (I/O error, internal error)
  2    invalid config or command line; nothing was changed
  3    apply: a step failed (its dependents did not run; the rest finished)
  4    the state file is unreadable or from a newer provision, or its .lock is not provision's
  5    another apply holds the lock on the state file, or the lock file was removed under this one
  130  apply, or supervise during its first apply, was interrupted (Ctrl-C, SIGTERM); state was written
plan --detailed-exitcode: 0 nothing would run, 2 something would run, 1 error";

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

/// Which config, pools and directories a command works on.
#[derive(Args, Clone)]
struct Target {
    /// The pool config (YAML or JSON, told apart by content).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
    /// Only this pool.
    #[arg(long, value_name = "ID")]
    pool: Option<String>,
    /// Where sources, builds and models are cached
    /// [default: $PROVISION_CACHE_DIR, else $XDG_CACHE_HOME/provision, else ~/.cache/provision]
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Where logs, pid files, state and handoff files go.
    #[arg(long, value_name = "DIR", default_value = ".runtime")]
    runtime_dir: PathBuf,
    /// The state file [default: <runtime-dir>/state.json].
    #[arg(long, value_name = "PATH")]
    state: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn default_cache_dir() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = env("PROVISION_CACHE_DIR") {
        return dir;
    }
    if let Some(xdg) = env("XDG_CACHE_HOME") {
        return xdg.join("provision");
    }
    match env("HOME") {
        Some(home) => home.join(".cache").join("provision"),
        None => PathBuf::from(".cache/provision"),
    }
}

impl Target {
    fn roots(&self) -> Roots {
        let config_dir = self
            .config
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let config_dir =
            std::fs::canonicalize(config_dir).unwrap_or_else(|_| config_dir.to_path_buf());
        // Absolute: steps run commands in other working directories.
        let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p).display().to_string();
        Roots {
            cache: absolute(self.cache_dir.clone().unwrap_or_else(default_cache_dir)),
            runtime: absolute(self.runtime_dir.clone()),
            config_dir: config_dir.display().to_string(),
        }
    }

    /// Before an apply or a supervisor takes the lock: the state is readable (or absent), so a
    /// `--state` that is not a provision state is refused before anything is created beside
    /// it, and the runtime directory exists, 0700 when created here.
    fn prepare_runtime(&self, file: &StateFile) -> Result<(), ExitCode> {
        file.load().map_err(|e| state_error(&e))?;
        provision_executor::lock::check_lock_file(&file.path)
            .map_err(|e| lock_error(&e, &e.hint()))?;
        provision_executor::private_file::create_dir_all(&self.runtime_dir).map_err(|e| {
            eprintln!(
                "error: cannot create the runtime directory {}: {e}\n  hint: check the path and its permissions, or pass another --runtime-dir",
                self.runtime_dir.display()
            );
            ExitCode::from(exit::FAILURE)
        })
    }

    /// The state file; the servers' markers tell this state file's apart from those of others
    /// sharing the runtime dir.
    fn state_file(&self) -> StateFile {
        let path = self
            .state
            .clone()
            .unwrap_or_else(|| self.runtime_dir.join("state.json"));
        provision_steps_spawn::identity::use_state_file(&path);
        StateFile::new(path)
    }

    /// Load, validate and plan: the same code for `plan`, `apply` and `status`.
    fn plan(&self, format: Format) -> Result<(ValidConfig, Plan), ExitCode> {
        let valid = provision_plan::load(&self.config).map_err(|e| report(&e, format))?;
        if !valid.warnings.is_empty() && format == Format::Text {
            eprintln!("{}", valid.render_warnings());
        }
        let opts = PlanOptions {
            roots: self.roots(),
            pool: self.pool.clone(),
        };
        let plan = provision_plan::plan(&valid, &opts).map_err(|e| report(&e, format))?;
        let state = self.state_file().path;
        let lock = provision_executor::lock::lock_path(&state);
        if let Err(e) = handoff_paths::check(&plan, &self.config, &state, &lock) {
            eprintln!("error: {}: {e}", self.config.display());
            return Err(ExitCode::from(exit::INVALID_CONFIG));
        }
        Ok((valid, plan))
    }
}

fn report(err: &ConfigError, format: Format) -> ExitCode {
    match format {
        Format::Text => eprintln!("{err}"),
        Format::Json => {
            let mut body = serde_json::json!({"valid": false, "file": err.file, "diagnostics": err.diagnostics});
            if err.omitted > 0 {
                body["omitted"] = err.omitted.into(); // problems beyond the 100 shown
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&body).expect("serialisable")
            );
        }
    }
    ExitCode::from(exit::INVALID_CONFIG)
}

pub(crate) fn state_error(err: &StateError) -> ExitCode {
    eprintln!("error: {err}\n  hint: {}", err.hint());
    ExitCode::from(match err {
        StateError::Io {
            action: "write", ..
        } => exit::FAILURE,
        StateError::LockLost(_) => exit::LOCKED,
        _ => exit::STATE_UNREADABLE,
    })
}

/// Report a lock that could not be taken; the exit code says why: another holder or a lost
/// lock file (5), a lock file that is not provision's (4, like any state that cannot be used),
/// anything else (1). `held_hint`: what to do about another holder.
pub(crate) fn lock_error(err: &LockError, held_hint: &str) -> ExitCode {
    let hint = match err {
        LockError::Held { .. } => held_hint.to_string(),
        _ => err.hint(),
    };
    eprintln!("error: {err}\n  hint: {hint}");
    ExitCode::from(match err {
        LockError::Held { .. } | LockError::Lost { .. } => exit::LOCKED,
        LockError::NotOurs { .. } => exit::STATE_UNREADABLE,
        LockError::Io { .. } => exit::FAILURE,
    })
}

fn cmd_plan(target: Target, format: Format, detailed: bool, refresh_refs: bool) -> ExitCode {
    let error_code = |code: ExitCode| {
        if detailed {
            ExitCode::from(exit::FAILURE)
        } else {
            code
        }
    };
    let (_, mut plan) = match target.plan(format) {
        Ok(p) => p,
        Err(code) => return error_code(code),
    };
    let file = target.state_file();
    let mut would_run = true;
    // `plan` writes nothing: the digest and tag caches are read, not updated.
    provision_executor::cache_file::read_only();
    if file.path.symlink_metadata().is_ok() {
        let state = match file.load() {
            Ok(s) => s,
            Err(e) => return error_code(state_error(&e)),
        };
        let dispatch = StepDispatch::new().refresh_refs(refresh_refs);
        let changes = provision_executor::preview(&plan, &dispatch, &state, false);
        would_run = changes.iter().any(|(_, p)| matches!(p, Preview::Run(_)));
        plan.changes = Some(
            changes
                .into_iter()
                .map(|(step, p)| match p {
                    Preview::Run(reason) => provision_plan::plan::Change {
                        step,
                        action: provision_plan::plan::Action::Run,
                        reason: Some(reason.to_string()),
                    },
                    Preview::Skip { kept } => provision_plan::plan::Change {
                        step,
                        action: if kept {
                            provision_plan::plan::Action::Keep
                        } else {
                            provision_plan::plan::Action::Skip
                        },
                        reason: None,
                    },
                })
                .collect(),
        );
    }
    match format {
        Format::Json => print!("{}", plan.to_json()),
        Format::Text => print!("{}", provision_plan::render_text(&plan)),
    }
    if detailed && would_run {
        ExitCode::from(exit::CHANGES)
    } else {
        ExitCode::from(exit::OK)
    }
}

#[allow(clippy::too_many_arguments)]
fn cmd_apply(
    target: Target,
    jobs: Option<usize>,
    fail_fast: bool,
    force: bool,
    wait: bool,
    refresh_refs: bool,
    json: bool,
    verbose: u8,
    quiet: bool,
) -> ExitCode {
    init_tracing(if quiet { 0 } else { verbose });
    // First: a signal from here on is an interruption (exit 130), never the default death.
    let cancel = Cancel::new();
    let interrupted = on_interrupt(&cancel);
    let format = if json { Format::Json } else { Format::Text };
    let (_, plan) = match target.plan(format) {
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

    let verbosity = if quiet {
        Verbosity::Quiet
    } else if verbose > 0 {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    };
    let sink = progress::sink(json, verbosity);

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
            let (_, p) = all.plan(Format::Json)?;
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

fn cmd_status(target: Target, json: bool) -> ExitCode {
    let format = if json { Format::Json } else { Format::Text };
    let (_, plan) = match target.plan(format) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let file = target.state_file();
    let state = match file.load() {
        Ok(s) => s,
        Err(e) => return state_error(&e),
    };
    // `status` writes nothing: the digest and tag caches are read, not updated.
    provision_executor::cache_file::read_only();
    let changes = provision_executor::preview(&plan, &StepDispatch::new(), &state, false);
    let mut pools = Vec::new();
    for pool in &plan.pools {
        let mut replicas = Vec::new();
        for r in 0..pool.replicas {
            let spawn = state.steps.get(&StepId::spawn(&pool.id, r).to_string());
            let handoff = state.steps.get(&StepId::handoff(&pool.id, r).to_string());
            let replica_steps: Vec<&str> = [
                StepId::spawn(&pool.id, r),
                StepId::probe(&pool.id, r),
                StepId::handoff(&pool.id, r),
            ]
            .iter()
            .map(StepId::to_string)
            .filter_map(|id| {
                changes
                    .iter()
                    .find(|(s, _)| *s == id)
                    .map(|(s, _)| s.as_str())
            })
            .collect();
            let drift: Vec<String> = changes
                .iter()
                .filter(|(s, _)| replica_steps.contains(&s.as_str()))
                .filter_map(|(s, p)| match p {
                    Preview::Run(reason) => Some(format!("{s}: {reason}")),
                    Preview::Skip { .. } => None,
                })
                .collect();
            let up = handoff.is_some_and(|h| h.status == StepStatus::Passed) && drift.is_empty();
            replicas.push(serde_json::json!({
                "replica": r,
                "state": if up { "up" } else if spawn.is_none() { "not provisioned" } else { "down or out of date" },
                "pid": spawn.and_then(|s| s.outputs.get("pid")).cloned(),
                "url": spawn.and_then(|s| s.outputs.get("url")).cloned(),
                "matches_config": drift.is_empty(),
                "drift": drift,
            }));
        }
        pools.push(serde_json::json!({"pool": pool.id, "replicas": replicas}));
    }
    let pending: Vec<String> = changes
        .iter()
        .filter(|(_, p)| matches!(p, Preview::Run(_)))
        .map(|(s, _)| s.clone())
        .collect();
    if json {
        let body = serde_json::json!({"state": file.path.display().to_string(), "pools": pools, "steps_to_run": pending});
        println!(
            "{}",
            serde_json::to_string_pretty(&body).expect("serialisable")
        );
    } else {
        println!("state: {}", file.path.display());
        for pool in &pools {
            println!("pool {}", pool["pool"].as_str().unwrap_or_default());
            for r in pool["replicas"].as_array().into_iter().flatten() {
                let pid = r["pid"].as_u64().map_or("-".to_string(), |p| p.to_string());
                let url = r["url"].as_str().unwrap_or("-");
                println!(
                    "  r{}  {}  pid {pid}  {url}",
                    r["replica"],
                    r["state"].as_str().unwrap_or_default()
                );
                for d in r["drift"].as_array().into_iter().flatten() {
                    println!("      {}", d.as_str().unwrap_or_default());
                }
            }
        }
        if pending.is_empty() {
            println!("everything matches the config");
        } else {
            println!("{} steps would run on apply", pending.len());
        }
    }
    ExitCode::from(exit::OK)
}

fn cmd_validate(config: PathBuf, format: Format) -> anyhow::Result<ExitCode> {
    let valid = match provision_plan::load(&config) {
        Ok(v) => v,
        Err(e) => return Ok(report(&e, format)),
    };
    if let Some(clash) = handoff_clash(&valid, config) {
        let err = provision_plan::ConfigError::new(
            valid.file.clone(),
            None,
            vec![provision_plan::Diagnostic::error("", clash)],
        );
        return Ok(report(&err, format));
    }
    let replicas: u32 = valid.pools.iter().map(|p| p.pool.replicas).sum();
    match format {
        Format::Json => {
            let body = serde_json::json!({"valid": true, "file": valid.file, "diagnostics": valid.warnings});
            println!("{}", serde_json::to_string_pretty(&body)?);
        }
        Format::Text => {
            if !valid.warnings.is_empty() {
                eprintln!("{}", valid.render_warnings());
            }
            println!(
                "{}: valid ({} {}, {replicas} {})",
                valid.file,
                valid.pools.len(),
                if valid.pools.len() == 1 {
                    "pool"
                } else {
                    "pools"
                },
                if replicas == 1 { "replica" } else { "replicas" }
            );
        }
    }
    Ok(ExitCode::from(exit::OK))
}

/// A `handoff_path` that names the config, or (with the default `--runtime-dir`,
/// `--state` and cache) the state, its lock, a server's own files or the cache: what `plan`
/// and `apply` refuse, said by `validate` too. A plan that cannot be made is `plan`'s to report.
fn handoff_clash(valid: &ValidConfig, config: PathBuf) -> Option<String> {
    let target = Target {
        config,
        pool: None,
        cache_dir: None,
        runtime_dir: PathBuf::from(".runtime"),
        state: None,
    };
    let opts = PlanOptions {
        roots: target.roots(),
        pool: None,
    };
    let plan = provision_plan::plan(valid, &opts).ok()?;
    let state = target.state_file().path;
    let lock = provision_executor::lock::lock_path(&state);
    handoff_paths::check(&plan, &target.config, &state, &lock).err()
}

/// Diagnostics on stderr through `tracing`: warnings by default, `-v` info, `-vv` debug;
/// `RUST_LOG` wins when set.
fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("provision={level},provision_executor={level}"))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .try_init();
}

/// A duration from seconds given on the command line: a finite, non-negative number (`inf`,
/// `NaN`, `-1` or one too large are refused with exit 2, not taken as 0).
fn parse_seconds(s: &str) -> Result<std::time::Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    std::time::Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("`{s}` is not a duration: give a finite number of seconds, 0 or more"))
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
