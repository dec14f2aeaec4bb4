//! Steps that the state file knows and the config no longer has: a removed pool or replica.
//! Their servers are stopped and their handoff files removed, so nothing is left orphaned or
//! stale; a step that cannot be retired stays in the state file and is retried next apply.

use std::collections::BTreeSet;

use provision_plan::step_traits::retire_rank_of;

use crate::dispatch::{Dispatch, StepError};
use crate::events::{Event, EventSink};
use crate::state::{State, StateError, StateFile};

/// Retire every recorded step whose id is not in `known` (the ids of the whole config's plan,
/// not of a `--pool` selection), in the kinds' retire order: endpoints first (handoffs, then
/// probes), then servers.
pub fn retire_removed(
    known: &BTreeSet<String>,
    dispatch: &dyn Dispatch,
    file: &StateFile,
    state: &mut State,
    events: &dyn EventSink,
) -> Result<Vec<(String, StepError)>, StateError> {
    let mut gone: Vec<(String, String)> = state
        .steps
        .iter()
        .filter(|(id, _)| !known.contains(*id))
        .map(|(id, r)| (id.clone(), r.kind.clone()))
        .collect();
    gone.sort_by_key(|(id, kind)| (retire_rank_of(kind), id.clone()));
    let mut failures = Vec::new();
    for (id, kind) in gone {
        let record = state.steps[&id].clone();
        match dispatch.retire(&id, &record) {
            Ok(()) => {
                state.steps.remove(&id);
                file.save(state)?;
                events.emit(Event::Retired {
                    step: id,
                    kind,
                    error: None,
                });
            }
            Err(err) => {
                events.emit(Event::Retired {
                    step: id.clone(),
                    kind,
                    error: Some(err.message.clone()),
                });
                failures.push((id, err));
            }
        }
    }
    Ok(failures)
}
