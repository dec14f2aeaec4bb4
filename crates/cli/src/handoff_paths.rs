//! A `handoff_path` must name a file of provision's own: not the config, the state file or its
//! lock, not a file under the cache directory (sources, builds, models), not a server's binary,
//! log or pid file. Checked where the config path, the state path and the roots are all known
//! (the plan only knows the roots), before anything runs.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use provision_plan::{Plan, StepSpec};

/// `path` made absolute and lexically normal.
fn normal(path: &Path) -> PathBuf {
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
    normal
}

/// Resolves paths as `realpath` would where they exist: each made absolute and lexically
/// normal, with its longest existing ancestor resolved (symlinks followed), so two spellings of
/// one file compare equal. The directories met are resolved once per check, not once per path:
/// 10,000 pools name 40,000 files in a few directories, and resolving each path from the root
/// (a `realpath` per missing ancestor, a `readlink` per component) was most of `validate`'s time.
#[derive(Default)]
struct Resolver {
    /// A lexically normal directory → what it resolves to.
    dirs: HashMap<PathBuf, PathBuf>,
}

impl Resolver {
    /// What `path` names, resolved.
    fn resolved(&mut self, path: &Path) -> PathBuf {
        let normal = normal(path);
        let (Some(parent), Some(name)) = (normal.parent(), normal.file_name()) else {
            return self.dir(&normal);
        };
        // The file itself may be a symlink: followed, as realpath does.
        if std::fs::symlink_metadata(&normal).is_ok_and(|m| m.file_type().is_symlink()) {
            if let Ok(real) = std::fs::canonicalize(&normal) {
                return real;
            }
        }
        self.dir(parent).join(name)
    }

    /// The directory `dir` (lexically normal) resolved: its longest existing ancestor's real
    /// path with the rest joined on.
    fn dir(&mut self, dir: &Path) -> PathBuf {
        // Up to the first directory already known or that exists, then back down.
        let mut rest = Vec::new();
        let mut at = dir.to_path_buf();
        let mut base = loop {
            if let Some(known) = self.dirs.get(&at) {
                break known.clone();
            }
            if let Ok(real) = std::fs::canonicalize(&at) {
                self.dirs.insert(at.clone(), real.clone());
                break real;
            }
            match (at.file_name().map(|n| n.to_os_string()), at.parent()) {
                (Some(name), Some(parent)) => {
                    let parent = parent.to_path_buf();
                    rest.push((name, std::mem::replace(&mut at, parent)));
                }
                _ => break at.clone(),
            }
        };
        for (name, below) in rest.into_iter().rev() {
            base.push(name);
            self.dirs.insert(below, base.clone());
        }
        base
    }
}

/// The first `handoff_path` of `plan` that names a file provision does not own, as an error
/// message naming the pool, the field and the path.
pub fn check(plan: &Plan, config: &Path, state: &Path, lock: &Path) -> Result<(), String> {
    // A map, not a list: 10,000 pools have 30,000 such files and 10,000 handoffs to look up.
    let mut resolver = Resolver::default();
    let mut taken: HashMap<PathBuf, String> = HashMap::from([
        (resolver.resolved(config), "the config file".into()),
        (resolver.resolved(state), "the state file".into()),
        (resolver.resolved(lock), "the lock file of the state".into()),
    ]);
    for s in &plan.steps {
        if let StepSpec::Spawn(sp) = &s.spec {
            let name = provision_plan::ReplicaId::new(&sp.pool, sp.replica).to_string();
            let binary = provision_steps_spawn::engine::of(sp.engine)
                .map_or("server binary".into(), |e| {
                    format!("{} binary", e.program())
                });
            for (p, what) in [
                (&sp.binary, binary.as_str()),
                (&sp.log, "server log"),
                (&sp.pid_file, "pid file"),
            ] {
                let p = plan.roots.expand(p);
                if !p.contains("${") {
                    taken
                        .entry(resolver.resolved(Path::new(&p)))
                        .or_insert_with(|| format!("the {what} of {name}"));
                }
            }
        }
    }
    let cache = resolver.resolved(Path::new(&plan.roots.cache));
    for s in &plan.steps {
        let StepSpec::Handoff(h) = &s.spec else {
            continue;
        };
        let path = plan.roots.expand(&h.path);
        if path.contains("${") {
            continue;
        }
        let at = resolver.resolved(Path::new(&path));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What the resolver stood for before it kept directories: realpath of the longest
    /// existing ancestor, the rest joined on.
    fn from_the_root(path: &Path) -> PathBuf {
        let mut existing = normal(path);
        let mut rest = Vec::new();
        loop {
            if let Ok(real) = std::fs::canonicalize(&existing) {
                return rest
                    .iter()
                    .rev()
                    .fold(real, |p, c: &std::ffi::OsString| p.join(c));
            }
            rest.push(existing.file_name().unwrap().to_os_string());
            existing = existing.parent().unwrap().to_path_buf();
        }
    }

    #[test]
    fn paths_resolve_as_realpath_would_whatever_was_resolved_before() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("real/sub")).unwrap();
        std::fs::write(root.join("real/file"), "x").unwrap();
        std::os::unix::fs::symlink("real", root.join("link")).unwrap();
        std::os::unix::fs::symlink("../file", root.join("real/sub/to-file")).unwrap();
        std::os::unix::fs::symlink("nowhere", root.join("dangling")).unwrap();
        let paths = [
            "real/file",
            "link/file",
            "link/sub/../file",
            "real/sub/to-file",
            "link/sub/to-file",
            "link/missing/deeper/x.json",
            "real/missing/deeper/y.json",
            "dangling",
            "dangling/x",
            "real/file/under-a-file",
            "link",
            "",
        ];
        // Every order: what is remembered from one path never changes another's answer.
        for round in 0..2 {
            let mut resolver = Resolver::default();
            let mut order: Vec<&str> = paths.to_vec();
            if round == 1 {
                order.reverse();
            }
            for p in order {
                let path = root.join(p);
                assert_eq!(resolver.resolved(&path), from_the_root(&path), "{p}");
            }
        }
        let mut resolver = Resolver::default();
        assert_eq!(
            resolver.resolved(&root.join("link/sub/to-file")),
            std::fs::canonicalize(root.join("real/file")).unwrap()
        );
    }
}
