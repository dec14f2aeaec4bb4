//! A `handoff_path` must name a file of provision's own: not the config, the state file or its
//! lock, not a file under the cache directory (sources, builds, models), not a server's binary,
//! log or pid file. Checked where the config path, the state path and the roots are all known
//! (the plan only knows the roots), before anything runs.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use provision_plan::{Plan, StepSpec};

/// `path` made absolute and lexically normal, with its longest existing ancestor resolved
/// (symlinks followed), so two spellings of one file compare equal.
fn resolved(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut normal = PathBuf::new();
    for c in absolute.components() {
        match c {
            Component::ParentDir => {
                normal.pop();
            }
            Component::CurDir => {}
            other => normal.push(other),
        }
    }
    let mut existing = normal.clone();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(&existing) {
            return rest
                .iter()
                .rev()
                .fold(real, |p, c: &std::ffi::OsString| p.join(c));
        }
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return normal,
        }
    }
}

/// The first `handoff_path` of `plan` that names a file provision does not own, as an error
/// message naming the pool, the field and the path.
pub fn check(plan: &Plan, config: &Path, state: &Path, lock: &Path) -> Result<(), String> {
    // A map, not a list: 10,000 pools have 30,000 such files and 10,000 handoffs to look up.
    let mut taken: HashMap<PathBuf, String> = HashMap::from([
        (resolved(config), "the config file".into()),
        (resolved(state), "the state file".into()),
        (resolved(lock), "the lock file of the state".into()),
    ]);
    for s in &plan.steps {
        if let StepSpec::Spawn(sp) = &s.spec {
            let name = provision_plan::ReplicaId::new(&sp.pool, sp.replica).to_string();
            for (p, what) in [
                (&sp.binary, "llama-server binary"),
                (&sp.log, "server log"),
                (&sp.pid_file, "pid file"),
            ] {
                let p = plan.roots.expand(p);
                if !p.contains("${") {
                    taken
                        .entry(resolved(Path::new(&p)))
                        .or_insert_with(|| format!("the {what} of {name}"));
                }
            }
        }
    }
    let cache = resolved(Path::new(&plan.roots.cache));
    for s in &plan.steps {
        let StepSpec::Handoff(h) = &s.spec else {
            continue;
        };
        let path = plan.roots.expand(&h.path);
        if path.contains("${") {
            continue;
        }
        let at = resolved(Path::new(&path));
        let clash = taken.get(&at).cloned().or_else(|| {
            at.starts_with(&cache).then(|| {
                format!(
                    "inside the cache directory {} (sources, builds and models)",
                    cache.display()
                )
            })
        });
        if let Some(what) = clash {
            return Err(format!(
                "pool `{}`: `handoff_path` resolves to {}, which is {what}; provision writes and removes the handoff file, so it must be a file of its own\n  hint: set `handoff_path` of pool `{}` to a new file, e.g. under the runtime directory",
                h.pool,
                at.display(),
                h.pool
            ));
        }
    }
    Ok(())
}
