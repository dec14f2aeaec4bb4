//! `provision`: get llama.cpp inference servers running from a declarative config.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use provision_plan::{ConfigError, PlanOptions, Roots};

/// Exit codes. Documented in the README and in `--help`.
mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// An unexpected failure (I/O, a bug).
    pub const FAILURE: u8 = 1;
    /// The config (or a command-line argument) is invalid; nothing was changed.
    pub const INVALID_CONFIG: u8 = 2;
}

const EXIT_CODES: &str = "Exit codes:
  0  success
  1  unexpected failure (I/O error, internal error)
  2  invalid config or command line; nothing was changed";

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
    /// Show every step `apply` will take, with the exact commands and flags, in order.
    #[command(after_help = EXIT_CODES)]
    Plan {
        /// The pool config (YAML or JSON, told apart by content).
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
        /// Plan only this pool.
        #[arg(long, value_name = "ID")]
        pool: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        #[command(flatten)]
        roots: RootArgs,
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
}

#[derive(clap::Args)]
struct RootArgs {
    /// Where sources, builds and models are cached
    /// [default: $PROVISION_CACHE_DIR, else $XDG_CACHE_HOME/provision, else ~/.cache/provision]
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Where logs, pid files, state and handoff files go.
    #[arg(long, value_name = "DIR", default_value = ".runtime")]
    runtime_dir: PathBuf,
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

fn roots(config: &Path, args: &RootArgs) -> Roots {
    let config_dir = config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let config_dir = std::fs::canonicalize(config_dir).unwrap_or_else(|_| config_dir.to_path_buf());
    Roots {
        cache: args
            .cache_dir
            .clone()
            .unwrap_or_else(default_cache_dir)
            .display()
            .to_string(),
        runtime: args.runtime_dir.display().to_string(),
        config_dir: config_dir.display().to_string(),
    }
}

fn report(err: &ConfigError, format: Format) -> ExitCode {
    match format {
        Format::Text => eprintln!("{err}"),
        Format::Json => {
            let body = serde_json::json!({"valid": false, "file": err.file, "diagnostics": err.diagnostics});
            println!(
                "{}",
                serde_json::to_string_pretty(&body).expect("serialisable")
            );
        }
    }
    ExitCode::from(exit::INVALID_CONFIG)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Plan {
            config,
            pool,
            format,
            roots: root_args,
        } => {
            let valid = match provision_plan::load(&config) {
                Ok(v) => v,
                Err(e) => return Ok(report(&e, format)),
            };
            if !valid.warnings.is_empty() {
                eprintln!("{}", valid.render_warnings());
            }
            let opts = PlanOptions {
                roots: roots(&config, &root_args),
                pool,
            };
            let plan = match provision_plan::plan(&valid, &opts) {
                Ok(p) => p,
                Err(e) => return Ok(report(&e, format)),
            };
            match format {
                Format::Json => print!("{}", plan.to_json()),
                Format::Text => print!("{}", provision_plan::render_text(&plan)),
            }
            Ok(ExitCode::from(exit::OK))
        }
        Command::Validate { config, format } => {
            let valid = match provision_plan::load(&config) {
                Ok(v) => v,
                Err(e) => return Ok(report(&e, format)),
            };
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
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(exit::FAILURE)
        }
    }
}
