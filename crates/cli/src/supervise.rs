//! `provision supervise`: apply, then stay in the foreground watching the replicas. A replica
//! whose server exits loses its handoff at once and is restarted (its spawn, probe and handoff
//! run again through the executor, everything else is kept) after an exponential backoff;
//! SIGINT/SIGTERM stop every replica cleanly. Holds the apply lock the whole time.

use std::collections::BTreeSet;
use std::process::ExitCode;

use provision_executor::{ApplyOptions, Cancel, Dispatch, StateFile};
use provision_plan::{Plan, StepSpec};
use provision_steps_spawn::{ReplicaKey, SuperviseEvent, SuperviseOptions};

use crate::exit;
use crate::progress::{self, Verbosity};

/// The plan restricted to one replica's handoff and everything it depends on.
fn replica_plan(plan: &Plan, key: &ReplicaKey) -> Plan {
    let mut keep = BTreeSet::new();
    let mut todo = vec![format!("handoff:{}/r{}", key.0, key.1)];
    while let Some(id) = todo.pop() {
        if keep.insert(id.clone()) {
            if let Some(step) = plan.step(&id) {
                todo.extend(step.deps.iter().cloned());
            }
        }
    }
    let mut sub = plan.clone();
    sub.steps.retain(|s| keep.contains(&s.id));
    sub
}

/// Apply `plan`, then supervise its replicas until SIGINT/SIGTERM.
pub fn run(
    plan: &Plan,
    dispatch: &dyn Dispatch,
    file: &StateFile,
    opts: &SuperviseOptions,
    json: bool,
    verbosity: Verbosity,
) -> ExitCode {
    let lock = match provision_executor::acquire(&file.path, false) {
        Ok(l) => l,
        Err(e) => return crate::lock_error(&e, "stop that apply or supervisor first"),
    };
    let cancel = Cancel::new();
    let handler_cancel = cancel.clone();
    let _ = ctrlc::set_handler(move || {
        eprintln!("supervise: stopping every replica");
        handler_cancel.cancel();
    });
    let sink = progress::sink(json, verbosity);
    let apply_opts = ApplyOptions::default();
    let apply = |plan: &Plan| -> Result<Vec<(String, String)>, ExitCode> {
        let mut state = file.load().map_err(|e| {
            eprintln!("error: {e}\n  hint: {}", e.hint());
            ExitCode::from(exit::STATE_UNREADABLE)
        })?;
        let report = provision_executor::apply(
            plan,
            dispatch,
            file,
            &mut state,
            &apply_opts,
            sink.as_ref(),
            &cancel,
        )
        .map_err(|e| {
            eprintln!("error: {e}\n  hint: {}", e.hint());
            ExitCode::from(exit::FAILURE)
        })?;
        Ok(report
            .failures()
            .into_iter()
            .map(|(id, e)| (id.to_string(), e.message.clone()))
            .collect())
    };

    // First, make it so.
    let failures = match apply(plan) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let replica_kinds = |id: &str| {
        id.starts_with("spawn:") || id.starts_with("probe:") || id.starts_with("handoff:")
    };
    for (id, err) in &failures {
        eprintln!("error: step {id} failed: {err}");
    }
    if failures.iter().any(|(id, _)| !replica_kinds(id)) {
        eprintln!("supervise: a build or check step failed; fix it and run again");
        return ExitCode::from(exit::STEP_FAILED);
    }
    let replicas: Vec<ReplicaKey> = plan
        .steps
        .iter()
        .filter_map(|s| match &s.spec {
            StepSpec::Spawn(sp) => Some((sp.pool.clone(), sp.replica)),
            _ => None,
        })
        .collect();
    if replicas.is_empty() {
        eprintln!("supervise: no replicas provision runs (external servers only)");
        return ExitCode::from(exit::OK);
    }
    eprintln!(
        "supervise: watching {} {} (Ctrl-C stops them all)",
        replicas.len(),
        if replicas.len() == 1 {
            "replica"
        } else {
            "replicas"
        }
    );
    let mut restart = |key: &ReplicaKey| match apply(&replica_plan(plan, key)) {
        Ok(f) if f.is_empty() => Ok(()),
        Ok(f) => Err(f
            .into_iter()
            .map(|(id, e)| format!("{id}: {e}"))
            .collect::<Vec<_>>()
            .join("; ")),
        Err(_) => Err("the state file could not be used".into()),
    };
    let mut events = |e: SuperviseEvent| {
        let line = match e {
            SuperviseEvent::Down { replica, why } => format!("{replica} is down: {why}"),
            SuperviseEvent::Restarting { replica, attempt } => {
                format!("{replica}: restarting (attempt {attempt})")
            }
            SuperviseEvent::Up { replica } => format!("{replica} is up again"),
            SuperviseEvent::RestartFailed {
                replica,
                error,
                retry_in,
            } => format!(
                "{replica}: restart failed: {error}; next try in {} ms",
                retry_in.as_millis()
            ),
            SuperviseEvent::Stopping => "stopping every replica".into(),
        };
        if json {
            println!(
                "{}",
                serde_json::json!({"event": "supervise", "message": line})
            );
        } else {
            eprintln!("supervise: {line}");
        }
    };
    let report = match provision_steps_spawn::supervise(
        file,
        &replicas,
        opts,
        &cancel,
        &mut restart,
        &mut events,
    ) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}\n  hint: {}", e.hint());
            return ExitCode::from(exit::FAILURE);
        }
    };
    drop(lock);
    for s in &report.stopped {
        eprintln!("{}: {}", s.step, s.what);
    }
    for (s, e) in &report.failed {
        eprintln!("error: {s}: {e}");
    }
    if report.failed.is_empty() {
        ExitCode::from(exit::OK)
    } else {
        ExitCode::from(exit::FAILURE)
    }
}
