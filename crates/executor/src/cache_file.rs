//! A small JSON file in provision's cache that steps (threads of one apply) and applies
//! (processes) share (tool versions, tag commits, file digests): read without a lock, since it
//! is only ever replaced whole; updated under a lock file and written with
//! [`write_atomic`](crate::state::write_atomic) (temp file, fsync, rename).
//! A file that is missing, unreadable or not the expected JSON reads as empty and is rewritten
//! by the next update: a cache is never a reason to fail.

use std::fs::{self, OpenOptions};
use std::io;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::state::{write_atomic, Durability};

/// Set by read-only commands (`plan`, `status`): caches are read, never written.
static READ_ONLY: AtomicBool = AtomicBool::new(false);

/// From now on, in this process, [`CacheFile::update`] changes nothing on disk (the caches
/// are still read). For `plan` and `status`, which promise to write nothing.
pub fn read_only() {
    READ_ONLY.store(true, Ordering::SeqCst);
}

/// A cache file holding a `T`.
#[derive(Debug)]
pub struct CacheFile<T> {
    path: PathBuf,
    contents: PhantomData<fn() -> T>,
}

impl<T> Clone for CacheFile<T> {
    fn clone(&self) -> Self {
        CacheFile {
            path: self.path.clone(),
            contents: PhantomData,
        }
    }
}

impl<T: Serialize + DeserializeOwned + Default> CacheFile<T> {
    pub fn new(path: impl Into<PathBuf>) -> CacheFile<T> {
        CacheFile {
            path: path.into(),
            contents: PhantomData,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The contents; `T::default()` when the file is missing, unreadable or corrupt.
    pub fn load(&self) -> T {
        fs::read(&self.path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Load, change with `edit`, write back: under the lock file `<name>.lock` beside it, so
    /// concurrent updates (threads or processes) all land; the write is atomic.
    /// A no-op after [`read_only`].
    pub fn update(&self, edit: impl FnOnce(&mut T)) -> io::Result<()> {
        if READ_ONLY.load(Ordering::SeqCst) {
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir)?;
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.path.with_extension("lock"))?;
        lock.lock()?;
        let mut contents = self.load();
        edit(&mut contents);
        let bytes = serde_json::to_vec_pretty(&contents).map_err(io::Error::other)?;
        write_atomic(&self.path, &bytes, Durability::Fsync)?;
        drop(lock);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    type Map = BTreeMap<String, u32>;

    #[test]
    fn missing_and_corrupt_files_read_as_empty_and_are_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let file: CacheFile<Map> = CacheFile::new(dir.path().join("sub/c.json"));
        assert!(file.load().is_empty());
        file.update(|m| {
            m.insert("a".into(), 1);
        })
        .unwrap();
        assert_eq!(file.load(), Map::from([("a".into(), 1)]));
        fs::write(file.path(), "{\"a\": 1,").unwrap();
        assert!(file.load().is_empty());
        file.update(|m| {
            m.insert("b".into(), 2);
        })
        .unwrap();
        assert_eq!(file.load(), Map::from([("b".into(), 2)]));
    }

    #[test]
    fn concurrent_updates_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        std::thread::scope(|s| {
            for t in 0..8u32 {
                let path = path.clone();
                s.spawn(move || {
                    let file: CacheFile<Map> = CacheFile::new(path);
                    for i in 0..10 {
                        file.update(|m| {
                            m.insert(format!("{t}-{i}"), t * i);
                        })
                        .unwrap();
                    }
                });
            }
        });
        let file: CacheFile<Map> = CacheFile::new(path);
        assert_eq!(file.load().len(), 80);
    }
}
