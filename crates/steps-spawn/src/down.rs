//! Stopping replicas: `provision down` (every replica in the state file, or one pool's), and
//! retiring the steps of a replica that left the config. The handoff goes first (nobody is sent
//! to a server that is stopping), then the server's process group (SIGTERM, grace, SIGKILL),
//! then its pid file; the state file then says the steps must run again.

use std::path::Path;
use std::time::Duration;

use provision_executor::state::now_rfc3339;
use provision_executor::{State, StateError, StateFile, StepError, StepRecord, StepStatus};
use provision_plan::outputs::HandoffOutputs;
use provision_plan::step_traits::retire_rank_of;
use provision_plan::{ReplicaId, Roots, StepId, StepKind, StepOutputs};
use serde_json::Value;

use crate::handoff_owner::{
    remove_handoffs_of, remove_if_ours, remove_if_unchanged, Owner, Removal,
};
use crate::identity;
use crate::pid_file;
use crate::process::{self, ServerProcess, Stopped};
use crate::server_handle::ServerHandle;

/// What `down` did for one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    pub step: String,
    pub what: String,
}

/// What `down` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DownReport {
    pub stopped: Vec<Stop>,
    /// Steps that could not be undone (kept in the state file, to retry).
    pub failed: Vec<(String, String)>,
}

fn pool_of(record: &StepRecord) -> Option<&str> {
    record.spec.get("pool").and_then(Value::as_str)
}

/// Stop the server recorded in a spawn step's outputs and remove its pid file.
pub fn stop_server(outputs: &StepOutputs, grace: Duration) -> Result<Stopped, String> {
    let server = ServerHandle::of_outputs(outputs);
    let result = match &server {
        Some(server) => server.stop(grace)?,
        None => Stopped::NotRunning("no process recorded".into()),
    };
    if let Some(local) = server.as_ref().and_then(ServerHandle::local) {
        // The recorded pid file, while it still holds the recorded pid (see [`pid_file`]).
        pid_file::remove_if_of(&local.pid_file, Some(local.process.pid));
    }
    Ok(result)
}

/// A spawn step with no recorded process (an apply killed between start and record): the
/// server its pid file names, when that process writes to the replica's log. `Err`: a warning
/// (a pid file naming pid 0 or 1 is ignored).
fn unrecorded(record: &StepRecord, roots: Option<&Roots>) -> Result<Option<ServerProcess>, String> {
    let Some(roots) = roots else {
        return Ok(None);
    };
    let field = |k: &str| {
        record
            .spec
            .get(k)
            .and_then(Value::as_str)
            .map(|s| roots.expand(s))
    };
    let replica = match (
        pool_of(record),
        record.spec.get("replica").and_then(Value::as_u64),
    ) {
        (Some(pool), Some(n)) => match u32::try_from(n) {
            Ok(n) => ReplicaId::new(pool, n).to_string(),
            Err(_) => return Ok(None),
        },
        _ => return Ok(None),
    };
    let marker = identity::instance_id(&roots.runtime, &replica);
    match (field("pid_file"), field("log")) {
        (Some(pid_file), Some(log)) => {
            process::find_by_pid_file(Path::new(&pid_file), Path::new(&log), &marker)
        }
        _ => Ok(None),
    }
}

/// Servers of this runtime dir (of the pools `pools` accepts) that no record names: found by
/// the marker in their environment, after their state and pid files were lost. `skip`: pids
/// the records already covered.
fn stop_by_marker(
    roots: &Roots,
    pools: &dyn Fn(&str) -> bool,
    grace: Duration,
    skip: &[u32],
    report: &mut DownReport,
) {
    for (pid, marker) in identity::find_by_marker(&roots.runtime, None) {
        // A marker provision did not write (`<runtime id>/<pool>/r<N>`) names no server of its.
        let Some(replica) = ReplicaId::parse(identity::replica_of(&marker)) else {
            continue;
        };
        if skip.contains(&pid) || !pools(&replica.pool) {
            continue;
        }
        let step = StepId::Spawn(replica.clone()).to_string();
        let Some(server) = ServerProcess::of_pid(pid) else {
            continue;
        };
        match process::stop(&server, grace) {
            // Already gone: a member swept with its leader a moment ago.
            Ok(Stopped::NotRunning(_)) => {}
            Ok(how) => {
                report.stopped.push(Stop {
                    step,
                    what: format!(
                        "unrecorded pid {pid} (found by its {} marker): {how}",
                        identity::MARKER_VAR
                    ),
                });
                remove_default_handoffs(roots, &replica, pid, report);
            }
            Err(e) => report.failed.push((step, e)),
        }
    }
}

/// The handoffs under `<runtime>/engines/` that name the unrecorded server `pid` of `replica`
/// (`pool/rN`), which was just stopped: removed, so that none names its URL any more. A
/// `handoff_path` elsewhere is not known without the state file, and is left.
fn remove_default_handoffs(roots: &Roots, replica: &ReplicaId, pid: u32, report: &mut DownReport) {
    let owner = Owner {
        runtime_dir: Some(roots.runtime.clone()),
        runtime_id: Some(identity::runtime_id(&roots.runtime)),
        pool: replica.pool.clone(),
        replica: replica.replica,
    };
    let dir = Path::new(&roots.runtime).join("engines");
    let step = StepId::Handoff(replica.clone()).to_string();
    for removed in remove_handoffs_of(&dir, &owner, pid) {
        match removed {
            Ok(path) => report.stopped.push(Stop {
                step: step.clone(),
                what: format!("removed {path} (it named the stopped pid {pid})"),
            }),
            Err(e) => report.failed.push((step.clone(), e)),
        }
    }
}

/// Stop the servers of this runtime dir that carry its marker, belong to a pool `pools`
/// accepts, and that no record of `state` names (a server a killed apply started before it
/// could record it, or whose state file is gone). Only marker-proven processes are touched;
/// a server a record names (same pid and start time) is left to the steps that own it.
/// Creates and writes no file.
pub fn stop_unrecorded(
    state: &State,
    roots: &Roots,
    pools: &dyn Fn(&str) -> bool,
    grace: Duration,
) -> DownReport {
    let recorded: Vec<u32> = state
        .steps
        .values()
        .filter_map(|r| r.outputs.as_ref().and_then(ServerHandle::of_outputs))
        .filter_map(|h| h.process().cloned())
        .filter(|s| ServerProcess::of_pid(s.pid).is_some_and(|now| now.start_time == s.start_time))
        .map(|s| s.pid)
        .collect();
    let mut report = DownReport::default();
    stop_by_marker(roots, pools, grace, &recorded, &mut report);
    report
}

/// Remove the handoff file a handoff step recorded, only while it is still what provision
/// wrote: its recorded digest matches (or, for a record from before digests were recorded, it
/// is this replica's provision handoff). Only the resolved path in the outputs is used: a
/// planned path is never expanded again, and a step that recorded no path removes nothing.
pub fn take_handoff_away(record: &StepRecord) -> Result<Option<String>, String> {
    let Some(handoff) = record
        .outputs
        .as_ref()
        .and_then(|o| o.get::<HandoffOutputs>())
    else {
        return Ok(None);
    };
    let p = &handoff.path;
    let path = Path::new(p);
    let removal = match &handoff.sha256 {
        Some(digest) => remove_if_unchanged(path, digest)?,
        // Recorded before digests were: the marker, pool and replica decide.
        None => remove_if_ours(
            path,
            &Owner {
                runtime_dir: None,
                runtime_id: None,
                pool: pool_of(record).unwrap_or_default().to_string(),
                replica: record
                    .spec
                    .get("replica")
                    .and_then(Value::as_u64)
                    .and_then(|r| u32::try_from(r).ok())
                    .unwrap_or_default(),
            },
        )?,
    };
    Ok(Some(match removal {
        Removal::Removed => format!("removed {p}"),
        Removal::Absent => format!("no handoff file at {p}"),
        Removal::Kept(why) => format!("left {p}: {why}"),
    }))
}

/// Undo what one recorded step left in the world: a handoff file is removed, a server stopped.
/// Returns what was done (`None`: nothing to undo for this kind).
/// `roots` expands the planned paths of a step that recorded nothing.
pub fn undo(
    record: &StepRecord,
    grace: Duration,
    roots: Option<&Roots>,
) -> Result<Option<String>, String> {
    match StepKind::parse(&record.kind) {
        Some(StepKind::Handoff) => take_handoff_away(record),
        Some(StepKind::Spawn) if record.outputs.is_none() => match unrecorded(record, roots) {
            Ok(Some(server)) => {
                let s = process::stop(&server, grace)?;
                if let Some(p) = record.spec.get("pid_file").and_then(Value::as_str) {
                    let p = roots.map_or(p.to_string(), |r| r.expand(p));
                    pid_file::remove_if_of(Path::new(&p), Some(server.pid));
                }
                Ok(Some(format!("unrecorded pid {}: {s}", server.pid)))
            }
            Ok(None) => Ok(None),
            Err(warning) => Ok(Some(format!("warning: {warning}"))),
        },
        Some(StepKind::Spawn) => {
            let outputs = record.outputs.as_ref().expect("checked above");
            stop_server(outputs, grace).map(|s| {
                let pid = outputs
                    .get::<provision_plan::outputs::SpawnOutputs>()
                    .map_or("-".to_string(), |o| o.server.pid.to_string());
                Some(format!("pid {pid}: {s}"))
            })
        }
        _ => Ok(None),
    }
}

/// For the executor's `Dispatch::retire`: a step of a replica that left the config.
pub fn retire(id: &str, record: &StepRecord) -> Result<(), StepError> {
    undo(record, crate::replica::DEFAULT_GRACE, None)
        .map(|_| ())
        .map_err(|e| StepError::new(format!("cannot retire {id}: {e}")))
}

/// Mark a step as undone: it must run again on the next apply.
fn mark_down(record: &mut StepRecord) {
    record.status = StepStatus::Cancelled;
    record.fingerprint = None;
    record.outputs = None;
    record.artifacts.clear();
    record.finished_at = Some(now_rfc3339());
    record.error = Some("stopped by `provision down`".into());
}

/// Stop every replica in `state` (or only `pool`'s): handoffs first, then probes, then servers.
/// `roots` (the plan's) lets it find a server an interrupted apply started without recording,
/// through its pid file or, when that is gone too, the marker in its environment.
/// The state is saved after each step, so an interrupted `down` loses nothing. Idempotent.
pub fn down(
    file: &StateFile,
    state: &mut State,
    pool: Option<&str>,
    grace: Duration,
    roots: Option<&Roots>,
) -> Result<DownReport, StateError> {
    let mut ids: Vec<(u8, String)> = state
        .steps
        .iter()
        .filter(|(_, r)| StepKind::parse(&r.kind).is_some_and(StepKind::is_replica))
        .filter(|(_, r)| pool.is_none() || pool_of(r) == pool)
        .filter(|(_, r)| r.status != StepStatus::Cancelled || r.outputs.is_some())
        .map(|(id, r)| (retire_rank_of(&r.kind), id.clone()))
        .collect();
    ids.sort();
    let mut report = DownReport::default();
    // Servers the records name (stopped or not): the marker search below leaves them alone.
    let recorded: Vec<u32> = ids
        .iter()
        .filter_map(|(_, id)| state.steps[id].outputs.as_ref())
        .filter_map(ServerHandle::of_outputs)
        .filter_map(|h| h.pid())
        .collect();
    for (_, id) in ids {
        let record = state.steps.get_mut(&id).expect("listed above");
        match undo(record, grace, roots) {
            Ok(what) => {
                if let Some(what) = what {
                    report.stopped.push(Stop {
                        step: id.clone(),
                        what,
                    });
                }
                mark_down(record);
                file.save(state)?;
            }
            Err(e) => report.failed.push((id, e)),
        }
    }
    if let Some(roots) = roots {
        let wanted = |p: &str| pool.is_none_or(|want| want == p);
        stop_by_marker(roots, &wanted, grace, &recorded, &mut report);
    }
    Ok(report)
}
