//! The host a step inspects: its PATH, its os-release file, whether we are root, and the
//! filesystem root under which the CUDA toolkit is looked for. Injectable for tests.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use crate::distro::OsRelease;
use crate::which::find_on_path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The PATH to search.
    pub path: OsString,
    /// The os-release file (default `/etc/os-release`).
    pub os_release: PathBuf,
    /// Running as root: installs run without `sudo -n`.
    pub is_root: bool,
    /// Where `/usr/local/cuda`, `/opt/cuda` and `/usr/local/cuda-*` are looked for (default `/`).
    pub fs_root: PathBuf,
}

impl Host {
    /// This machine.
    pub fn current() -> Host {
        Host {
            path: std::env::var_os("PATH").unwrap_or_default(),
            os_release: PathBuf::from("/etc/os-release"),
            // SAFETY: geteuid(2) has no preconditions and cannot fail.
            is_root: unsafe { libc::geteuid() } == 0,
            fs_root: PathBuf::from("/"),
        }
    }

    /// A host with `path` as PATH and everything else like this machine.
    pub fn with_path(path: impl Into<OsString>) -> Host {
        Host {
            path: path.into(),
            ..Host::current()
        }
    }

    pub fn find(&self, command: &str) -> Option<PathBuf> {
        find_on_path(command, &self.path)
    }

    pub fn path(&self) -> &OsStr {
        &self.path
    }

    /// The parsed os-release file (`None` when it is missing or unreadable).
    pub fn os_release(&self) -> Option<OsRelease> {
        OsRelease::read(&self.os_release)
    }

    pub fn fs_root(&self) -> &Path {
        &self.fs_root
    }
}
