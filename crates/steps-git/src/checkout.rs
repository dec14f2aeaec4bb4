//! The git-clone step itself: a checkout in the cache at exactly the ref, owned by provision.
//!
//! 1. Clone into `<dir>.partial` and rename, so a half clone never looks like a cache.
//! 2. Fetch (branches, tags, forced) unless the ref is a commit the checkout already has.
//! 3. Resolve the ref: tag, then branch, then commit (abbreviations too).
//! 4. Check out detached, reset hard, clean (ignored files too); submodules when asked.
//!
//! An unusable cache (not a repository, another origin, missing objects, a failed checkout)
//! is deleted and cloned again, once. An unreachable repository never deletes the cache.

use std::path::{Path, PathBuf};

use provision_executor::{Outcome, StepContext, StepError};
use provision_plan::outputs::GitCloneOutputs;
use provision_plan::planner::redact_url;
use provision_plan::step::GitClone;

use crate::credentials::Remote;
use crate::error::GitError;
use crate::facts::{local_tag, real_url, unknown_ref};
use crate::git::{git, git_in, note, read};
use crate::refs::{parse_ls_remote, resolve_in, RefKind};

/// Clone or update the checkout and check out the ref. Outputs `commit` (full SHA) and `dir`;
/// the artifact is the checkout directory.
pub fn run(spec: &GitClone, cx: &StepContext<'_>) -> Result<Outcome, StepError> {
    let remote = real_url(spec, cx)?;
    let dir = cx.path(&spec.dir);
    let job = Job {
        spec,
        remote: &remote,
        dir: &dir,
        local: remote.is_local(),
        cx,
    };
    let commit = match job.attempt() {
        Ok(commit) => commit,
        Err(Failure::Final(e)) => return Err(e.into()),
        Err(Failure::Cache(reason)) => {
            note(
                cx,
                &format!("the cached checkout is unusable ({reason}); cloning again"),
            );
            remove(&dir)?;
            job.attempt().map_err(|f| match f {
                Failure::Final(e) => e,
                Failure::Cache(reason) => GitError::Corrupt {
                    dir: dir.display().to_string(),
                    reason,
                },
            })?
        }
    };
    let outputs = GitCloneOutputs {
        commit,
        dir: dir.display().to_string(),
    };
    Ok(Outcome::new(outputs).artifact(dir))
}

/// Why an attempt failed: for good, or because of the cache (worth one fresh clone).
enum Failure {
    Final(GitError),
    Cache(String),
}

impl From<GitError> for Failure {
    fn from(e: GitError) -> Failure {
        Failure::Final(e)
    }
}

struct Job<'a> {
    spec: &'a GitClone,
    /// The repository: its URL without credentials, which go in git's environment.
    remote: &'a Remote,
    dir: &'a Path,
    local: bool,
    cx: &'a StepContext<'a>,
}

impl Job<'_> {
    /// git in the checkout, with the repository's credentials (fetch and submodules need
    /// them; other commands ignore them).
    fn git_in(&self, args: &[&str]) -> provision_executor::command::StepCommand {
        self.remote
            .authorize(git_in(self.dir, args.iter().copied(), self.local))
    }

    fn unreachable(&self, e: &provision_executor::command::CommandError) -> GitError {
        GitError::Unreachable {
            repo: self.remote.shown.clone(),
            tail: e.tail().to_string(),
            command: e.failed_command(),
        }
    }

    /// One pass; `Ok(full sha)`.
    fn attempt(&self) -> Result<String, Failure> {
        let r = self.spec.git_ref.trim();
        let kind = RefKind::of(r);
        let fresh = !self.dir.exists();
        if fresh {
            self.clone()?;
        } else {
            self.check_health()?;
        }
        let mut commit = None;
        if kind.is_sha() {
            // A pinned commit the checkout already has needs no fetch.
            commit = self.resolve_local(r, kind);
        }
        if commit.is_none() && !fresh {
            self.fetch(r)?;
        }
        if commit.is_none() {
            commit = self.resolve_local(r, kind);
        }
        if commit.is_none() && kind == RefKind::FullSha {
            // A commit no branch or tag reaches: ask for it by id (servers may allow it).
            let _ = self.git_in(&["fetch", "--quiet", "origin", r]).run(self.cx);
            commit = self.resolve_local(r, kind);
        }
        let Some(commit) = commit else {
            return Err(self.unknown(r, kind, fresh));
        };
        self.check_out(&commit)?;
        if self.spec.submodules {
            self.submodules()?;
        }
        Ok(commit)
    }

    fn clone(&self) -> Result<(), Failure> {
        let partial = partial_dir(self.dir);
        remove(&partial).map_err(|e| Failure::Final(corrupt(self.dir, &e.message)))?;
        if let Some(parent) = self.dir.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                Failure::Final(corrupt(
                    self.dir,
                    &format!("cannot create {}: {e}", parent.display()),
                ))
            })?;
        }
        let partial_s = partial.display().to_string();
        self.remote
            .authorize(git(
                ["clone", "--no-checkout", "--", &self.remote.url, &partial_s],
                self.local,
            ))
            .run(self.cx)
            .map_err(|e| match e {
                provision_executor::command::CommandError::Cancelled { .. } => {
                    Failure::Final(GitError::Command(e))
                }
                e => Failure::Final(self.unreachable(&e)),
            })?;
        std::fs::rename(&partial, self.dir).map_err(|e| {
            Failure::Final(corrupt(
                self.dir,
                &format!("cannot move the fresh clone into place: {e}"),
            ))
        })?;
        Ok(())
    }

    /// A repository of its own whose origin is our URL.
    fn check_health(&self) -> Result<(), Failure> {
        if !self.dir.join(".git").is_dir() {
            return Err(Failure::Cache("not a git repository".into()));
        }
        let git_dir = read(self.git_in(&["rev-parse", "--git-dir"]), self.cx);
        match git_dir {
            Ok(d) if d == ".git" => {}
            Ok(d) => return Err(Failure::Cache(format!("its git directory is {d}"))),
            Err(e) => return Err(cache_or_cancel(e, "git cannot read it")),
        }
        let origin = read(
            self.git_in(&["config", "--get", "remote.origin.url"]),
            self.cx,
        )
        .unwrap_or_default();
        if origin == self.remote.url {
            return Ok(());
        }
        // A checkout cloned (by an earlier provision) with the credentials in its URL: the
        // same origin; its `.git/config` loses them.
        if Remote::parse(&origin).url == self.remote.url {
            self.git_in(&["remote", "set-url", "origin", &self.remote.url])
                .run(self.cx)
                .map_err(|e| cache_or_cancel(e, "`git remote set-url origin` failed"))?;
            note(
                self.cx,
                "removed the credentials from the checkout's origin URL",
            );
            return Ok(());
        }
        Err(Failure::Cache(format!(
            "its origin is {}",
            redact_url(&origin)
        )))
    }

    fn fetch(&self, r: &str) -> Result<(), Failure> {
        let fetched = self
            .git_in(&["fetch", "--force", "--prune", "--tags", "origin"])
            .run(self.cx);
        let Err(e) = fetched else {
            return Ok(());
        };
        if let provision_executor::command::CommandError::Cancelled { .. } = e {
            return Err(GitError::Command(e).into());
        }
        // Offline: a tag already here is used; otherwise tell a broken cache from a
        // repository that cannot be reached.
        if local_tag(self.dir, r, self.cx).is_some() {
            note(
                self.cx,
                &format!("fetch failed; using tag {r} from the cache"),
            );
            return Ok(());
        }
        if self.remote_reachable() {
            Err(Failure::Cache(format!(
                "fetch failed: {}",
                last_line(e.tail())
            )))
        } else {
            Err(self.unreachable(&e).into())
        }
    }

    fn remote_reachable(&self) -> bool {
        let listing = git(["ls-remote", "--", &self.remote.url, "HEAD"], self.local);
        read(self.remote.authorize(listing), self.cx).is_ok()
    }

    /// The commit `r` names in the checkout: tag, branch (as fetched), full ref, commit.
    fn resolve_local(&self, r: &str, kind: RefKind) -> Option<String> {
        let mut candidates = vec![format!("refs/tags/{r}"), format!("refs/remotes/origin/{r}")];
        if r.starts_with("refs/") {
            candidates.push(r.to_string());
        }
        if r == "HEAD" {
            candidates.push("refs/remotes/origin/HEAD".into());
        }
        if kind.is_sha() {
            candidates.push(r.to_string());
        }
        candidates.into_iter().find_map(|c| {
            read(
                self.git_in(&[
                    "rev-parse",
                    "--verify",
                    "--quiet",
                    &format!("{c}^{{commit}}"),
                ]),
                self.cx,
            )
            .ok()
            .filter(|s| s.len() == 40)
        })
    }

    /// The ref is not in the checkout. If the repository has a tag or branch of that name,
    /// the cache is to blame; otherwise it is an unknown ref.
    fn unknown(&self, r: &str, kind: RefKind, fresh: bool) -> Failure {
        if !fresh && kind == RefKind::Name {
            let listing = git(
                [
                    "ls-remote".to_string(),
                    "--".into(),
                    self.remote.url.clone(),
                    format!("refs/tags/{r}"),
                    format!("refs/heads/{r}"),
                ],
                self.local,
            );
            let listed = read(self.remote.authorize(listing), self.cx);
            if let Ok(out) = listed {
                if resolve_in(&parse_ls_remote(&out), r).is_some() {
                    return Failure::Cache(format!("fetch did not bring `{r}`"));
                }
            }
        }
        // A commit the fetched checkout does not have is unknown to the repository: fetch
        // would have failed on a broken cache.
        Failure::Final(unknown_ref(self.spec, self.remote, self.cx))
    }

    fn check_out(&self, commit: &str) -> Result<(), Failure> {
        for args in [
            &["checkout", "--quiet", "--force", "--detach", commit][..],
            &["reset", "--quiet", "--hard", commit],
            &["clean", "-ffdxq"],
        ] {
            self.git_in(args)
                .run(self.cx)
                .map_err(|e| cache_or_cancel(e, &format!("`git {}` failed", args.join(" "))))?;
        }
        let head = read(self.git_in(&["rev-parse", "HEAD"]), self.cx)
            .map_err(|e| cache_or_cancel(e, "`git rev-parse HEAD` failed"))?;
        if head != commit {
            return Err(Failure::Cache(format!(
                "HEAD is {head} after checking out {commit}"
            )));
        }
        Ok(())
    }

    fn submodules(&self) -> Result<(), Failure> {
        for args in [
            &["submodule", "sync", "--quiet", "--recursive"][..],
            &["submodule", "update", "--init", "--recursive", "--force"],
            &[
                "submodule",
                "foreach",
                "--quiet",
                "--recursive",
                "git clean -ffdxq",
            ],
        ] {
            self.git_in(args).run(self.cx).map_err(|e| match e {
                provision_executor::command::CommandError::Cancelled { .. } => {
                    Failure::Final(GitError::Command(e))
                }
                e => Failure::Final(GitError::Submodules {
                    repo: self.remote.shown.clone(),
                    tail: e.tail().to_string(),
                    command: e.failed_command(),
                }),
            })?;
        }
        Ok(())
    }
}

fn cache_or_cancel(e: provision_executor::command::CommandError, what: &str) -> Failure {
    match e {
        provision_executor::command::CommandError::Cancelled { .. } => {
            Failure::Final(GitError::Command(e))
        }
        e => Failure::Cache(format!("{what}: {}", last_line(e.tail()))),
    }
}

fn last_line(tail: &str) -> &str {
    tail.lines()
        .rev()
        .find(|l| !l.starts_with("[provision]") && !l.trim().is_empty())
        .unwrap_or("")
}

fn corrupt(dir: &Path, reason: &str) -> GitError {
    GitError::Corrupt {
        dir: dir.display().to_string(),
        reason: reason.to_string(),
    }
}

fn partial_dir(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    dir.with_file_name(name)
}

fn remove(dir: &Path) -> Result<(), StepError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(
            StepError::new(format!("cannot delete {}: {e}", dir.display()))
                .hint("check the permissions of the cache directory"),
        ),
    }
}
