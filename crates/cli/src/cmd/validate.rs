//! `provision validate`: check a config and report every problem at once.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use provision_plan::{PlanOptions, ValidConfig};

use crate::args::{CacheDir, Format, Loudness, Output, RuntimeDirs, Target};
use crate::exit::Exit;
use crate::handoff_paths;
use crate::report::report;

#[derive(Args)]
pub struct ValidateArgs {
    /// The pool config (YAML or JSON, told apart by content).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
    // The handoff files are checked against these, as `plan` and `apply` do.
    #[command(flatten)]
    cache: CacheDir,
    #[command(flatten)]
    dirs: RuntimeDirs,
    #[command(flatten)]
    output: Output,
    #[command(flatten)]
    loudness: Loudness,
}

pub fn run(args: ValidateArgs) -> ExitCode {
    args.loudness.init_tracing();
    match validate(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(Exit::Unexpected)
        }
    }
}

fn validate(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let ValidateArgs {
        config,
        cache,
        dirs,
        output,
        loudness,
    } = args;
    let format = output.format();
    let valid = match provision_plan::load(&config) {
        Ok(v) => v,
        Err(e) => return Ok(report(&e, format)),
    };
    let target = Target {
        config,
        pool: None,
        cache,
        dirs,
    };
    if let Some(clash) = handoff_clash(&valid, &target) {
        let err = provision_plan::ConfigError::new(
            valid.file.clone(),
            None,
            vec![provision_plan::Diagnostic::error("", clash)],
        );
        return Ok(report(&err, format));
    }
    let replicas: u32 = valid.pools.iter().map(|p| p.pool.replicas).sum();
    let ledger = device_ledger(&valid);
    match format {
        Format::Json => {
            let devices: Vec<serde_json::Value> = ledger
                .iter()
                .map(|(d, pools)| {
                    let pools: Vec<serde_json::Value> = pools
                        .iter()
                        .map(|(p, r)| serde_json::json!({"pool": p, "replicas": r}))
                        .collect();
                    serde_json::json!({"device": d, "pools": pools})
                })
                .collect();
            let body = serde_json::json!({"valid": true, "file": valid.file, "diagnostics": valid.warnings, "devices": devices});
            println!("{}", serde_json::to_string_pretty(&body)?);
        }
        Format::Text => {
            if !valid.warnings.is_empty() && !loudness.quiet() {
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
            for (d, pools) in &ledger {
                let pools: Vec<String> = pools
                    .iter()
                    .map(|(p, r)| format!("`{p}` ({r} × one server)"))
                    .collect();
                println!("GPU {d}: {} — placed in this order", pools.join(", "));
            }
        }
    }
    Ok(ExitCode::from(Exit::Ok))
}

/// The device ledger as the config gives it, before anything is measured: each GPU the GPU
/// pools name, with the pools placed on it in placement (config) order and their replicas.
fn device_ledger(valid: &ValidConfig) -> std::collections::BTreeMap<u32, Vec<(String, u32)>> {
    let mut ledger: std::collections::BTreeMap<u32, Vec<(String, u32)>> = Default::default();
    for input in &valid.pools {
        let pool = &input.pool;
        let external = pool.provisioning.mode == provision_plan::config::ProvisioningMode::External;
        if pool.backend != provision_plan::Backend::Cuda || external {
            continue;
        }
        for d in &pool.devices {
            ledger
                .entry(*d)
                .or_default()
                .push((pool.id.clone(), pool.replicas));
        }
    }
    ledger
}

/// A `handoff_path` that names the config, or (with the `--runtime-dir`, `--state` and
/// `--cache-dir` given, or their defaults) the state, its lock, a server's own files or the
/// cache: what `plan` and `apply` refuse, said by `validate` too. A plan that cannot be made
/// is `plan`'s to report.
fn handoff_clash(valid: &ValidConfig, target: &Target) -> Option<String> {
    let opts = PlanOptions {
        roots: target.roots(),
        pool: None,
    };
    let plan = provision_plan::plan(valid, &opts).ok()?;
    let state = target.state_file().path;
    let lock = provision_executor::lock::lock_path(&state);
    handoff_paths::check(&plan, &target.config, &state, &lock).err()
}
