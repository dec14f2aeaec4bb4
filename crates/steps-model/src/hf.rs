//! Hugging Face Hub files in the standard cache layout, shared with `huggingface_hub`,
//! `hf download` and llama.cpp's `-hf`:
//!
//! ```text
//! $HF_HOME/hub/models--ORG--REPO/blobs/<etag>               the file
//! $HF_HOME/hub/models--ORG--REPO/refs/<revision>            the commit the revision pointed at
//! $HF_HOME/hub/models--ORG--REPO/snapshots/<commit>/<file>  a relative link to the blob
//! ```
//!
//! The commit and the etag come from a `HEAD` of `$HF_ENDPOINT/ORG/REPO/resolve/REV/FILE`
//! (`X-Repo-Commit`, `X-Linked-Etag`, `X-Linked-Size`); the file from a `GET` of the same path
//! at the commit, following the redirect to the CDN without the token. Offline, the cache
//! answers for revisions it has seen.

use std::fs;
use std::path::{Component, Path, PathBuf};

use crate::http::{display_url, header, normalize_etag, Http, HttpError};

/// Where the hub is and who we are to it. `token` is never printed or stored.
#[derive(Clone)]
pub struct HfEnv {
    /// `HF_ENDPOINT`, default `https://huggingface.co`.
    pub endpoint: String,
    /// `HF_TOKEN` (or `HUGGING_FACE_HUB_TOKEN`, or the file `$HF_HOME/token`).
    pub token: Option<String>,
    /// `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
    /// `~/.cache/huggingface/hub`.
    pub hub_cache: PathBuf,
}

impl std::fmt::Debug for HfEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfEnv")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("hub_cache", &self.hub_cache)
            .finish()
    }
}

impl HfEnv {
    /// From the process environment, as `huggingface_hub` reads it.
    pub fn from_env() -> HfEnv {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let home = var("HOME").map(PathBuf::from).unwrap_or_default();
        let hf_home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join(".cache"))
                .join("huggingface")
        });
        let token = var("HF_TOKEN")
            .or_else(|| var("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| {
                fs::read_to_string(hf_home.join("token"))
                    .ok()
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
            });
        HfEnv {
            endpoint: var("HF_ENDPOINT")
                .unwrap_or_else(|| "https://huggingface.co".into())
                .trim_end_matches('/')
                .to_string(),
            token,
            hub_cache: var("HF_HUB_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| hf_home.join("hub")),
        }
    }

    /// A client that sends the token to the endpoint only.
    pub fn http(&self) -> Http {
        Http::new(
            self.token
                .clone()
                .map(|t| (crate::http::origin(&self.endpoint).to_string(), t)),
        )
    }
}

/// One file of one repository at one revision, checked to stay inside the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfFile {
    pub repo: String,
    pub file: String,
    pub revision: String,
}

fn safe_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// A repo id (ORG/NAME) and a revision that stay inside the cache.
pub fn check_repo(repo: &str, revision: &str) -> Result<(), String> {
    let parts: Vec<&str> = repo.split('/').collect();
    if parts.len() != 2 || !parts.iter().all(|p| safe_name(p)) {
        return Err(format!(
            "`{repo}` is not a Hugging Face repo id (ORG/NAME of letters, digits, `.`, `_`, `-`)"
        ));
    }
    if !safe_name(revision) {
        return Err(format!(
            "`{revision}` is not a usable revision (a branch, tag or commit of letters, digits, `.`, `_`, `-`)"
        ));
    }
    Ok(())
}

/// `$HF_HUB_CACHE/models--ORG--NAME`.
pub fn repo_dir(env: &HfEnv, repo: &str) -> PathBuf {
    env.hub_cache
        .join(format!("models--{}", repo.replace('/', "--")))
}

impl HfFile {
    /// Reject anything that could leave the cache or the repository: `..`, absolute paths,
    /// backslashes, odd characters in the repo id or revision.
    pub fn new(repo: &str, file: &str, revision: &str) -> Result<HfFile, String> {
        check_repo(repo, revision)?;
        let path = Path::new(file);
        if file.is_empty()
            || file.contains('\\')
            || file.contains('\0')
            || path
                .components()
                .any(|c| !matches!(c, Component::Normal(_)))
            || file
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(format!(
                "`{file}` leaves the repository: hf refs may not hold `..`, `.`, empty or absolute parts"
            ));
        }
        Ok(HfFile {
            repo: repo.into(),
            file: file.into(),
            revision: revision.into(),
        })
    }

    pub fn repo_dir(&self, env: &HfEnv) -> PathBuf {
        repo_dir(env, &self.repo)
    }

    pub fn snapshot(&self, env: &HfEnv, commit: &str) -> PathBuf {
        self.repo_dir(env)
            .join("snapshots")
            .join(commit)
            .join(&self.file)
    }

    pub fn blob(&self, env: &HfEnv, etag: &str) -> PathBuf {
        self.repo_dir(env).join("blobs").join(etag)
    }

    /// `ENDPOINT/ORG/REPO/resolve/REV/FILE`, each part percent-encoded.
    pub fn url(&self, env: &HfEnv, revision: &str) -> String {
        let file: Vec<String> = self.file.split('/').map(encode).collect();
        format!(
            "{}/{}/resolve/{}/{}",
            env.endpoint,
            self.repo,
            encode(revision),
            file.join("/")
        )
    }

    /// The commit the cache recorded for the revision (or the revision, when it is a commit).
    pub fn cached_commit(&self, env: &HfEnv) -> Option<String> {
        if is_commit(&self.revision) {
            return Some(self.revision.clone());
        }
        fs::read_to_string(self.repo_dir(env).join("refs").join(&self.revision))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| is_commit(s))
    }

    /// The etag of the cached file at `commit` (the name of the blob its link points to).
    pub fn cached_etag(&self, env: &HfEnv, commit: &str) -> Option<String> {
        let link = fs::read_link(self.snapshot(env, commit)).ok()?;
        let etag = link.file_name()?.to_str()?.to_string();
        self.blob(env, &etag).is_file().then_some(etag)
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What the hub says about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub commit: String,
    pub etag: String,
    pub size: Option<u64>,
}

/// Why the hub gave no metadata.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// Network trouble: the cache may answer instead.
    #[error("{0}")]
    Unreachable(#[from] HttpError),
    #[error("{message}")]
    Refused {
        status: u16,
        message: String,
        hint: String,
    },
}

/// The hub refused `what` at `url` with `status` (and its `X-Error-Code`): what to tell.
pub(crate) fn refused(env: &HfEnv, what: &str, url: &str, status: u16, code: &str) -> HubError {
    let (message, hint) = match status {
            401 | 403 if env.token.is_none() => (
                format!("{what}: the hub answered {status} (authentication needed)"),
                "the repository is gated or private: set HF_TOKEN to a token with access (it is never printed or stored)".to_string(),
            ),
            401 | 403 => (
                format!("{what}: the hub answered {status}: the token in HF_TOKEN was refused or has no access"),
                "check that the token is valid and that its account accepted the repository's terms".to_string(),
            ),
            404 => (
                format!("{what} was not found on {} (404{})", env.endpoint, if code.is_empty() { String::new() } else { format!(", {code}") }),
                "check the org, repo, file name and revision in `provisioning.model.ref`".to_string(),
            ),
            _ => (
                format!("{what}: {} answered {status}", display_url(url)),
                "the hub may be down; try again later".to_string(),
            ),
        };
    HubError::Refused {
        status,
        message,
        hint,
    }
}

/// `HEAD` the file's resolve URL.
pub fn remote(env: &HfEnv, http: &Http, f: &HfFile) -> Result<Remote, HubError> {
    let url = f.url(env, &f.revision);
    let (resp, _) = http.request("HEAD", &url, &[], false)?;
    let status = resp.status().as_u16();
    let what = format!("{}/{}@{}", f.repo, f.file, f.revision);
    if !(200..400).contains(&status) {
        let code = header(&resp, "x-error-code").unwrap_or("");
        return Err(refused(env, &what, &url, status, code));
    }
    let commit = header(&resp, "x-repo-commit").map(str::to_string);
    let etag = header(&resp, "x-linked-etag")
        .or_else(|| header(&resp, "etag"))
        .map(normalize_etag);
    let size = header(&resp, "x-linked-size")
        .or_else(|| header(&resp, "content-length"))
        .and_then(|v| v.parse().ok());
    match (commit, etag) {
        (Some(commit), Some(etag)) if is_commit(&commit) && safe_name(&etag) => {
            Ok(Remote { commit, etag, size })
        }
        _ => Err(HubError::Refused {
            status,
            message: format!(
                "{} did not answer like a Hugging Face hub (no X-Repo-Commit or ETag)",
                display_url(&url)
            ),
            hint: "check HF_ENDPOINT".into(),
        }),
    }
}

/// Link `snapshots/<commit>/<file>` to `blobs/<etag>` (relative, like huggingface_hub) and
/// record `refs/<revision>`.
pub fn link_snapshot(
    env: &HfEnv,
    f: &HfFile,
    commit: &str,
    etag: &str,
) -> std::io::Result<PathBuf> {
    let snap = f.snapshot(env, commit);
    let dir = snap.parent().expect("a snapshot file has a directory");
    fs::create_dir_all(dir)?;
    // From snapshots/<commit>/<a>/<b>/file back up to the repo dir.
    let depth = f.file.split('/').count() + 1;
    let mut target = PathBuf::new();
    for _ in 0..depth {
        target.push("..");
    }
    target.push("blobs");
    target.push(etag);
    if fs::read_link(&snap).ok().as_deref() != Some(target.as_path()) {
        // Made aside and renamed over: another resolve of the same file (a thread, a process)
        // doing the same at the same time finds a link, never a gap or EEXIST.
        let tmp = dir.join(unique_temp_name(&snap));
        std::os::unix::fs::symlink(&target, &tmp)?;
        if let Err(e) = fs::rename(&tmp, &snap) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    }
    write_ref(env, f, commit)?;
    Ok(snap)
}

/// `.<file name>.tmp<pid>.<n>`, unique among this process's threads and other processes.
fn unique_temp_name(path: &Path) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(".{name}.tmp{}.{n}", std::process::id())
}

fn write_ref(env: &HfEnv, f: &HfFile, commit: &str) -> std::io::Result<()> {
    if f.revision == commit {
        return Ok(());
    }
    let refs = f.repo_dir(env).join("refs");
    fs::create_dir_all(&refs)?;
    let path = refs.join(&f.revision);
    if fs::read_to_string(&path).ok().as_deref() == Some(commit) {
        return Ok(());
    }
    let tmp = refs.join(unique_temp_name(&path));
    fs::write(&tmp, commit)?;
    fs::rename(&tmp, path).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}
