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
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        if cancel.is_cancelled() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "cancelled"));
        }
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(finish(h));
        }
        h.update(&buf[..n]);
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

    /// The digest of `path`: from the cache when its identity is unchanged, else by reading it
    /// (and caching the result).
    pub fn digest(&self, path: &Path, cancel: &Cancel) -> io::Result<Digested> {
        let identity = FileIdentity::of(path)?;
        if let Some(digest) = self.lookup(&identity) {
            return Ok(Digested {
                identity,
                digest,
                bytes_read: 0,
            });
        }
        let digest = sha256_file(Path::new(&identity.path), cancel)?;
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
