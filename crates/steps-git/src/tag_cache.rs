//! Tags resolved before, in `${cache}/refs.json` (beside the tool version cache): a tag is
//! treated as immutable once resolved — the convention of Terraform module refs and Cargo's
//! git dependencies, and what `git fetch` does with a tag it already has unless forced — so the
//! commit fact of a tag asks the repository once. [`RefLookup::Refresh`] (`--refresh-refs`)
//! asks again, for a tag that was moved by force. Branches and abbreviated SHAs are never
//! recorded: a moved branch must rebuild. Repositories are keyed by URL without credentials.

use std::collections::BTreeMap;

use provision_executor::cache_file::CacheFile;
use provision_executor::StepContext;
use serde::{Deserialize, Serialize};

/// How the commit fact treats a tag it resolved before.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RefLookup {
    /// Use the recorded commit: no `git ls-remote`.
    #[default]
    Cached,
    /// Ask the repository again and record its answer (`--refresh-refs`).
    Refresh,
}

/// `{repos: {url: {tag: commit}}}`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Tags {
    #[serde(default)]
    repos: BTreeMap<String, BTreeMap<String, String>>,
}

/// The resolved-tag cache file.
#[derive(Debug, Clone)]
pub struct TagCache {
    file: CacheFile<Tags>,
}

impl TagCache {
    pub fn new(file: impl Into<std::path::PathBuf>) -> TagCache {
        TagCache {
            file: CacheFile::new(file),
        }
    }

    /// The cache of the plan's cache root: `${cache}/refs.json`.
    pub fn in_cache(cx: &StepContext<'_>) -> TagCache {
        TagCache::new(cx.path("${cache}/refs.json"))
    }

    /// The commit recorded for `tag` of `repo` (a full SHA; anything else is ignored).
    pub fn lookup(&self, repo: &str, tag: &str) -> Option<String> {
        self.file
            .load()
            .repos
            .get(repo)?
            .get(tag)
            .filter(|sha| sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(|sha| sha.to_ascii_lowercase())
    }

    /// Record that `name` of `repo` is the tag of `commit`, or (`None`) that it is no tag.
    /// Written only when that changes what is recorded; a failed write is ignored (the next
    /// plan asks the repository again).
    pub fn record(&self, repo: &str, name: &str, commit: Option<&str>) {
        let recorded = self
            .file
            .load()
            .repos
            .get(repo)
            .and_then(|tags| tags.get(name).cloned());
        if recorded.as_deref() == commit {
            return;
        }
        let _ = self.file.update(|t| match commit {
            Some(sha) => {
                t.repos
                    .entry(repo.to_string())
                    .or_default()
                    .insert(name.to_string(), sha.to_string());
            }
            None => {
                if let Some(tags) = t.repos.get_mut(repo) {
                    tags.remove(name);
                    if tags.is_empty() {
                        t.repos.remove(repo);
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef01234567";
    const B: &str = "89abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn records_looks_up_and_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TagCache::new(dir.path().join("refs.json"));
        assert_eq!(cache.lookup("https://h/r.git", "v1"), None);
        cache.record("https://h/r.git", "v1", Some(A));
        cache.record("https://h/other.git", "v1", Some(B));
        assert_eq!(cache.lookup("https://h/r.git", "v1").as_deref(), Some(A));
        assert_eq!(
            cache.lookup("https://h/other.git", "v1").as_deref(),
            Some(B)
        );
        assert_eq!(cache.lookup("https://h/r.git", "v2"), None);
        cache.record("https://h/r.git", "v1", Some(B));
        assert_eq!(cache.lookup("https://h/r.git", "v1").as_deref(), Some(B));
        cache.record("https://h/r.git", "v1", None);
        assert_eq!(cache.lookup("https://h/r.git", "v1"), None);
        assert_eq!(
            cache.lookup("https://h/other.git", "v1").as_deref(),
            Some(B)
        );
    }

    #[test]
    fn a_corrupt_file_or_entry_is_no_answer_and_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("refs.json");
        let cache = TagCache::new(&file);
        std::fs::write(&file, "{\"repos\": {\"u\": {\"v1\": \"not-a-sha\"}}}").unwrap();
        assert_eq!(cache.lookup("u", "v1"), None);
        std::fs::write(&file, "{\"repos\": ").unwrap();
        assert_eq!(cache.lookup("u", "v1"), None);
        cache.record("u", "v1", Some(A));
        assert_eq!(cache.lookup("u", "v1").as_deref(), Some(A));
    }
}
