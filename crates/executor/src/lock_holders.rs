//! Who still holds a lock through a lock file that was removed (or replaced) at its path: the
//! kernel lists every `flock` in `/proc/locks` (holder pid, device, inode), and the holder's
//! `/proc/<pid>/fd` shows the file as `<path> (deleted)`. Only locks on the lock file's device
//! are looked at; processes whose open files cannot be read (another user's, without root) are
//! not seen.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The pid of a live process holding a `flock` on a removed file that was at `path`.
pub fn removed_holder(path: &Path) -> Option<u32> {
    let at_path = absolute(path)?;
    let dev = std::fs::metadata(at_path.parent()?).ok()?.dev();
    // The file at the path now is the caller's (it holds it): not a removed one.
    let current = std::fs::metadata(&at_path).ok().map(|m| m.ino());
    let removed = format!("{} (deleted)", at_path.display());
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks
        .lines()
        .filter_map(parse_flock)
        .filter(|l| l.major == libc::major(dev) && l.minor == libc::minor(dev))
        .filter(|l| Some(l.ino) != current)
        .find(|l| holds_removed(l.pid, l.ino, &removed) || holds_moved(l.pid, l.ino, &at_path))
        .map(|l| l.pid)
}

/// `path` with its directory resolved (the file itself need not exist).
pub(crate) fn absolute(path: &Path) -> Option<PathBuf> {
    Some(absolute_dir(path)?.join(path.file_name()?))
}

/// Whether process `pid` holds open inode `ino` as a provision lock file taken at `lock`
/// (its holder record says so) that has since been renamed away from it.
fn holds_moved(pid: u32, ino: u64, lock: &Path) -> bool {
    use std::io::Read;
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let lock = lock.display().to_string();
    fds.flatten().any(|fd| {
        if !std::fs::metadata(fd.path()).is_ok_and(|m| m.is_file() && m.ino() == ino) {
            return false;
        }
        let mut text = String::new();
        let read =
            std::fs::File::open(fd.path()).and_then(|f| f.take(4096).read_to_string(&mut text));
        read.is_ok()
            && serde_json::from_str::<crate::lock::Holder>(&text)
                .is_ok_and(|h| h.lock.as_deref() == Some(lock.as_str()))
    })
}

/// The directory of `path`, absolute with links resolved (as `/proc/<pid>/fd` shows it).
fn absolute_dir(path: &Path) -> Option<PathBuf> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::canonicalize(dir).ok()
}

/// One held `flock` from `/proc/locks`.
struct Flock {
    pid: u32,
    major: u32,
    minor: u32,
    ino: u64,
}

/// `1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF`; a waiter (`1: -> FLOCK ...`) holds
/// nothing, and other kinds of lock are not provision's.
fn parse_flock(line: &str) -> Option<Flock> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.get(1) != Some(&"FLOCK") {
        return None;
    }
    let pid = fields.get(4)?.parse().ok()?;
    let mut id = fields.get(5)?.split(':');
    let major = u32::from_str_radix(id.next()?, 16).ok()?;
    let minor = u32::from_str_radix(id.next()?, 16).ok()?;
    let ino = id.next()?.parse().ok()?;
    Some(Flock {
        pid,
        major,
        minor,
        ino,
    })
}

/// Whether `pid` has open the removed file `removed` with inode `ino`.
fn holds_removed(pid: u32, ino: u64, removed: &str) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == removed)
            && std::fs::metadata(fd.path()).is_ok_and(|m| m.ino() == ino)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flock_lines_are_read_and_waiters_and_posix_locks_skipped() {
        let held = parse_flock("1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF").unwrap();
        assert_eq!(
            (held.pid, held.major, held.minor, held.ino),
            (1234, 0xfd, 1, 5678)
        );
        assert!(parse_flock("1: -> FLOCK  ADVISORY  WRITE 99 fd:01:5678 0 EOF").is_none());
        assert!(parse_flock("2: POSIX  ADVISORY  WRITE 7 00:2f:12 0 EOF").is_none());
        assert!(parse_flock("garbage").is_none());
    }
}
