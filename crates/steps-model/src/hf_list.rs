//! The files of a Hugging Face repository at a revision, for `hf:ORG/REPO:QUANT`:
//! `GET $HF_ENDPOINT/api/models/ORG/REPO/revision/REV` answers the commit the revision is at
//! (`sha`) and every file (`siblings[].rfilename`), as `huggingface_hub`'s `model_info` reads
//! it. Offline, the cache answers with the files of the snapshot the revision last pointed at.

use std::fs;
use std::path::Path;

use serde::Deserialize;

use crate::hf::{check_repo, is_commit, refused, repo_dir, HfEnv, HubError};
use crate::http::{display_url, header, Http};

/// The most of a listing read (a repository of thousands of files is well under it).
const LISTING_LIMIT: u64 = 32 << 20;

/// A repository's files at a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub commit: String,
    /// Paths in the repository.
    pub files: Vec<String>,
}

#[derive(Deserialize)]
struct ModelInfo {
    sha: Option<String>,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
}

/// Ask the hub for the files of `repo` at `revision`.
pub fn list(env: &HfEnv, http: &Http, repo: &str, revision: &str) -> Result<Listing, HubError> {
    check_repo(repo, revision).map_err(|message| HubError::Refused {
        status: 400,
        message,
        hint: "check `provisioning.model.ref`".into(),
    })?;
    let url = format!("{}/api/models/{repo}/revision/{revision}", env.endpoint);
    let (mut resp, _) = http.request("GET", &url, &[], false)?;
    let status = resp.status().as_u16();
    let what = format!("the files of {repo}@{revision}");
    if status != 200 {
        let code = header(&resp, "x-error-code").unwrap_or("").to_string();
        return Err(refused(env, &what, &url, status, &code));
    }
    let not_a_hub = |detail: String| HubError::Refused {
        status,
        message: format!(
            "{} did not answer like a Hugging Face hub: {detail}",
            display_url(&url)
        ),
        hint: "check HF_ENDPOINT".into(),
    };
    let body = resp
        .body_mut()
        .with_config()
        .limit(LISTING_LIMIT)
        .read_to_string()
        .map_err(|e| not_a_hub(e.to_string()))?;
    let info: ModelInfo = serde_json::from_str(&body).map_err(|e| not_a_hub(e.to_string()))?;
    match info.sha.filter(|c| is_commit(c)) {
        Some(commit) => Ok(Listing {
            commit,
            files: info.siblings.into_iter().map(|s| s.rfilename).collect(),
        }),
        None => Err(not_a_hub("no commit (`sha`)".into())),
    }
}

/// The files the cache holds of `repo` at the commit `revision` last resolved to.
pub fn cached(env: &HfEnv, repo: &str, revision: &str) -> Option<Listing> {
    check_repo(repo, revision).ok()?;
    let dir = repo_dir(env, repo);
    let commit = if is_commit(revision) {
        revision.to_string()
    } else {
        fs::read_to_string(dir.join("refs").join(revision))
            .ok()?
            .trim()
            .to_string()
    };
    let snapshot = dir.join("snapshots").join(&commit);
    let mut files = Vec::new();
    walk(&snapshot, "", &mut files, 4);
    (is_commit(&commit) && !files.is_empty()).then_some(Listing { commit, files })
}

/// Files (links to blobs that are there) under `dir`, as `prefix/name`, `depth` levels down.
fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>, depth: u32) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let path = e.path();
        if path.is_file() {
            out.push(rel);
        } else if path.is_dir() && depth > 0 {
            walk(&path, &rel, out, depth - 1);
        }
    }
    out.sort();
}
