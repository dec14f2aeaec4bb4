//! A lock file released cleanly vouches that no apply still holds a lock through a removed lock
//! file at its path, so the next acquire need not read `/proc/locks` (see
//! [`crate::lock_holders`]). Reading `/proc/locks` takes the kernel's file-lock rwsem for
//! writing, which waits for an RCU grace period: 5–15 ms on the machines measured, most of a
//! warm re-apply (BENCHMARKS.md, "Issue 13 regressions traced").
//!
//! An apply that releases the lock writes a released record naming the file (device, inode,
//! absolute path) into it; the last change to the file is then that write, so its change time
//! equals its modification time. The record is trusted only while both hold: the content is
//! exactly the record of this file at this path and the file's ctime equals its mtime. A copy of
//! a released file (another inode) or a released file moved here from another state (another
//! path) does not vouch. Anything else — a new (empty) file, the record of a holder that was killed, a
//! file renamed, linked or chmod-ed since (each sets the ctime alone) — takes the full check.
//!
//! Why that is enough: an apply X holding a removed file Fx locked it while Fx was at the path.
//! The file F now at the path was created empty, so the first apply to lock F checked
//! `/proc/locks` and found no such X; after that, whoever locks a file at the path locks F,
//! unless F leaves the path (removed: a new empty file follows; renamed away and back: its
//! ctime moves). What it does not stop: someone who writes the record into the lock file by
//! hand while another apply holds a removed one, or renames the file away and back within the
//! clock tick of its release on a kernel without fine-grained timestamps (before Linux 6.13).

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

/// The most a released record takes (its path included).
const MAX_RECORD: u64 = 8192;

/// What a cleanly released lock file holds: shaped as a holder record (of no process, pid 0),
/// so that an earlier provision, which takes only an empty file or a holder record for its
/// lock file, still takes it; its `started_at` names the file itself (device, inode and path),
/// so a copy of a released file (another inode) or another state's released file moved here
/// (another path) vouches for nothing.
fn record(file: &File, path: &Path) -> Option<Vec<u8>> {
    let meta = file.metadata().ok()?;
    let path = std::path::absolute(path).ok()?;
    let released = format!("released {}:{} {}", meta.dev(), meta.ino(), path.display());
    let text = serde_json::json!({"pid": 0, "host": "", "started_at": released}).to_string();
    Some(format!("{text}\n").into_bytes())
}

/// What the (locked) `file` holds, when it is small enough to be a record.
fn content(file: &File) -> Option<Vec<u8>> {
    let len = file.metadata().ok()?.len();
    if len == 0 || len > MAX_RECORD {
        return None;
    }
    let mut text = vec![0u8; len as usize];
    file.read_exact_at(&mut text, 0).ok()?;
    Some(text)
}

/// Whether `file` holds a released record (of this file or, copied, of another): a provision
/// lock file, which an acquire may take and overwrite.
pub(crate) fn is_marker(file: &File) -> bool {
    content(file)
        .and_then(|text| serde_json::from_slice::<serde_json::Value>(&text).ok())
        .is_some_and(|v| {
            v["pid"] == 0
                && v["started_at"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("released "))
        })
}

/// Whether the (locked) `file` at `path` was released cleanly, as this very file at this very
/// path, and not touched since (see the module).
pub(crate) fn vouched(file: &File, path: &Path) -> bool {
    let Ok(meta) = file.metadata() else {
        return false;
    };
    let untouched = (meta.ctime(), meta.ctime_nsec()) == (meta.mtime(), meta.mtime_nsec());
    untouched && record(file, path).is_some_and(|r| content(file).is_some_and(|c| c == r))
}

/// Release `file` (still locked, at `path`): the holder record replaced by a released record.
pub(crate) fn mark(file: &File, path: &Path) {
    if let Some(record) = record(file, path) {
        if file.set_len(0).is_ok() {
            let _ = file.write_all_at(&record, 0);
        }
    }
    let _ = file.sync_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLDER: &[u8] = b"{\"pid\":1,\"host\":\"h\",\"started_at\":\"t\"}";

    fn marked(dir: &Path) -> (std::path::PathBuf, File) {
        let path = dir.join("state.json.lock");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .unwrap();
        file.write_all_at(HOLDER, 0).unwrap();
        mark(&file, &path);
        (path, file)
    }

    #[test]
    fn a_released_file_vouches_until_it_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let (path, file) = marked(dir.path());
        assert!(vouched(&file, &path));
        assert!(is_marker(&file));

        // Renamed away and back (a file locked at the path meanwhile would be removed by it).
        let (path, file) = marked(dir.path());
        assert!(vouched(&file, &path));
        // Past the clock tick of the release: a kernel without fine-grained timestamps gives
        // a rename in the same tick the same time (see the module).
        std::thread::sleep(std::time::Duration::from_millis(20));
        let away = dir.path().join("away");
        std::fs::rename(&path, &away).unwrap();
        std::fs::rename(&away, &path).unwrap();
        assert!(!vouched(&file, &path));

        // A new, empty file and a killed holder's record do not vouch.
        let empty_path = dir.path().join("new.lock");
        let empty = File::create(&empty_path).unwrap();
        assert!(!vouched(&empty, &empty_path));
        let (path, file) = marked(dir.path());
        file.set_len(0).unwrap();
        file.write_all_at(HOLDER, 0).unwrap();
        assert!(!vouched(&file, &path));
    }

    #[test]
    fn a_copy_or_a_move_of_a_released_file_does_not_vouch() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _file) = marked(dir.path());
        // A copy at another path, then moved over a fresh path: another inode.
        let other = dir.path().join("other.json.lock");
        std::fs::copy(&path, &other).unwrap();
        let copy = File::open(&other).unwrap();
        assert!(is_marker(&copy), "a copy is still provision's file");
        assert!(!vouched(&copy, &other), "but names another inode");
        // The same file (same inode), looked at under another path.
        let (path, file) = marked(dir.path());
        let moved = dir.path().join("moved.json.lock");
        std::fs::hard_link(&path, &moved).unwrap();
        assert!(!vouched(&file, &moved));
    }

    #[test]
    fn a_released_lock_is_taken_again_as_released_not_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.json");
        drop(crate::lock::acquire(&state, false).unwrap());
        let lock = crate::lock::lock_path(&state);
        let released = std::fs::read(&lock).unwrap();
        assert!(is_marker(&File::open(&lock).unwrap()));
        let again = crate::lock::acquire(&state, false).unwrap();
        assert!(again.took_over.is_none(), "{:?}", again.took_over);
        assert_ne!(
            std::fs::read(&lock).unwrap(),
            released,
            "the holder is recorded"
        );
    }
}
