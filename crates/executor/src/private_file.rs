//! How provision opens the files it owns in the runtime directory (lock, state, logs, pid and
//! handoff files): created 0600 in directories created 0700, and never through a symbolic link
//! (`O_NOFOLLOW`), so a link planted at one of those paths cannot make provision append to,
//! truncate or overwrite a file it does not own.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of the files provision writes: only its user reads them (logs and state may name
/// paths, ports and, in a server's own output, anything the server prints).
pub const FILE_MODE: u32 = 0o600;

/// Mode of the directories provision creates.
pub const DIR_MODE: u32 = 0o700;

/// Create `dir` and its missing parents 0700 (existing ones keep their mode).
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Create the parent directory of `path` when missing (0700).
pub fn create_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => create_dir_all(dir),
        None => Ok(()),
    }
}

/// `e`, or a clear error when the path was a symbolic link (`ELOOP` from `O_NOFOLLOW`).
pub fn explain(e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        io::Error::other(
            "it is a symbolic link, and provision does not write through links: remove the link",
        )
    } else {
        e
    }
}

/// Open `path` to append to it, creating it 0600; fails on a symbolic link, and on anything
/// that is not a regular file (a FIFO would block, a device is not a log).
pub fn open_append(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(explain)?;
    regular(file)
}

/// Append `text` to `path` (a step log), creating it 0600 and its directory 0700; never
/// through a symbolic link.
pub fn append(path: &Path, text: &str) -> io::Result<()> {
    use std::io::Write;
    create_parent(path)?;
    open_append(path)?.write_all(text.as_bytes())
}

/// Open `path` to read and write without truncating it, creating it 0600; fails on a symbolic
/// link and on anything but a regular file.
pub fn open_rw(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(explain)?;
    regular(file)
}

/// Open an existing `path` to read it; fails on a symbolic link and on anything but a regular
/// file (`NotFound` when it is missing).
pub fn open_read(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(explain)?;
    regular(file)
}

/// Create a new file (`O_EXCL`: never an existing file or link) with `mode`, exactly (the
/// umask does not widen or narrow it).
pub fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    Ok(file)
}

fn regular(file: File) -> io::Result<File> {
    let meta = file.metadata()?;
    if meta.is_file() {
        Ok(file)
    } else if meta.is_dir() {
        Err(io::Error::new(
            io::ErrorKind::IsADirectory,
            "it is a directory, not a file",
        ))
    } else {
        Err(io::Error::other("it is not a regular file"))
    }
}
