//! `provision status`: what the state file says, checked against the world and the config.

use std::process::ExitCode;

use clap::Args;
use provision_executor::{Preview, StepStatus};
use provision_plan::StepId;

use crate::args::{Loudness, Output, Target};
use crate::dispatch::StepDispatch;
use crate::exit;
use crate::report::state_error;

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    output: Output,
    #[command(flatten)]
    loudness: Loudness,
}

pub fn run(args: StatusArgs) -> ExitCode {
    let StatusArgs {
        target,
        output,
        loudness,
    } = args;
    loudness.init_tracing();
    let json = output.json();
    let (_, plan) = match target.plan(output.format(), loudness.quiet()) {
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
