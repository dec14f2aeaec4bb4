//! A lock file released cleanly vouches that no apply still holds a lock through a removed lock
//! file at its path, so the next acquire need not read `/proc/locks` (see
//! [`crate::lock_holders`]). Reading `/proc/locks` takes the kernel's file-lock rwsem for
//! writing, which waits for an RCU grace period: 5–15 ms on the machines measured, most of a
//! warm re-apply (BENCHMARKS.md, "Issue 13 regressions traced").
//!
//! An apply that releases the lock writes [`MARKER`] into the file; the last change to the
//! file is then that write, so its change time equals its modification time. The marker is
//! trusted only while both hold: the content is exactly the marker and the file's ctime equals
//! its mtime. Anything else — a new (empty) file, the record of a holder that was killed, a
//! file renamed, linked or chmod-ed since (each sets the ctime alone) — takes the full check.
//!
//! Why that is enough: an apply X holding a removed file Fx locked it while Fx was at the path.
//! The file F now at the path was created empty, so the first apply to lock F checked
//! `/proc/locks` and found no such X; after that, whoever locks a file at the path locks F,
//! unless F leaves the path (removed: a new empty file follows; renamed away and back: its
//! ctime moves). What it does not stop: someone who writes the marker into the lock file by
//! hand while another apply holds a removed one, or renames the file away and back within the
//! clock tick of its release on a kernel without fine-grained timestamps (before Linux 6.13).

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};

/// What a cleanly released lock file holds: shaped as a holder record (of no process, pid 0),
/// so that an earlier provision, which takes only an empty file or a holder record for its
/// lock file, still takes it.
pub(crate) const MARKER: &[u8] = b"{\"pid\":0,\"host\":\"\",\"started_at\":\"released\"}\n";

/// Whether `file` holds exactly [`MARKER`].
pub(crate) fn is_marker(file: &File) -> bool {
    if !file
        .metadata()
        .is_ok_and(|m| m.len() == MARKER.len() as u64)
    {
        return false;
    }
    let mut text = [0u8; MARKER.len()];
    file.read_exact_at(&mut text, 0).is_ok() && text == MARKER
}

/// Whether the (locked) `file` was released cleanly and not touched since (see the module).
pub(crate) fn vouched(file: &File) -> bool {
    let Ok(meta) = file.metadata() else {
        return false;
    };
    let untouched = (meta.ctime(), meta.ctime_nsec()) == (meta.mtime(), meta.mtime_nsec());
    untouched && is_marker(file)
}

/// Release `file` (still locked): the holder record replaced by [`MARKER`].
pub(crate) fn mark(file: &File) {
    if file.set_len(0).is_ok() {
        let _ = file.write_all_at(MARKER, 0);
    }
    let _ = file.sync_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marked(dir: &std::path::Path) -> (std::path::PathBuf, File) {
        let path = dir.join("state.json.lock");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .unwrap();
        file.write_all_at(b"{\"pid\":1,\"host\":\"h\",\"started_at\":\"t\"}", 0)
            .unwrap();
        mark(&file);
        (path, file)
    }

    #[test]
    fn a_released_file_vouches_until_it_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let (path, file) = marked(dir.path());
        assert!(vouched(&file));
        assert_eq!(std::fs::read(&path).unwrap(), MARKER);

        // Renamed away and back (a file locked at the path meanwhile would be removed by it).
        let (path, file) = marked(dir.path());
        assert!(vouched(&file));
        // Past the clock tick of the release: a kernel without fine-grained timestamps gives
        // a rename in the same tick the same time (see the module).
        std::thread::sleep(std::time::Duration::from_millis(20));
        let away = dir.path().join("away");
        std::fs::rename(&path, &away).unwrap();
        std::fs::rename(&away, &path).unwrap();
        assert!(!vouched(&file));

        // A new, empty file and a killed holder's record do not vouch.
        let empty = File::create(dir.path().join("new.lock")).unwrap();
        assert!(!vouched(&empty));
        let (_, file) = marked(dir.path());
        file.set_len(0).unwrap();
        file.write_all_at(b"{\"pid\":1,\"host\":\"h\",\"started_at\":\"t\"}", 0)
            .unwrap();
        assert!(!vouched(&file));
    }

    #[test]
    fn a_released_lock_is_taken_again_as_released_not_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.json");
        drop(crate::lock::acquire(&state, false).unwrap());
        let lock = crate::lock::lock_path(&state);
        assert_eq!(std::fs::read(&lock).unwrap(), MARKER);
        let again = crate::lock::acquire(&state, false).unwrap();
        assert!(again.took_over.is_none(), "{:?}", again.took_over);
        assert_ne!(
            std::fs::read(&lock).unwrap(),
            MARKER,
            "the holder is recorded"
        );
    }
}
