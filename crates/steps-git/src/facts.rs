//! The commit a ref points at now: the fact that makes a moved branch rebuild.
//!
//! - A full 40-hex SHA is its own fact: no network, no checkout needed.
//! - A tag resolved before is the commit recorded then (`${cache}/refs.json`, see
//!   [`crate::tag_cache`]): no process; [`RefLookup::Refresh`] asks the repository again.
//! - Otherwise `git ls-remote` asks the repository (tags, then branches); a tag's commit is
//!   recorded.
//! - Offline (ls-remote fails): a tag already fetched into the cache is used (tags are
//!   treated as immutable); an abbreviated SHA is its own fact (lower-cased); a branch is an
//!   error, since whether it moved cannot be known.
//! - An abbreviated SHA that the repository has no tag or branch for is its own fact too: it
//!   names one commit for good, and the fact stays the same before and after the first clone.

use std::path::Path;

use provision_executor::{Facts, StepContext, StepError};
use provision_plan::step::GitClone;

use crate::credentials::Remote;
use crate::error::GitError;
use crate::git::{git, git_in, note, read};
use crate::refs::{nearest, parse_ls_remote, resolve_ref, tags_in, RefKind};
use crate::tag_cache::{RefLookup, TagCache};

/// The step's facts: `commit`.
pub fn facts(spec: &GitClone, cx: &StepContext<'_>, lookup: RefLookup) -> Result<Facts, StepError> {
    let commit = current_commit(spec, cx, lookup)?;
    Ok(Facts::from([("commit".to_string(), commit)]))
}

/// The URL to use, with the plan's placeholders expanded (a repo path relative to the config
/// file is `${config_dir}/…`) and its credentials (`${secret:repo.userinfo}`) filled in from
/// the step's secrets: for git only, never shown (errors and notes show it redacted).
pub(crate) fn real_url(spec: &GitClone, cx: &StepContext<'_>) -> Result<Remote, GitError> {
    let url = cx.secrets.expand(&cx.step.id, &cx.expand(&spec.repo))?;
    // A local repository by its canonical path: `a/../b`, a symlinked checkout of the same
    // config (CI's clone and a developer's) and the target of a symlink all name one origin,
    // so the cached clone is reused instead of being deleted and cloned again as "another
    // origin". A path that does not exist stays as written (the clone reports it).
    if url.starts_with('/') {
        if let Ok(canonical) = std::fs::canonicalize(&url) {
            return Ok(Remote::parse(&canonical.to_string_lossy()));
        }
    }
    Ok(Remote::parse(&url))
}

fn current_commit(
    spec: &GitClone,
    cx: &StepContext<'_>,
    lookup: RefLookup,
) -> Result<String, GitError> {
    let r = spec.git_ref.trim();
    let kind = RefKind::of(r);
    if kind == RefKind::FullSha {
        return Ok(r.to_ascii_lowercase());
    }
    let remote = real_url(spec, cx)?;
    let tags = TagCache::in_cache(cx);
    let repo = remote.shown.clone();
    if lookup == RefLookup::Cached {
        if let Some(sha) = tags.lookup(&repo, r) {
            return Ok(sha);
        }
    }
    let patterns = [
        format!("refs/tags/{r}"),
        format!("refs/tags/{r}^{{}}"),
        format!("refs/heads/{r}"),
        r.to_string(),
    ];
    let listed = read(
        remote.authorize(git(
            ["ls-remote".to_string(), "--".into(), remote.url.clone()]
                .into_iter()
                .chain(patterns),
            remote.is_local(),
        )),
        cx,
    );
    match listed {
        Ok(out) => {
            let refs = parse_ls_remote(&out);
            let resolved = resolve_ref(&refs, r);
            let tag = resolved
                .as_ref()
                .filter(|(_, name)| name.starts_with("refs/tags/"))
                .map(|(sha, _)| sha.as_str());
            tags.record(&repo, r, tag);
            if let Some((sha, _)) = resolved {
                return Ok(sha);
            }
            if kind == RefKind::AbbreviatedSha {
                return Ok(r.to_ascii_lowercase());
            }
            Err(unknown_ref(spec, &remote, cx))
        }
        Err(e) => {
            let dir = cx.path(&spec.dir);
            if let Some(sha) = local_tag(&dir, r, cx) {
                note(
                    cx,
                    &format!(
                        "{} is unreachable; using tag {r} from the cache",
                        provision_plan::secret_placeholder::shown(&spec.repo)
                    ),
                );
                return Ok(sha);
            }
            if kind == RefKind::AbbreviatedSha {
                return Ok(r.to_ascii_lowercase());
            }
            Err(GitError::Unreachable {
                repo: remote.shown.clone(),
                tail: e.tail().to_string(),
                command: e.failed_command(),
            })
        }
    }
}

/// The commit of tag `r` in the checkout at `dir`, if it has one.
pub(crate) fn local_tag(dir: &Path, r: &str, cx: &StepContext<'_>) -> Option<String> {
    if !dir.join(".git").exists() {
        return None;
    }
    read(
        git_in(
            dir,
            [
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("refs/tags/{r}^{{commit}}"),
            ],
            false,
        ),
        cx,
    )
    .ok()
    .filter(|s| !s.is_empty())
}

/// An unknown-ref error listing the repository's nearest tags (as far as it can list them).
pub(crate) fn unknown_ref(spec: &GitClone, remote: &Remote, cx: &StepContext<'_>) -> GitError {
    let listing = git(
        ["ls-remote", "--tags", "--", &remote.url],
        remote.is_local(),
    );
    let tags = read(remote.authorize(listing), cx)
        .map(|out| tags_in(&parse_ls_remote(&out)))
        .unwrap_or_default();
    GitError::UnknownRef {
        repo: remote.shown.clone(),
        git_ref: spec.git_ref.trim().to_string(),
        nearest: nearest(spec.git_ref.trim(), &tags),
    }
}
