//! What one scheduler pass changed and has not yet written: the state records touched, and the
//! events that must wait for that write (each event describing a change, and, to keep their
//! order, every event after it). One write per pass, fsynced only when a record of a step that
//! is not [`is_volatile`] changed.

use provision_plan::Step;

use crate::apply::is_volatile;
use crate::events::{Event, EventSink};
use crate::state::{Durability, State, StateError, StateFile};

#[derive(Default)]
pub(crate) struct Unsaved {
    changed: bool,
    /// A record of a step that is not [`is_volatile`] changed: fsync this write.
    durable: bool,
    events: Vec<Event>,
}

impl Unsaved {
    /// `step`'s record changed; `event` says how.
    pub(crate) fn change(&mut self, step: &Step, event: Event) {
        self.changed = true;
        self.durable |= !is_volatile(step);
        self.events.push(event);
    }

    /// An event that changes no record: emitted now unless earlier ones wait for a write.
    pub(crate) fn note(&mut self, events: &dyn EventSink, event: Event) {
        if self.events.is_empty() {
            events.emit(event);
        } else {
            self.events.push(event);
        }
    }

    /// Write what changed (once), then emit the events that waited for it.
    pub(crate) fn flush(
        &mut self,
        file: &StateFile,
        state: &State,
        events: &dyn EventSink,
    ) -> Result<(), StateError> {
        if self.changed {
            let durability = match self.durable {
                true => Durability::Fsync,
                false => Durability::NoSync,
            };
            file.save_with(state, durability)?;
        }
        for event in self.events.drain(..) {
            events.emit(event);
        }
        self.changed = false;
        self.durable = false;
        Ok(())
    }
}
