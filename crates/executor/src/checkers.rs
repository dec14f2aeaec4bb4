//! The worker threads that check whether ready steps are fresh (facts such as `git ls-remote`,
//! outputs on disk, a liveness step's `nvidia-smi` or `/health`), side by side and off the
//! scheduler thread. Workers are started as checks need them and kept for the apply (a thread
//! per check cost more than many checks take), at most one per check in flight, which the
//! scheduler bounds by `--jobs`. Each reports its decision on the scheduler's channel.

use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::Scope;

use crate::apply::decide;
use crate::dispatch::{Dispatch, StepContext};
use crate::scheduler::Report;
use crate::state::StepRecord;

/// One check: step `i` in its context, its dependencies' fingerprint contributions and its
/// record from the last apply.
pub(crate) struct Check<'a> {
    pub i: usize,
    pub cx: StepContext<'a>,
    pub deps: BTreeMap<String, String>,
    pub record: Option<StepRecord>,
}

pub(crate) struct Checkers<'s, 'a> {
    scope: &'s Scope<'s, 'a>,
    queue: Sender<Check<'a>>,
    shared: Arc<Mutex<Receiver<Check<'a>>>>,
    reports: Sender<Report<'a>>,
    dispatch: &'a dyn Dispatch,
    force: bool,
    workers: usize,
}

impl<'s, 'a> Checkers<'s, 'a> {
    /// No worker yet; they stop when this is dropped.
    pub(crate) fn new(
        scope: &'s Scope<'s, 'a>,
        reports: Sender<Report<'a>>,
        dispatch: &'a dyn Dispatch,
        force: bool,
    ) -> Self {
        let (queue, shared) = mpsc::channel();
        Checkers {
            scope,
            queue,
            shared: Arc::new(Mutex::new(shared)),
            reports,
            dispatch,
            force,
            workers: 0,
        }
    }

    /// Queue `check`, one of `in_flight` checks not yet reported (it included): a worker is
    /// started when there are fewer.
    pub(crate) fn submit(&mut self, check: Check<'a>, in_flight: usize) {
        if self.workers < in_flight {
            self.workers += 1;
            let shared = self.shared.clone();
            let reports = self.reports.clone();
            let (dispatch, force) = (self.dispatch, self.force);
            self.scope.spawn(move || loop {
                let next = shared.lock().expect("a worker panicked").recv();
                let Ok(c) = next else { return };
                let decision = decide(dispatch, &c.cx, c.deps, c.record.as_ref(), force);
                let _ = reports.send(Report::Decided(c.i, c.cx, decision));
            });
        }
        self.queue
            .send(check)
            .expect("the workers outlive the queue");
    }
}
