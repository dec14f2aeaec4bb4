//! Who still holds a lock through a lock file that was removed (or replaced) at its path: the
//! kernel lists every `flock` in `/proc/locks` (holder pid, device, inode), and the holder's
//! `/proc/<pid>/fd` shows the file as `<path> (deleted)`. Only locks on the lock file's device
//! are looked at; processes whose open files cannot be read (another user's, without root) are
//! not seen.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The pid of a live process holding a `flock` on a removed file that was at `path`.
pub fn removed_holder(path: &Path) -> Option<u32> {
    let dir = absolute_dir(path)?;
    let dev = std::fs::metadata(&dir).ok()?.dev();
    let removed = format!("{} (deleted)", dir.join(path.file_name()?).display());
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks
        .lines()
        .filter_map(parse_flock)
        .filter(|l| l.major == libc::major(dev) && l.minor == libc::minor(dev))
        .find(|l| holds_removed(l.pid, l.ino, &removed))
        .map(|l| l.pid)
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
