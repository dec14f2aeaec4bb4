//! sha256 digests of model files, cached by file identity (path, size, mtime, ctime, inode,
//! device) in a small JSON file, so a warm apply reads zero bytes of a model it verified before.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use provision_executor::cache_file::CacheFile;
use provision_executor::Cancel;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use provision_executor::file_identity::FileIdentity;

/// `sha256:<hex>` of a hasher's state.
pub fn finish(h: Sha256) -> String {
    let bytes = h.finalize();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The digest of a model split in several files: the sha256 of its shards' digests, one
/// `sha256:<hex>` line each, the first first. Any shard that changes changes it.
pub fn set_digest(digests: &[String]) -> String {
    let mut h = Sha256::new();
    for d in digests {
        h.update(d.as_bytes());
        h.update(b"\n");
    }
    finish(h)
}

/// Hash a file, polling `cancel`. Returns `sha256:<hex>`.
pub fn sha256_file(path: &Path, cancel: &Cancel) -> io::Result<String> {
    sha256_file_with(path, cancel, &mut |_, _| {})
}

/// Hash a file, polling `cancel` and telling `progress` `(bytes hashed so far, the file's
/// size)` after each read: rising, the last call's first number the bytes read in all.
/// Returns `sha256:<hex>`.
pub fn sha256_file_with(
    path: &Path,
    cancel: &Cancel,
    progress: &mut dyn FnMut(u64, u64),
) -> io::Result<String> {
    let mut f = File::open(path)?;
    let total = f.metadata()?.len();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        if cancel.is_cancelled() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "cancelled"));
        }
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(finish(h));
        }
        h.update(&buf[..n]);
        done += n as u64;
        progress(done, total.max(done));
    }
}

/// A digest and whether the file was read to get it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digested {
    pub identity: FileIdentity,
    pub digest: String,
    /// Bytes of the file read (0 when the cache had it).
    pub bytes_read: u64,
}

/// The digest cache file: `{canonical path: {identity, digest}}`.
#[derive(Debug, Clone)]
pub struct DigestCache {
    file: CacheFile<Entries>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Entries {
    #[serde(default)]
    files: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    identity: FileIdentity,
    digest: String,
}

impl DigestCache {
    pub fn new(file: impl Into<PathBuf>) -> DigestCache {
        DigestCache {
            file: CacheFile::new(file),
        }
    }

    /// The cache file.
    pub fn file(&self) -> &Path {
        self.file.path()
    }

    /// The cached digest of a file whose identity is unchanged.
    pub fn lookup(&self, id: &FileIdentity) -> Option<String> {
        self.file
            .load()
            .files
            .get(&id.path)
            .filter(|e| e.identity == *id)
            .map(|e| e.digest.clone())
    }

    /// Record a digest (under a lock, written atomically).
    pub fn store(&self, id: &FileIdentity, digest: &str) -> io::Result<()> {
        self.file.update(|entries| {
            // Forget files that are gone, so the cache does not grow forever.
            entries.files.retain(|p, _| Path::new(p).exists());
            entries.files.insert(
                id.path.clone(),
                Entry {
                    identity: id.clone(),
                    digest: digest.into(),
                },
            );
        })
    }

    /// The identity of `path` and its cached digest, if any: the file is not read.
    pub fn cached(&self, path: &Path) -> io::Result<(FileIdentity, Option<String>)> {
        let identity = FileIdentity::of(path)?;
        let digest = self.lookup(&identity);
        Ok((identity, digest))
    }

    /// The digest of `path`: from the cache when its identity is unchanged, else by reading it
    /// (and caching the result).
    pub fn digest(&self, path: &Path, cancel: &Cancel) -> io::Result<Digested> {
        self.digest_with(path, cancel, &mut |_, _| {})
    }

    /// [`DigestCache::digest`], telling `progress` how a read goes (see [`sha256_file_with`]).
    pub fn digest_with(
        &self,
        path: &Path,
        cancel: &Cancel,
        progress: &mut dyn FnMut(u64, u64),
    ) -> io::Result<Digested> {
        let (identity, cached) = self.cached(path)?;
        if let Some(digest) = cached {
            return Ok(Digested {
                identity,
                digest,
                bytes_read: 0,
            });
        }
        let digest = sha256_file_with(Path::new(&identity.path), cancel, progress)?;
        // The file changed while it was read: do not cache a digest of a moving target.
        let after = FileIdentity::of(path)?;
        if after == identity {
            self.store(&identity, &digest)?;
        }
        Ok(Digested {
            bytes_read: identity.size,
            identity,
            digest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_rises_to_the_file_size_and_the_digest_is_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        // Three reads and a bit: a sparse file, its first bytes written.
        std::fs::write(&path, b"GGUF").unwrap();
        let size = 3 * (1 << 20) + 12_345;
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(size)
            .unwrap();
        let mut calls = Vec::new();
        let cancel = Cancel::new();
        let digest =
            sha256_file_with(&path, &cancel, &mut |done, total| calls.push((done, total))).unwrap();
        assert_eq!(digest, sha256_file(&path, &cancel).unwrap());
        assert!(calls.len() >= 4, "{calls:?}");
        assert!(calls.windows(2).all(|w| w[0].0 < w[1].0), "{calls:?}");
        assert!(calls.iter().all(|&(_, total)| total == size), "{calls:?}");
        assert_eq!(calls.last().unwrap().0, size);
    }

    #[test]
    fn a_cached_digest_reads_nothing_and_reports_no_progress() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        std::fs::write(&path, vec![7u8; 3 << 20]).unwrap();
        let cache = DigestCache::new(dir.path().join("digests.json"));
        let cancel = Cancel::new();
        let mut calls = 0;
        let first = cache
            .digest_with(&path, &cancel, &mut |_, _| calls += 1)
            .unwrap();
        assert_eq!(first.bytes_read, 3 << 20);
        assert_eq!(calls, 3);
        let (_, cached) = cache.cached(&path).unwrap();
        assert_eq!(cached.as_deref(), Some(first.digest.as_str()));
        let second = cache
            .digest_with(&path, &cancel, &mut |_, _| calls += 1)
            .unwrap();
        assert_eq!((second.bytes_read, calls), (0, 3));
        assert_eq!(second.digest, first.digest);
    }
}
