//! The digest of what a llama-server binary runs: the file and the shared libraries beside it (a
//! shared-library build keeps its flags in `libllama*.so`/`libcommon*.so`).
//!
//! Each file's sha256 is cached by its identity (canonical path, size, mtime, ctime, inode,
//! device) in `${cache}/binaries/digests.json`, the same [`DigestCache`] the model digests use,
//! so an apply reads no byte of a binary it hashed before. A rebuilt or replaced file has a new
//! identity: it is read again, and a new content gives a new digest (the replicas restart).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use provision_executor::{Cancel, StepContext};
use provision_steps_model::digest::{finish, sha256_file, DigestCache, FileIdentity};
use sha2::{Digest, Sha256};

/// Where the per-file digests of binaries are cached.
pub const CACHE_FILE: &str = "${cache}/binaries/digests.json";

/// The binary digest cache of a plan: [`CACHE_FILE`].
pub fn digest_cache(cx: &StepContext<'_>) -> DigestCache {
    DigestCache::new(cx.path(CACHE_FILE))
}

/// A binary's digest and what computing it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryDigest {
    /// `sha256:<hex>`: the binary's own sha256 when no library lies beside it, else the sha256
    /// of its files' digests, one a line, in the order of `files`.
    pub digest: String,
    /// The files digested: the binary, then the libraries beside it in path order.
    pub files: Vec<PathBuf>,
    /// Bytes of those files read (0 when the cache had every one).
    pub bytes_read: u64,
}

/// The binary and the shared libraries (`lib*.so*`) in its directory, in path order.
pub fn files_of(binary: &Path) -> Vec<PathBuf> {
    let mut files = vec![binary.to_path_buf()];
    if let Some(dir) = binary.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut libs: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("lib") && n.contains(".so"))
                    })
                    .filter(|p| p.is_file())
                    .collect()
            })
            .unwrap_or_default();
        libs.sort();
        files.extend(libs);
    }
    files
}

/// The digest of `binary` (see [`BinaryDigest::digest`]), memoised per process by the
/// identities of its files, else from `cache`, else by reading the files.
pub fn binary_digest(binary: &Path, cache: &DigestCache, cancel: &Cancel) -> io::Result<String> {
    let files = files_of(binary);
    let ids = files
        .iter()
        .map(|f| FileIdentity::of(f))
        .collect::<io::Result<Vec<_>>>()?;
    let key = format!("{}\n{ids:?}", cache.file().display());
    static MEMO: OnceLock<Mutex<BTreeMap<String, String>>> = OnceLock::new();
    let memo = MEMO.get_or_init(Default::default);
    if let Some(d) = memo.lock().expect("lock").get(&key) {
        return Ok(d.clone());
    }
    let digest = digest_files(files, cache, cancel)?.digest;
    memo.lock().expect("lock").insert(key, digest.clone());
    Ok(digest)
}

/// The digest of `binary` from `cache` or by reading its files, without the per-process memo.
pub fn compute(binary: &Path, cache: &DigestCache, cancel: &Cancel) -> io::Result<BinaryDigest> {
    digest_files(files_of(binary), cache, cancel)
}

fn digest_files(
    files: Vec<PathBuf>,
    cache: &DigestCache,
    cancel: &Cancel,
) -> io::Result<BinaryDigest> {
    let mut digests = Vec::with_capacity(files.len());
    let mut bytes_read = 0;
    for f in &files {
        let (digest, read) = file_digest(f, cache, cancel)?;
        digests.push(digest);
        bytes_read += read;
    }
    let digest = match digests.as_slice() {
        [one] => one.clone(),
        all => {
            let mut h = Sha256::new();
            for d in all {
                h.update(d.as_bytes());
                h.update(b"\n");
            }
            finish(h)
        }
    };
    Ok(BinaryDigest {
        digest,
        files,
        bytes_read,
    })
}

/// One file's digest and the bytes read for it. Unlike [`DigestCache::digest`], a cache that
/// cannot be written (a read-only cache directory) costs a read next time, not the apply.
fn file_digest(path: &Path, cache: &DigestCache, cancel: &Cancel) -> io::Result<(String, u64)> {
    let id = FileIdentity::of(path)?;
    if let Some(digest) = cache.lookup(&id) {
        return Ok((digest, 0));
    }
    let digest = sha256_file(Path::new(&id.path), cancel)?;
    // A file that changed while it was read: its digest describes neither version; not cached.
    if FileIdentity::of(path)? == id {
        let _ = cache.store(&id, &digest);
    }
    Ok((digest, id.size))
}
