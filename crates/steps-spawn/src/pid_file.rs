//! A server's pid file (`<runtime>/run/<pool>-r<N>.pid`, the pid and a newline) is removed only
//! while it is one provision wrote for that server: a regular file, not a link, holding the
//! recorded pid and nothing else. A state file that names another file as a replica's
//! `pid_file` (edited by hand, copied from elsewhere, the file replaced since) never makes
//! `down` delete it.

use std::io::Read;
use std::path::Path;

use provision_executor::private_file;

/// The most of a pid file read (a pid is at most 10 digits).
const MAX_READ: u64 = 64;

/// The pid a pid file holds, if it is a regular file (not a link) holding only a pid.
pub fn read(path: &Path) -> Option<u32> {
    let mut text = String::new();
    private_file::open_read(path)
        .ok()?
        .take(MAX_READ)
        .read_to_string(&mut text)
        .ok()?;
    text.trim().parse().ok()
}

/// Remove the pid file at `path` when it holds `pid` (`None`: nothing is known of the server,
/// so nothing is removed). Returns whether it was removed.
pub fn remove_if_of(path: &Path, pid: Option<u32>) -> bool {
    match pid {
        Some(pid) if read(path) == Some(pid) => std::fs::remove_file(path).is_ok(),
        _ => false,
    }
}
