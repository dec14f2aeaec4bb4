//! The model-resolve step: make the GGUF present and verified, and say where it is.
//!
//! - Local files (`PATH`, `file:PATH`, bare names in `model.cache_dir`) are used where they
//!   are; provision never moves or deletes them.
//! - `hf:` refs go to the standard Hugging Face cache (see [`crate::hf`]).
//! - `https://` refs go to `<cache_dir>/by-url/<hash of the URL>/<file name>`.
//!
//! Every file's sha256 is cached by its identity (see [`crate::digest`]) in
//! `${cache}/models/digests.json`: a warm apply reads zero bytes of the model. A model is
//! hashed when the step runs, never in its check: the check's facts give a file not hashed yet
//! the digest [`NOT_HASHED`], so the step starts at once (its progress in its log, see
//! [`crate::hash_progress`]) beside the build, and its run settles the digest it found
//! ([`provision_executor::Outcome::settled`]). A `checksum`
//! from the config is compared with it; a mismatch fails with both digests and changes nothing
//! the user owns (a bad download is kept aside as `<file>.bad`).
//!
//! A split model (`<prefix>-00001-of-0000N.gguf`, llama.cpp's `gguf-split` names) is resolved
//! whole: every shard is found beside the first (local), fetched from the same commit (`hf:`)
//! or from the URL the name pattern gives (`https://`), and verified; the server is given the
//! first. `hf:ORG/REPO:QUANT` lists the repository and picks the file (see [`crate::quant`]).
//! A config `checksum` is the sha256 of one file: it is refused for a split model.
//!
//! Outputs: `path` (absolute path of the GGUF, the first shard of a split one: `${model_path}`
//! of dependents), `digest` (`sha256:<hex>`; of a split model, the sha256 of its shards'
//! digests, see [`crate::digest::set_digest`]), `size` (bytes, of every shard),
//! `architecture` (from the GGUF header).

use std::fs;
use std::path::{Path, PathBuf};

use provision_executor::{Cancel, Facts, Outcome, StepContext, StepError};
use provision_plan::model_ref::ModelRef;
use provision_plan::outputs::ModelResolveOutputs;
use provision_plan::split_name::{SplitName, SPLIT_CHECKSUM_HELP};
use provision_plan::step::ModelResolve;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::digest::{set_digest, DigestCache, Digested, FileIdentity};
use crate::download::{download, Download, DownloadError};
use crate::hash_progress::HashLog;
use crate::hf::{is_commit, link_snapshot, remote, HfEnv, HfFile, HubError};
use crate::http::{display_url, header, normalize_etag};
use crate::quant::QuantError;

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
    /// Every file of the model, `path` first: its shards when it is split.
    pub shards: Vec<PathBuf>,
}

impl Resolved {
    /// A model of several files, resolved one by one (the first first).
    fn of_shards(parts: Vec<Resolved>, check: Check) -> Resolved {
        if parts.len() == 1 {
            return parts.into_iter().next().expect("one");
        }
        let digests: Vec<String> = parts.iter().map(|p| p.digest.clone()).collect();
        Resolved {
            path: parts[0].path.clone(),
            size: parts.iter().map(|p| p.size).sum(),
            digest: match check {
                Check::Digest => set_digest(&digests),
                Check::Presence => String::new(),
            },
            bytes_read: parts.iter().map(|p| p.bytes_read).sum(),
            fetched: parts.iter().map(|p| p.fetched).sum(),
            shards: parts.into_iter().flat_map(|p| p.shards).collect(),
        }
    }
}

/// `key` of shard `k` (1-based) in the facts: the first shard's keys are a whole model's.
fn shard_key(k: u32, key: &str) -> String {
    if k == 1 {
        key.to_string()
    } else {
        format!("shard{k}.{key}")
    }
}

/// The files of the model whose first file is `path`: its shards by name (see
/// [`SplitName`]), else `path` alone.
fn shard_paths(path: &Path) -> Vec<PathBuf> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    match SplitName::parse(name) {
        Some(split) => split
            .shards()
            .into_iter()
            .map(|n| path.with_file_name(n))
            .collect(),
        None => vec![path.to_path_buf()],
    }
}

/// A checksum is for one file: refused for a split model (`what` names it).
fn no_split_checksum(
    what: &str,
    split: Option<&SplitName>,
    checksum: Option<&str>,
) -> Result<(), StepError> {
    match (split, checksum) {
        (Some(s), Some(_)) => Err(StepError::new(format!(
            "`provisioning.model.checksum` is the sha256 of one file, and {what} is a split model of {} shards",
            s.count
        ))
        .hint(SPLIT_CHECKSUM_HELP)),
        _ => Ok(()),
    }
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

/// The digest fact of a local file the digest cache does not have (yet): the step runs, hashes
/// it and settles the real one.
pub const NOT_HASHED: &str = "not hashed yet";

/// Facts that decide whether model-resolve is fresh, without downloading or hashing:
/// local files: identity (path, size, mtime, inode) and the digest cached when the step last
/// read it ([`NOT_HASHED`] when there is none: the run hashes it); `hf:`: the commit and etag the revision resolves
/// to (the hub when reachable, else the cache); URLs: the server's ETag (or the one recorded at
/// download). Of a split model, every shard's (`shard<k>.` keys from the second); of
/// `hf:ORG/REPO:QUANT`, also the file picked (`hf.file`).
pub fn facts_for(source: &ModelRef, at: &Where, env: &ModelEnv) -> Result<Facts, StepError> {
    let mut facts = Facts::new();
    match source {
        ModelRef::Path { .. } | ModelRef::Cached { .. } => {
            let path = local_path(source, at).expect("local");
            for (k, shard) in (1..).zip(shard_paths(&path)) {
                local_facts(&mut facts, k, &shard, at);
            }
        }
        ModelRef::Hf {
            repo,
            file,
            revision,
        } => hf_facts(&mut facts, repo, file, revision, env)?,
        ModelRef::HfQuant {
            repo,
            quant,
            revision,
        } => match pick_quant(repo, quant, revision, env, &mut |_| {}) {
            Ok(file) => {
                facts.insert("hf.file".into(), file.clone());
                hf_facts(&mut facts, repo, &file, revision, env)?;
            }
            Err(Picked::Refused(e)) => return Err(e),
            Err(Picked::Unreachable(_)) => {
                facts.insert("hf.file".into(), "unknown".into());
            }
        },
        ModelRef::Url { url } => {
            let dest = url_dest(url, &at.cache_dir);
            for (k, (url, dest)) in (1..).zip(shard_urls(url, &dest)) {
                facts.insert(shard_key(k, "url.etag"), url_etag(&url, &dest));
            }
        }
    }
    Ok(facts)
}

/// The identity and the cached digest of shard `k` of a local model (the file is not read).
fn local_facts(facts: &mut Facts, k: u32, path: &Path, at: &Where) {
    match at.digests.cached(path) {
        Ok((identity, digest)) => {
            facts.insert(shard_key(k, "file"), identity.path.clone());
            facts.insert(shard_key(k, "size"), identity.size.to_string());
            facts.insert(shard_key(k, "mtime_ns"), identity.mtime_ns.to_string());
            facts.insert(shard_key(k, "inode"), identity.inode.to_string());
            let digest = digest.unwrap_or_else(|| NOT_HASHED.into());
            facts.insert(shard_key(k, "digest"), digest);
        }
        Err(e) => {
            facts.insert(shard_key(k, "file"), format!("unreadable: {e}"));
        }
    }
}

/// The facts of a local model once its run has hashed every shard: what the next check will
/// find. `None` for other refs (their facts need no hashing), or when a shard is still not
/// hashed (it changed while it was read: the next apply hashes it again).
fn settled_facts(source: &ModelRef, at: &Where) -> Option<Facts> {
    let path = local_path(source, at)?;
    let mut facts = Facts::new();
    for (k, shard) in (1..).zip(shard_paths(&path)) {
        local_facts(&mut facts, k, &shard, at);
    }
    let hashed = facts
        .iter()
        .filter(|(key, _)| key.ends_with("digest"))
        .all(|(_, v)| v != NOT_HASHED);
    hashed.then_some(facts)
}

/// The commit and etag of an `hf:` file, and the etag of every other shard of a split one
/// at that commit.
fn hf_facts(
    facts: &mut Facts,
    repo: &str,
    file: &str,
    revision: &str,
    env: &ModelEnv,
) -> Result<(), StepError> {
    let f = HfFile::new(repo, file, revision).map_err(StepError::new)?;
    let (commit, etag) = hf_fact(&f, env)?;
    facts.insert("hf.commit".into(), commit.clone());
    facts.insert("hf.etag".into(), etag);
    if let Some(split) = SplitName::parse(file) {
        for k in 2..=split.count {
            let f = HfFile::new(repo, &split.shard(k), &commit).map_err(StepError::new)?;
            facts.insert(shard_key(k, "hf.etag"), hf_fact(&f, env)?.1);
        }
    }
    Ok(())
}

/// The commit and etag of one `hf:` file: the hub's when it answers, else the cache's.
fn hf_fact(f: &HfFile, env: &ModelEnv) -> Result<(String, String), StepError> {
    let http = env.hf.http();
    Ok(match remote(&env.hf, &http, f) {
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
    })
}

/// The server's ETag of a URL (or Last-Modified), else the one recorded at download.
fn url_etag(url: &str, dest: &Path) -> String {
    let http = crate::http::Http::new(None);
    match http.request("HEAD", url, &[], true) {
        Ok((resp, _)) if resp.status().is_success() => header(&resp, "etag")
            .map(normalize_etag)
            .or_else(|| header(&resp, "last-modified").map(str::to_string)),
        _ => None,
    }
    .or_else(|| recorded_etag(dest))
    .unwrap_or_else(|| "unknown".into())
}

/// The URL and the download path of every shard of the model at `url` (downloaded to
/// `dest`): the others' URLs by llama.cpp's name pattern (the query kept), their files beside
/// the first's.
fn shard_urls(url: &str, dest: &Path) -> Vec<(String, PathBuf)> {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    let (base, rest) = url.split_at(end);
    match SplitName::parse(base) {
        Some(split) => split
            .shards()
            .into_iter()
            .map(|u| {
                let name = u.rsplit('/').next().unwrap_or(&u).to_string();
                (format!("{u}{rest}"), dest.with_file_name(name))
            })
            .collect(),
        None => vec![(url.to_string(), dest.to_path_buf())],
    }
}

/// Why `hf:ORG/REPO:QUANT` picked no file.
enum Picked {
    /// The hub or the repository said no, or no one file matches: the step fails.
    Refused(StepError),
    /// Neither the hub nor the cache could list the repository.
    Unreachable(StepError),
}

/// The file `hf:ORG/REPO:QUANT` means: from the hub's listing of the repository, else from
/// the cache's snapshot of the revision.
fn pick_quant(
    repo: &str,
    quant: &str,
    revision: &str,
    env: &ModelEnv,
    log: &mut dyn FnMut(String),
) -> Result<String, Picked> {
    let what = format!("hf:{repo}:{quant}@{revision}");
    let listing = match crate::hf_list::list(&env.hf, &env.hf.http(), repo, revision) {
        Ok(l) => l,
        Err(HubError::Refused {
            message,
            hint,
            status,
        }) if status < 500 => return Err(Picked::Refused(StepError::new(message).hint(hint))),
        Err(e) => match crate::hf_list::cached(&env.hf, repo, revision) {
            Some(l) => {
                log(format!(
                    "{e}; picking {what} among the cached files of commit {}",
                    l.commit
                ));
                l
            }
            None => {
                return Err(Picked::Unreachable(
                    StepError::new(format!(
                        "{e}, and {what} is not in the Hugging Face cache {}",
                        env.hf.hub_cache.display()
                    ))
                    .hint("check the network and HF_ENDPOINT, or name the file in the ref"),
                ))
            }
        },
    };
    let example = |file: &str| format!("hf:{repo}/{file}");
    let file = crate::quant::pick(&listing.files, quant).map_err(|e| {
        Picked::Refused(match e {
            QuantError::None { available } if available.is_empty() => StepError::new(format!(
                "{what}: the repository has no GGUF model file (commit {})",
                listing.commit
            ))
            .hint("check the repo in `provisioning.model.ref`"),
            QuantError::None { available } => StepError::new(format!(
                "{what}: no model file has the quant `{quant}`; quants available: {}",
                available.join(", ")
            ))
            .hint(format!(
                "write one of them after the colon (`hf:{repo}:{}`), or name the file (`{}`)",
                available[0],
                example("FILE.gguf")
            )),
            QuantError::Several { matches } => StepError::new(format!(
                "{what}: {} model files have the quant `{quant}`: {}",
                matches.len(),
                matches.join(", ")
            ))
            .hint(format!(
                "name the file in the ref, e.g. `{}`",
                example(&matches[0])
            )),
        })
    })?;
    log(format!("{what} is {file} (commit {})", listing.commit));
    Ok(file)
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

/// The digest of `path` from the cache, or by reading it, a line of progress logged each
/// half second of the read (see [`crate::hash_progress`]).
fn digest_logged(
    at: &Where,
    path: &Path,
    cancel: &Cancel,
    log: &mut dyn FnMut(String),
) -> std::io::Result<Digested> {
    let mut progress = HashLog::new(path, log);
    at.digests.digest_with(path, cancel, &mut |done, total| {
        progress.update(done, total)
    })
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
    log: &mut dyn FnMut(String),
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
            shards: vec![path.to_path_buf()],
        });
    }
    let d = digest_logged(at, path, cancel, log).map_err(|e| {
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
        shards: vec![path.to_path_buf()],
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
    /// Every file of the model, `path` first: its shards when it is split.
    pub shards: Vec<PathBuf>,
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
        shards: r.shards,
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
            resolve_local(&path, (checksum, check), at, cancel, log)
        }
        ModelRef::Hf {
            repo,
            file,
            revision,
        } => resolve_hf_model(
            (repo, file, revision),
            (checksum, check),
            at,
            env,
            cancel,
            log,
        ),
        ModelRef::HfQuant {
            repo,
            quant,
            revision,
        } => {
            let file = pick_quant(repo, quant, revision, env, log).map_err(|e| match e {
                Picked::Refused(e) | Picked::Unreachable(e) => e,
            })?;
            resolve_hf_model(
                (repo, &file, revision),
                (checksum, check),
                at,
                env,
                cancel,
                log,
            )
        }
        ModelRef::Url { url } => resolve_url_model(url, (checksum, check), at, cancel, log),
    }
}

/// A local model: its file, or every shard beside the first.
fn resolve_local(
    path: &Path,
    (checksum, check): (Option<&str>, Check),
    at: &Where,
    cancel: &Cancel,
    log: &mut dyn FnMut(String),
) -> Result<Resolved, StepError> {
    let split = SplitName::parse(path.file_name().and_then(|n| n.to_str()).unwrap_or(""));
    no_split_checksum(&path.display().to_string(), split.as_ref(), checksum)?;
    let shards = shard_paths(path);
    let count = shards.len();
    let mut parts = Vec::new();
    for (k, shard) in (1..).zip(&shards) {
        if !shard.is_file() {
            return Err(StepError::new(format!(
                "shard {k} of {count} of the split model {}, {}, does not exist",
                path.display(),
                shard.display()
            ))
            .hint("every shard of a split model must be beside the first, named as `gguf-split` names them: fetch the missing one, or use an `hf:` or `https://` ref of the first shard, which fetches them all"));
        }
        parts.push(verify_local(shard, checksum, at, cancel, check, log)?);
    }
    Ok(Resolved::of_shards(parts, check))
}

/// An `hf:` model: its file, or every shard of a split one, all from the commit the first
/// shard's revision resolved to.
fn resolve_hf_model(
    (repo, file, revision): (&str, &str, &str),
    (checksum, check): (Option<&str>, Check),
    at: &Where,
    env: &ModelEnv,
    cancel: &Cancel,
    log: &mut dyn FnMut(String),
) -> Result<Resolved, StepError> {
    let split = SplitName::parse(file);
    no_split_checksum(&format!("hf:{repo}/{file}"), split.as_ref(), checksum)?;
    let first = HfFile::new(repo, file, revision).map_err(StepError::new)?;
    let (r, commit) = resolve_hf(&first, (checksum, check), at, env, cancel, log)?;
    let Some(split) = split else {
        return Ok(r);
    };
    let mut parts = vec![r];
    for k in 2..=split.count {
        let f = HfFile::new(repo, &split.shard(k), &commit).map_err(StepError::new)?;
        parts.push(resolve_hf(&f, (None, check), at, env, cancel, log)?.0);
    }
    Ok(Resolved::of_shards(parts, check))
}

/// A URL model: its file, or every shard of a split one (see [`shard_urls`]).
fn resolve_url_model(
    url: &str,
    (checksum, check): (Option<&str>, Check),
    at: &Where,
    cancel: &Cancel,
    log: &mut dyn FnMut(String),
) -> Result<Resolved, StepError> {
    let shards = shard_urls(url, &url_dest(url, &at.cache_dir));
    if shards.len() > 1 && checksum.is_some() {
        let split = SplitName::parse(url.split(['?', '#']).next().unwrap_or(url));
        no_split_checksum(&display_url(url), split.as_ref(), checksum)?;
    }
    let mut parts = Vec::new();
    for (url, dest) in &shards {
        parts.push(resolve_url(url, dest, (checksum, check), at, cancel, log)?);
    }
    Ok(Resolved::of_shards(parts, check))
}

/// One `hf:` file; with the commit its revision resolved to.
fn resolve_hf(
    f: &HfFile,
    (checksum, check): (Option<&str>, Check),
    at: &Where,
    env: &ModelEnv,
    cancel: &Cancel,
    log: &mut dyn FnMut(String),
) -> Result<(Resolved, String), StepError> {
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
        let digest = digest_logged(at, &blob, cancel, log);
        if let (Some(expected), Ok(d)) = (&etag_digest, digest) {
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
    let mut r = verify_local(&snap, checksum, at, cancel, check, log)?;
    r.fetched = fetched;
    if (is_commit(&f.revision) || fetched > 0) && check == Check::Digest {
        log(format!("{what} is {} ({})", snap.display(), r.digest));
    }
    Ok((r, commit))
}

/// One URL file, downloaded to `dest`.
fn resolve_url(
    url: &str,
    dest: &Path,
    (checksum, check): (Option<&str>, Check),
    at: &Where,
    cancel: &Cancel,
    log: &mut dyn FnMut(String),
) -> Result<Resolved, StepError> {
    let dest = dest.to_path_buf();
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
    let mut r = verify_local(&dest, checksum, at, cancel, check, log)?;
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
    facts_for(&real_source(spec, cx)?, &Where::of_step(spec, cx), env)
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
    let source = real_source(spec, cx)?;
    let r = resolve(
        &source,
        spec.checksum.as_deref(),
        &at,
        env,
        &cx.cancel,
        &mut |line| log_line(&log, &line),
    )?;
    let shards = crate::shard_set::open(&r.path).map_err(|e| {
        StepError::new(format!("{} is not a usable model: {e}", r.path.display()))
            .hint("llama-server loads GGUF files only; check the ref, or download the file again")
    })?;
    let arch = shards[0]
        .header
        .get("general.architecture")
        .and_then(|v| v.as_str())
        .unwrap_or("unknown")
        .to_string();
    let split = match r.shards.len() {
        1 => String::new(),
        n => format!(", {n} shards"),
    };
    log_line(
        &cx.log,
        &format!(
            "model {} ({} bytes{split}, {}, {arch}); read {} bytes to verify, downloaded {}",
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
    let outcome = r
        .shards
        .into_iter()
        .fold(Outcome::new(outputs), |o, shard| o.artifact(shard));
    // The digests the check could only give as `NOT_HASHED`, now in the cache.
    Ok(match settled_facts(&source, &at) {
        Some(facts) => outcome.settle(facts),
        None => outcome,
    })
}
