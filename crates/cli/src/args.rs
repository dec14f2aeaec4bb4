//! The options shared by several commands, and their parsers.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use provision_executor::StateFile;
use provision_plan::{Plan, PlanOptions, Roots, ValidConfig};

use crate::exit::Exit;
use crate::handoff_paths;
use crate::progress::Verbosity;
use crate::report::{lock_error, report, state_error};

/// Which config, pools and directories a command works on.
#[derive(Args, Clone)]
pub(crate) struct Target {
    /// The pool config (YAML or JSON, told apart by content).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub(crate) config: PathBuf,
    /// Only this pool.
    #[arg(long, value_name = "ID")]
    pub(crate) pool: Option<String>,
    #[command(flatten)]
    pub(crate) cache: CacheDir,
    #[command(flatten)]
    pub(crate) dirs: RuntimeDirs,
}

/// `--cache-dir`: every command that reads or writes the cache.
#[derive(Args, Clone, Default)]
pub(crate) struct CacheDir {
    /// Where sources, builds and models are cached
    /// [default: $PROVISION_CACHE_DIR, else $XDG_CACHE_HOME/provision, else ~/.cache/provision]
    #[arg(long, value_name = "DIR")]
    pub(crate) cache_dir: Option<PathBuf>,
}

impl CacheDir {
    /// The cache root: `--cache-dir`, else the default.
    pub(crate) fn dir(&self) -> PathBuf {
        self.cache_dir.clone().unwrap_or_else(default_cache_dir)
    }
}

/// `--runtime-dir` and `--state`: every command that reads or writes the state or the
/// servers' files.
#[derive(Args, Clone)]
pub(crate) struct RuntimeDirs {
    /// Where logs, pid files, state and handoff files go.
    #[arg(long, value_name = "DIR", default_value = ".runtime")]
    pub(crate) runtime_dir: PathBuf,
    /// The state file [default: <runtime-dir>/state.json].
    #[arg(long, value_name = "PATH")]
    pub(crate) state: Option<PathBuf>,
}

impl RuntimeDirs {
    /// The state file: `--state`, else `<runtime-dir>/state.json`.
    pub(crate) fn state_path(&self) -> PathBuf {
        self.state
            .clone()
            .unwrap_or_else(|| self.runtime_dir.join("state.json"))
    }
}

/// `--format text|json` and its older spelling `--json`: every command that prints a result.
#[derive(Args, Clone, Copy)]
pub(crate) struct Output {
    /// Output format: text for people, JSON for programs (`--json` is accepted as the older
    /// spelling of `--format json`).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// The older spelling of `--format json`.
    #[arg(long, hide = true, conflicts_with = "format")]
    json: bool,
}

impl Output {
    pub(crate) fn format(&self) -> Format {
        if self.json {
            Format::Json
        } else {
            self.format
        }
    }

    pub(crate) fn json(&self) -> bool {
        self.format() == Format::Json
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Text,
    Json,
}

/// `-v`/`-vv`/`-q`: the same on every command. They change only what goes to stderr, never
/// stdout.
#[derive(Args, Clone, Copy)]
pub(crate) struct Loudness {
    /// More on stderr: why each step runs and the skipped ones (apply, supervise), and
    /// diagnostics; `-vv` also traces decisions (fingerprints, facts). `RUST_LOG` overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors on stderr: no warnings, notes, progress or summary.
    #[arg(short, long, conflicts_with = "verbose")]
    quiet: bool,
}

impl Loudness {
    pub(crate) fn quiet(&self) -> bool {
        self.quiet
    }

    /// How much of apply's and supervise's progress to show.
    pub(crate) fn verbosity(&self) -> Verbosity {
        if self.quiet {
            Verbosity::Quiet
        } else if self.verbose > 0 {
            Verbosity::Verbose
        } else {
            Verbosity::Normal
        }
    }

    /// Diagnostics on stderr through `tracing`: warnings by default, `-v` info, `-vv` debug,
    /// `-q` errors only; `RUST_LOG` wins when set.
    pub(crate) fn init_tracing(&self) {
        let level = match (self.quiet, self.verbose) {
            (true, _) => "error",
            (false, 0) => "warn",
            (false, 1) => "info",
            _ => "debug",
        };
        let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!(
                "provision={level},provision_executor={level}"
            ))
        });
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_timer(tracing_subscriber::fmt::time::uptime())
            .try_init();
    }
}

pub(crate) fn default_cache_dir() -> PathBuf {
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
    pub(crate) fn roots(&self) -> Roots {
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
            cache: absolute(self.cache.dir()),
            runtime: absolute(self.dirs.runtime_dir.clone()),
            config_dir: config_dir.display().to_string(),
        }
    }

    /// Before an apply or a supervisor takes the lock: the state is readable (or absent), so a
    /// `--state` that is not a provision state is refused before anything is created beside
    /// it, and the runtime directory exists, 0700 when created here.
    pub(crate) fn prepare_runtime(&self, file: &StateFile) -> Result<(), ExitCode> {
        file.load().map_err(|e| state_error(&e))?;
        provision_executor::lock::check_lock_file(&file.path)
            .map_err(|e| lock_error(&e, &e.hint()))?;
        provision_executor::private_file::create_dir_all(&self.dirs.runtime_dir).map_err(|e| {
            eprintln!(
                "error: cannot create the runtime directory {}: {e}\n  hint: check the path and its permissions, or pass another --runtime-dir",
                self.dirs.runtime_dir.display()
            );
            ExitCode::from(Exit::Unexpected)
        })
    }

    /// The state file; the servers' markers tell this state file's apart from those of others
    /// sharing the runtime dir.
    pub(crate) fn state_file(&self) -> StateFile {
        let path = self.dirs.state_path();
        provision_steps_spawn::identity::use_state_file(&path);
        StateFile::new(path)
    }

    /// Load, validate and plan: the same code for `plan`, `apply` and `status`.
    /// `quiet`: without the config's warnings.
    pub(crate) fn plan(
        &self,
        format: Format,
        quiet: bool,
    ) -> Result<(ValidConfig, Plan), ExitCode> {
        let valid = provision_plan::load(&self.config).map_err(|e| report(&e, format))?;
        if !valid.warnings.is_empty() && format == Format::Text && !quiet {
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
            return Err(ExitCode::from(Exit::Invalid));
        }
        Ok((valid, plan))
    }
}

/// A duration from seconds given on the command line: a finite, non-negative number (`inf`,
/// `NaN`, `-1` or one too large are refused with exit 2, not taken as 0).
pub(crate) fn parse_seconds(s: &str) -> Result<std::time::Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    std::time::Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("`{s}` is not a duration: give a finite number of seconds, 0 or more"))
}
