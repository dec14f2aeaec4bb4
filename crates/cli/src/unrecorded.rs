//! At the start of an apply, under its lock: the servers a killed apply started and never
//! recorded. Each carries this runtime dir's marker (`PROVISION_INSTANCE`) and belongs to a
//! pool of the plan, but no record of the state names it; it would hold a port (and a GPU)
//! that no handoff names. They are stopped before anything runs, each named on stderr.
//! Nothing else is touched: not a recorded server, not another runtime dir's, not a pool
//! this plan does not have (a project sharing the runtime dir with its own state file).

use std::collections::BTreeSet;

use provision_executor::State;
use provision_plan::{Plan, StepSpec};

/// Stop this plan's unrecorded servers; what was stopped is a note, what could not be a warning
/// (neither said when `quiet`).
pub fn stop(plan: &Plan, state: &State, quiet: bool) {
    let pools: BTreeSet<&str> = plan
        .steps
        .iter()
        .filter_map(|s| match &s.spec {
            StepSpec::Spawn(spawn) => Some(spawn.pool.as_str()),
            _ => None,
        })
        .collect();
    if pools.is_empty() {
        return;
    }
    let report = provision_steps_spawn::down::stop_unrecorded(
        state,
        &plan.roots,
        &|pool| pools.contains(pool),
        provision_steps_spawn::DEFAULT_GRACE,
    );
    if quiet {
        return;
    }
    for s in &report.stopped {
        eprintln!(
            "note: stopped a server left running by an earlier apply: {}: {}",
            s.step, s.what
        );
    }
    for (step, e) in &report.failed {
        eprintln!(
            "warning: could not stop a server left running by an earlier apply ({step}): {e}"
        );
    }
}
