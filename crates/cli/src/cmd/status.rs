//! `provision status`: what the state file says, checked against the world and the config.

use std::process::ExitCode;

use clap::Args;
use provision_executor::{Preview, StepStatus};
use provision_plan::outputs::{KindOutputs, ProbeOutputs};
use provision_plan::{Plan, StepId};
use provision_steps_spawn::{PoolStatus, ReplicaState, ReplicaStatus, ServerHandle, StatusReport};

use crate::args::{Loudness, Output, Target};
use crate::dispatch::StepDispatch;
use crate::exit::Exit;
use crate::session::Session;

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
    let (_, plan) = match target.plan(output.format(), loudness.quiet()) {
        Ok(p) => p,
        Err(code) => return code,
    };
    // `status` takes no lock and writes nothing.
    let session = match Session::read_only(target.state_file()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let report = status_report(&session, &plan);
    if output.json() {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serialisable")
        );
    } else {
        print_text(&report);
    }
    ExitCode::from(Exit::Ok)
}

/// The state of each of the plan's replicas, and the steps an apply would run.
fn status_report(session: &Session, plan: &Plan) -> StatusReport {
    let state = session.state();
    let changes = provision_executor::preview(plan, &StepDispatch::new().over(state), state, false);
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
            let server = spawn
                .and_then(|s| s.outputs.as_ref())
                .and_then(ServerHandle::of_outputs);
            replicas.push(ReplicaStatus {
                state: if up {
                    ReplicaState::Up
                } else if spawn.is_none() {
                    ReplicaState::NotProvisioned
                } else {
                    ReplicaState::DownOrOutOfDate
                },
                pid: server.as_ref().and_then(ServerHandle::pid),
                url: server.as_ref().map(|s| s.url().to_string()),
                replica: r,
                matches_config: drift.is_empty(),
                drift,
                memory: state
                    .steps
                    .get(&StepId::probe(&pool.id, r).to_string())
                    .and_then(|p| p.outputs.as_ref())
                    .and_then(ProbeOutputs::of)
                    .map(|p| p.memory.clone())
                    .unwrap_or_default(),
            });
        }
        pools.push(PoolStatus {
            pool: pool.id.clone(),
            replicas,
        });
    }
    let steps_to_run = changes
        .iter()
        .filter(|(_, p)| matches!(p, Preview::Run(_)))
        .map(|(s, _)| s.clone())
        .collect();
    StatusReport {
        pools,
        state: session.file().path.display().to_string(),
        steps_to_run,
    }
}

/// The report for people, on stdout.
fn print_text(report: &StatusReport) {
    println!("state: {}", report.state);
    for pool in &report.pools {
        println!("pool {}", pool.pool);
        for r in &pool.replicas {
            let pid = r.pid.map_or("-".to_string(), |p| p.to_string());
            let url = r.url.as_deref().unwrap_or("-");
            println!("  r{}  {}  pid {pid}  {url}", r.replica, r.state.as_str());
            for d in &r.drift {
                println!("      {d}");
            }
        }
    }
    if report.steps_to_run.is_empty() {
        println!("everything matches the config");
    } else {
        println!("{} steps would run on apply", report.steps_to_run.len());
    }
}
