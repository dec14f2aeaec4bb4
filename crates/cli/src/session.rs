//! A command's session on one state file: the one way `apply`, `supervise`, `down` and `status`
//! reach the state. Opening it takes the apply lock (or, for `status`, takes none and writes
//! nothing) and loads the state; every write then checks that the lock file is still the one
//! held. The apply workflow is one sequence, the same for `apply` and each of `supervise`'s
//! applies: lock → reap the commands a killed apply left running → stop the servers it never
//! recorded → retire what the config no longer has → apply → report.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use provision_executor::{
    ApplyLock, ApplyOptions, ApplyReport, Cancel, Dispatch, EventSink, State, StateFile,
};
use provision_plan::{Plan, Roots};
use provision_steps_spawn::DownReport;

use crate::args::{Format, Target};
use crate::dispatch::StepDispatch;
use crate::exit::Exit;
use crate::report::{lock_error, state_error};
use crate::unrecorded;

/// The state of one state file, held under its lock (except a read-only session's).
pub(crate) struct Session {
    file: StateFile,
    state: State,
    /// Released when the session ends.
    lock: Option<ApplyLock>,
    /// `-q`: only errors on stderr (no notes, no warnings).
    quiet: bool,
}

/// How an apply workflow opens its session.
pub(crate) struct Opening<'a> {
    /// The config, pools and directories: the known step ids come from the whole config.
    pub(crate) target: &'a Target,
    /// What runs (only `--pool`'s steps when given).
    pub(crate) plan: &'a Plan,
    /// Wait for another holder of the lock instead of failing (exit 5).
    pub(crate) wait: bool,
    /// What to do about another holder of the lock.
    pub(crate) held_hint: &'a str,
    /// `Some(command)`: a cancel before anything changed ends the opening, exit 130 ("<command>
    /// was interrupted before it changed anything"). `None`: the caller goes on and sees the
    /// cancel itself (a supervisor stops every replica the state knows).
    pub(crate) stop_when_cancelled: Option<&'a str>,
    /// `-q`: only errors on stderr.
    pub(crate) quiet: bool,
}

impl Session {
    /// `status`: the state read, no lock taken, nothing written (the digest and tag caches are
    /// read, not updated).
    pub(crate) fn read_only(file: StateFile) -> Result<Session, ExitCode> {
        let state = file.load().map_err(|e| state_error(&e))?;
        provision_executor::cache_file::read_only();
        Ok(Session {
            file,
            state,
            lock: None,
            quiet: true,
        })
    }

    /// Take the apply lock on `file` (exit 5 naming the holder, `held_hint` saying what to do;
    /// with `wait`, wait for it), then load the state under it. `quiet`: only errors on stderr.
    pub(crate) fn lock(
        file: StateFile,
        wait: bool,
        held_hint: &str,
        quiet: bool,
    ) -> Result<Session, ExitCode> {
        let lock =
            provision_executor::acquire(&file.path, wait).map_err(|e| lock_error(&e, held_hint))?;
        if let Some(dead) = lock.took_over.as_ref().filter(|_| !quiet) {
            eprintln!("note: took over the lock left by an apply that is gone ({dead})");
        }
        // Every write checks that the lock file is still the one held.
        let file = file.held_by(&lock);
        let state = file.load().map_err(|e| state_error(&e))?;
        Ok(Session {
            file,
            state,
            lock: Some(lock),
            quiet,
        })
    }

    /// The apply workflow up to the apply: the lock, then what a killed apply left (its
    /// commands, its unrecorded servers: we hold the lock, so it is gone), then the pools and
    /// replicas the config no longer has. See [`Opening::stop_when_cancelled`].
    pub(crate) fn open_apply(
        how: &Opening<'_>,
        file: StateFile,
        sink: &dyn EventSink,
        cancel: &Cancel,
    ) -> Result<Session, ExitCode> {
        let mut session = Session::lock(file, how.wait, how.held_hint, how.quiet)?;
        session.reap_orphans(how.plan);
        if let Some(command) = how.stop_when_cancelled.filter(|_| cancel.is_cancelled()) {
            eprintln!("{command} was interrupted before it changed anything");
            return Err(ExitCode::from(Exit::Interrupted));
        }
        // A killed apply's servers that it never recorded: stopped before anything runs.
        unrecorded::stop(how.plan, &session.state, how.quiet);
        let known = known_ids(how.target, how.plan)?;
        session.retire_removed(&known, sink)?;
        Ok(session)
    }

    /// Stop the commands an earlier apply left running (its build jobs, its clones).
    fn reap_orphans(&self, plan: &Plan) {
        let steps_logs = PathBuf::from(plan.roots.expand("${runtime}/logs/steps"));
        for killed in provision_executor::orphans::reap(&steps_logs) {
            if self.quiet {
                continue;
            }
            eprintln!("note: stopped a command left running by an earlier apply: pid {killed}");
        }
    }

    /// Pools and replicas removed from the config (not in `known`): stop their servers, remove
    /// their handoffs.
    fn retire_removed(
        &mut self,
        known: &BTreeSet<String>,
        sink: &dyn EventSink,
    ) -> Result<(), ExitCode> {
        let failures = provision_executor::retire_removed(
            known,
            &StepDispatch::new(),
            &self.file,
            &mut self.state,
            sink,
        )
        .map_err(|e| state_error(&e))?;
        for (step, err) in failures.iter().filter(|_| !self.quiet) {
            eprintln!("warning: could not retire {step} (no longer in the config): {err}");
        }
        Ok(())
    }

    /// Run `plan` (or a part of it) against the session's state.
    pub(crate) fn apply(
        &mut self,
        plan: &Plan,
        dispatch: &dyn Dispatch,
        opts: &ApplyOptions,
        sink: &dyn EventSink,
        cancel: &Cancel,
    ) -> Result<ApplyReport, ExitCode> {
        provision_executor::apply(
            plan,
            dispatch,
            &self.file,
            &mut self.state,
            opts,
            sink,
            cancel,
        )
        .map_err(|e| state_error(&e))
    }

    /// Read the state again: another writer under this session's lock (the supervisor's
    /// watch) changed it.
    pub(crate) fn reload(&mut self) -> Result<(), ExitCode> {
        self.state = self.file.load().map_err(|e| state_error(&e))?;
        Ok(())
    }

    /// Stop the replicas the state knows (only `pool`'s when given).
    pub(crate) fn down(
        &mut self,
        pool: Option<&str>,
        grace: Duration,
        roots: &Roots,
    ) -> Result<DownReport, ExitCode> {
        provision_steps_spawn::down(&self.file, &mut self.state, pool, grace, Some(roots))
            .map_err(|e| state_error(&e))
    }

    /// The state file, bound to the session's lock when it holds one.
    pub(crate) fn file(&self) -> &StateFile {
        &self.file
    }

    pub(crate) fn state(&self) -> &State {
        &self.state
    }

    /// End the session: the lock is released.
    pub(crate) fn close(mut self) {
        drop(self.lock.take());
    }
}

/// Every step id of the whole config, so `--pool` never retires the other pools.
fn known_ids(target: &Target, plan: &Plan) -> Result<BTreeSet<String>, ExitCode> {
    let ids = |p: &Plan| p.steps.iter().map(|s| s.id.clone()).collect();
    match &target.pool {
        None => Ok(ids(plan)),
        Some(_) => {
            let all = Target {
                pool: None,
                ..target.clone()
            };
            let (_, p) = all.plan(Format::Json, true)?;
            Ok(ids(&p))
        }
    }
}

/// Whether `path` (a state file or its lock file) is there, as a file or a link.
pub(crate) fn exists(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}
