//! The model-resolve step: make the GGUF present and verified, and say where it is.
//!
//! - Local files (`PATH`, `file:PATH`, bare names in `model.cache_dir`) are used where they
//!   are; provision never moves or deletes them.
//! - `hf:` refs go to the standard Hugging Face cache (see [`crate::hf`]).
//! - `https://` refs go to `<cache_dir>/by-url/<hash of the URL>/<file name>`.
//!
//! Every file's sha256 is cached by its identity (see [`crate::digest`]) in
//! `${cache}/models/digests.json`: a warm apply reads zero bytes of the model. A `checksum`
//! from the config is compared with it; a mismatch fails with both digests and changes nothing
//! the user owns (a bad download is kept aside as `<file>.bad`).
//!
//! Outputs: `path` (absolute path of the GGUF: `${model_path}` of dependents), `digest`
//! (`sha256:<hex>`), `size` (bytes), `architecture` (from the GGUF header).

use std::fs;
use std::path::{Path, PathBuf};

use provision_executor::{Cancel, Facts, Outcome, StepContext, StepError};
use provision_plan::model_ref::ModelRef;
use provision_plan::outputs::ModelResolveOutputs;
use provision_plan::step::ModelResolve;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::digest::{DigestCache, FileIdentity};
use crate::download::{download, Download, DownloadError};
use crate::gguf::Gguf;
use crate::hf::{is_commit, link_snapshot, remote, HfEnv, HfFile, HubError};
use crate::http::{display_url, header, normalize_etag};

/// What model-resolve needs from the environment: the hub and its token.
#[derive(Debug, Clone)]
pub struct ModelEnv {
    pub hf: HfEnv,
}

impl ModelEnv {
    /// From the process environment (`HF_ENDPOINT`, `HF_TOKEN`, `HF_HOME`, …).
    pub fn from_env() -> ModelEnv {
        ModelEnv {
            hf: HfEnv::from_env(),
        }
    }
}

/// A resolved model file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub path: PathBuf,
    pub size: u64,
    pub digest: String,
    /// Bytes of the model read from disk to verify it (0 when the digest cache had it).
    pub bytes_read: u64,
    /// Bytes downloaded.
    pub fetched: u64,
}

/// Where a ref is resolved: the model cache dir, the digest cache, and the directory relative
/// paths are relative to.
#[derive(Debug, Clone)]
pub struct Where {
    pub cache_dir: PathBuf,
    pub digests: DigestCache,
    pub base_dir: PathBuf,
}

impl Where {
    /// For a step: `model.cache_dir`, `${cache}/models/digests.json`, the config's directory.
    pub fn of_step(spec: &ModelResolve, cx: &StepContext<'_>) -> Where {
        Where {
            cache_dir: cx.path(&spec.cache_dir),
            digests: digest_cache(cx),
            base_dir: cx.path("${config_dir}"),
        }
    }
}

/// The digest cache of a plan: `${cache}/models/digests.json`.
pub fn digest_cache(cx: &StepContext<'_>) -> DigestCache {
    DigestCache::new(cx.path("${cache}/models/digests.json"))
}

fn local_path(source: &ModelRef, at: &Where) -> Option<PathBuf> {
    match source {
        ModelRef::Path { path } => {
            let p = PathBuf::from(path);
            Some(if p.is_absolute() {
                p
            } else if let Some(rest) = path.strip_prefix("~/") {
                PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(rest)
            } else {
                at.base_dir.join(p)
            })
        }
        ModelRef::Cached { name } => Some(at.cache_dir.join(name)),
        _ => None,
    }
}

/// Where a URL ref is downloaded.
pub fn url_dest(url: &str, cache_dir: &Path) -> PathBuf {
    let hash: String = Sha256::digest(url.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let name = ModelRef::Url { url: url.into() }.file_name().to_string();
    let name = if name.is_empty() || name == ".." || name == "." {
        "model.gguf".to_string()
    } else {
        name
    };
    cache_dir.join("by-url").join(hash).join(name)
}

/// Facts that decide whether model-resolve is fresh, without downloading:
/// local files: identity (path, size, mtime, inode) and the cached verified digest (hashed once
/// and cached, so later applies read nothing); `hf:`: the commit and etag the revision resolves
/// to (the hub when reachable, else the cache); URLs: the server's ETag (or the one recorded at
/// download).
pub fn facts_for(
    source: &ModelRef,
    at: &Where,
    env: &ModelEnv,
    cancel: &Cancel,
) -> Result<Facts, StepError> {
    let mut facts = Facts::new();
    match source {
        ModelRef::Path { .. } | ModelRef::Cached { .. } => {
            let path = local_path(source, at).expect("local");
            match at.digests.digest(&path, cancel) {
                Ok(d) => {
                    facts.insert("file".into(), d.identity.path.clone());
                    facts.insert("size".into(), d.identity.size.to_string());
                    facts.insert("mtime_ns".into(), d.identity.mtime_ns.to_string());
                    facts.insert("inode".into(), d.identity.inode.to_string());
                    facts.insert("digest".into(), d.digest);
                }
                Err(_) if cancel.is_cancelled() => return Err(StepError::cancelled()),
                Err(e) => {
                    facts.insert("file".into(), format!("unreadable: {e}"));
                }
            }
        }
        ModelRef::Hf {
            repo,
            file,
            revision,
        } => {
            let f = HfFile::new(repo, file, revision).map_err(StepError::new)?;
            let http = env.hf.http();
            let (commit, etag) = match remote(&env.hf, &http, &f) {
                Ok(r) => (r.commit, r.etag),
                Err(HubError::Refused {
                    message,
                    hint,
                    status,
                }) if status < 500 => return Err(StepError::new(message).hint(hint)),
                Err(_) => match f.cached_commit(&env.hf) {
                    Some(c) => {
                        let etag = f
                            .cached_etag(&env.hf, &c)
                            .unwrap_or_else(|| "absent".into());
                        (c, etag)
                    }
                    None => ("unknown".into(), "unknown".into()),
                },
            };
            facts.insert("hf.commit".into(), commit);
            facts.insert("hf.etag".into(), etag);
        }
        ModelRef::Url { url } => {
            let http = crate::http::Http::new(None);
            let dest = url_dest(url, &at.cache_dir);
            let etag = match http.request("HEAD", url, &[], true) {
                Ok((resp, _)) if resp.status().is_success() => header(&resp, "etag")
                    .map(normalize_etag)
                    .or_else(|| header(&resp, "last-modified").map(str::to_string)),
                _ => None,
            }
            .or_else(|| recorded_etag(&dest))
            .unwrap_or_else(|| "unknown".into());
            facts.insert("url.etag".into(), etag);
        }
    }
    Ok(facts)
}

fn sidecar(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".source.json");
    PathBuf::from(s)
}

fn recorded_etag(dest: &Path) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(&fs::read(sidecar(dest)).ok()?).ok()?;
    v.get("etag")?.as_str().map(String::from)
}

fn mismatch(path: &Path, expected: &str, actual: &str) -> StepError {
    StepError::new(format!(
        "checksum mismatch for {}: expected {expected}, got {actual}",
        path.display()
    ))
    .hint("the file was left as it is: fix `provisioning.model.checksum` or replace the file")
}

fn download_error(e: DownloadError) -> StepError {
    match e {
        DownloadError::Cancelled => StepError::cancelled(),
        e @ DownloadError::Mismatch { .. } => StepError::new(e.to_string())
            .hint("fix `provisioning.model.checksum`, or delete the `.bad` file once inspected"),
        e @ DownloadError::Interrupted { .. } => StepError::new(e.to_string())
            .hint("run apply again: the download resumes where it stopped"),
        e => StepError::new(e.to_string()),
    }
}

/// Verify a file already on disk: digest from the cache (or by reading it once), then the
/// checksum.
/// How much of a model file resolving reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Every byte: its sha256 (cached by file identity), compared with the checksum if any.
    Digest,
    /// None: the file is found (downloaded when missing), not hashed.
    Presence,
}

fn verify_local(
    path: &Path,
    checksum: Option<&str>,
    at: &Where,
    cancel: &Cancel,
    check: Check,
) -> Result<Resolved, StepError> {
    if check == Check::Presence {
        let size = fs::metadata(path)
            .map_err(|e| StepError::new(format!("cannot read the model {}: {e}", path.display())))?
            .len();
        return Ok(Resolved {
            path: path.to_path_buf(),
            size,
            digest: String::new(),
            bytes_read: 0,
            fetched: 0,
        });
    }
    let d = at.digests.digest(path, cancel).map_err(|e| {
        if cancel.is_cancelled() {
            StepError::cancelled()
        } else {
            StepError::new(format!("cannot read the model {}: {e}", path.display()))
        }
    })?;
    if let Some(expected) = checksum {
        if !expected.eq_ignore_ascii_case(&d.digest) {
            return Err(mismatch(path, &expected.to_ascii_lowercase(), &d.digest));
        }
    }
    Ok(Resolved {
        path: path.to_path_buf(),
        size: d.identity.size,
        digest: d.digest,
        bytes_read: d.bytes_read,
        fetched: 0,
    })
}

/// Make the model of `source` present and verified.
pub fn resolve(
    source: &ModelRef,
    checksum: Option<&str>,
    at: &Where,
    env: &ModelEnv,
    cancel: &Cancel,
    log: &mut dyn FnMut(String),
) -> Result<Resolved, StepError> {
    resolve_as(source, checksum, at, env, cancel, log, Check::Digest)
}

/// A model file found (downloaded when missing, checked as any download is) but not hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub path: PathBuf,
    pub size: u64,
    /// Bytes downloaded.
    pub fetched: u64,
}

/// Make the model of `source` present without reading a byte of a file already there (`inspect`
/// reads only its header): no digest, no checksum compare.
pub fn locate(
    source: &ModelRef,
    at: &Where,
    env: &ModelEnv,
    cancel: &Cancel,
    log: &mut dyn FnMut(String),
) -> Result<Located, StepError> {
    let r = resolve_as(source, None, at, env, cancel, log, Check::Presence)?;
    Ok(Located {
        path: r.path,
        size: r.size,
        fetched: r.fetched,
    })
}

fn resolve_as(
    source: &ModelRef,
    checksum: Option<&str>,
    at: &Where,
    env: &ModelEnv,
    cancel: &Cancel,
    log: &mut dyn FnMut(String),
    check: Check,
) -> Result<Resolved, StepError> {
    match source {
        ModelRef::Path { .. } | ModelRef::Cached { .. } => {
            let path = local_path(source, at).expect("local");
            if !path.is_file() {
                let hint = match source {
                    ModelRef::Cached { name } => format!(
                        "put `{name}` in {} (`provisioning.model.cache_dir`), or use an `hf:` or `https://` ref",
                        at.cache_dir.display()
                    ),
                    _ => "check `provisioning.model.ref`; relative paths are relative to the config file".into(),
                };
                return Err(StepError::new(format!(
                    "the model file {} does not exist",
                    path.display()
                ))
                .hint(hint));
            }
            verify_local(&path, checksum, at, cancel, check)
        }
        ModelRef::Hf {
            repo,
            file,
            revision,
        } => resolve_hf(
            &HfFile::new(repo, file, revision).map_err(StepError::new)?,
            (checksum, check),
            at,
            env,
            cancel,
            log,
        ),
        ModelRef::Url { url } => resolve_url(url, (checksum, check), at, cancel, log),
    }
}

fn resolve_hf(
    f: &HfFile,
    (checksum, check): (Option<&str>, Check),
    at: &Where,
    env: &ModelEnv,
    cancel: &Cancel,
    log: &mut dyn FnMut(String),
) -> Result<Resolved, StepError> {
    let hf = &env.hf;
    let http = hf.http();
    let what = format!("hf:{}/{}@{}", f.repo, f.file, f.revision);
    let (commit, etag, size) = match remote(hf, &http, f) {
        Ok(r) => (r.commit, r.etag, r.size),
        Err(e) => {
            let offline = match &e {
                HubError::Unreachable(_) => true,
                HubError::Refused { status, .. } => *status >= 500,
            };
            let cached = f
                .cached_commit(hf)
                .and_then(|c| f.cached_etag(hf, &c).map(|e| (c, e)));
            match (offline, cached) {
                (true, Some((c, etag))) => {
                    log(format!("{e}; using the cached {what} (commit {c})"));
                    (c, etag, None)
                }
                (_, _) => {
                    return Err(match e {
                        HubError::Refused { message, hint, .. } => {
                            StepError::new(message).hint(hint)
                        }
                        HubError::Unreachable(e) => StepError::new(format!(
                            "{e}, and {what} is not in the Hugging Face cache {}",
                            hf.hub_cache.display()
                        ))
                        .hint("check the network and HF_ENDPOINT, or put the file in the cache"),
                    })
                }
            }
        }
    };
    let blob = f.blob(hf, &etag);
    // An LFS etag is the file's sha256: the download is checked against it too.
    let etag_digest = (etag.len() == 64 && etag.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("sha256:{}", etag.to_ascii_lowercase()));
    let mut fetched = 0;
    if blob.is_file() && check == Check::Digest {
        if let (Some(expected), Ok(d)) = (&etag_digest, at.digests.digest(&blob, cancel)) {
            if d.digest != *expected {
                let bad = PathBuf::from(format!("{}.bad", blob.display()));
                log(format!(
                    "the cached {} has {}, not the hub's {expected}: moved aside to {} and downloading again",
                    blob.display(),
                    d.digest,
                    bad.display()
                ));
                fs::rename(&blob, &bad).map_err(|e| {
                    StepError::new(format!("cannot move {} aside: {e}", blob.display()))
                })?;
            }
        }
    }
    if !blob.is_file() {
        log(format!(
            "downloading {what} (commit {commit}) to {}",
            blob.display()
        ));
        let url = f.url(hf, &commit);
        let (expected, source_of) = match (checksum, &etag_digest) {
            (Some(c), _) => (Some(c.to_string()), "the config's checksum"),
            (None, Some(e)) => (Some(e.clone()), "the hub's ETag"),
            (None, None) => (None, ""),
        };
        let done = download(
            &http,
            &Download {
                url: &url,
                dest: &blob,
                expected_size: size,
                expected_digest: expected.as_deref(),
                digest_source: source_of,
            },
            cancel,
            log,
        )
        .map_err(download_error)?;
        fetched = done.fetched;
        if done.fetched > 0 {
            if let Ok(id) = FileIdentity::of(&blob) {
                at.digests.store(&id, &done.digest).ok();
            }
        }
    }
    let snap = link_snapshot(hf, f, &commit, &etag).map_err(|e| {
        StepError::new(format!(
            "cannot link the snapshot of {what} in {}: {e}",
            hf.hub_cache.display()
        ))
    })?;
    let mut r = verify_local(&snap, checksum, at, cancel, check)?;
    r.fetched = fetched;
    if (is_commit(&f.revision) || fetched > 0) && check == Check::Digest {
        log(format!("{what} is {} ({})", snap.display(), r.digest));
    }
    Ok(r)
}

fn resolve_url(
    url: &str,
    (checksum, check): (Option<&str>, Check),
    at: &Where,
    cancel: &Cancel,
    log: &mut dyn FnMut(String),
) -> Result<Resolved, StepError> {
    let dest = url_dest(url, &at.cache_dir);
    let mut fetched = 0;
    if !dest.is_file() {
        let http = crate::http::Http::new(None);
        let etag = match http.request("HEAD", url, &[], true) {
            Ok((resp, _)) if resp.status().is_success() => header(&resp, "etag")
                .map(normalize_etag)
                .or_else(|| header(&resp, "last-modified").map(str::to_string)),
            _ => None,
        };
        log(format!(
            "downloading {} to {}",
            display_url(url),
            dest.display()
        ));
        let done = download(
            &http,
            &Download {
                url,
                dest: &dest,
                expected_size: None,
                expected_digest: checksum,
                digest_source: "the config's checksum",
            },
            cancel,
            log,
        )
        .map_err(download_error)?;
        fetched = done.fetched;
        if done.fetched > 0 {
            if let Ok(id) = FileIdentity::of(&dest) {
                at.digests.store(&id, &done.digest).ok();
            }
            let record = json!({"url": display_url(url), "etag": etag});
            // 0600, a link at the name replaced, never followed.
            let _ = provision_executor::state::write_atomic(
                &sidecar(&dest),
                record.to_string().as_bytes(),
                provision_executor::Durability::NoSync,
            );
        }
    }
    let mut r = verify_local(&dest, checksum, at, cancel, check)?;
    r.fetched = fetched;
    Ok(r)
}

/// Append a line to the step's log (0600, never through a symbolic link).
pub fn log_line(log: &Path, line: &str) {
    let _ = provision_executor::private_file::append(log, &format!("{line}\n"));
}

/// The step's facts (see [`facts_for`]).
pub fn facts(
    spec: &ModelResolve,
    cx: &StepContext<'_>,
    env: &ModelEnv,
) -> Result<Facts, StepError> {
    facts_for(
        &real_source(spec, cx)?,
        &Where::of_step(spec, cx),
        env,
        &cx.cancel,
    )
}

/// The source with its credentials (`${secret:source.…}` in the spec) filled in from the
/// step's secrets: only to fetch, never to show (a URL is shown and recorded redacted). A plan
/// that lacks them (read back from JSON alone) fails here, naming the secret.
fn real_source(spec: &ModelResolve, cx: &StepContext<'_>) -> Result<ModelRef, StepError> {
    match &spec.source {
        ModelRef::Url { url } => Ok(ModelRef::Url {
            url: cx.expand_secrets(url)?,
        }),
        other => Ok(other.clone()),
    }
}

/// Run model-resolve: resolve, verify, check the GGUF header, and output `path`, `digest`,
/// `size` and `architecture`.
pub fn run(
    spec: &ModelResolve,
    cx: &StepContext<'_>,
    env: &ModelEnv,
) -> Result<Outcome, StepError> {
    let at = Where::of_step(spec, cx);
    let log = cx.log.clone();
    let r = resolve(
        &real_source(spec, cx)?,
        spec.checksum.as_deref(),
        &at,
        env,
        &cx.cancel,
        &mut |line| log_line(&log, &line),
    )?;
    let header = Gguf::open(&r.path).map_err(|e| {
        StepError::new(format!("{} is not a usable model: {e}", r.path.display()))
            .hint("llama-server loads GGUF files only; check the ref, or download the file again")
    })?;
    let arch = header
        .get("general.architecture")
        .and_then(|v| v.as_str())
        .unwrap_or("unknown")
        .to_string();
    log_line(
        &cx.log,
        &format!(
            "model {} ({} bytes, {}, {arch}); read {} bytes to verify, downloaded {}",
            r.path.display(),
            r.size,
            r.digest,
            r.bytes_read,
            r.fetched
        ),
    );
    let outputs = ModelResolveOutputs {
        path: r.path.display().to_string(),
        digest: r.digest,
        size: r.size,
        architecture: arch,
    };
    Ok(Outcome::new(outputs).artifact(r.path))
}
