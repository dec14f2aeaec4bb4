//! Finding a command on a PATH, like `command -v`.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The first executable file named `name` in the directories of `path` (a PATH value). A name
/// with a `/` is checked as a path.
pub fn find_on_path(name: &str, path: &OsStr) -> Option<PathBuf> {
    if name.is_empty() {
        return None;
    }
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_executable(&p).then_some(p);
    }
    std::env::split_paths(path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

/// A regular file (or a link to one) with an execute bit.
pub fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn finds_the_first_executable_in_path_order() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        fs::write(a.path().join("tool"), "not executable").unwrap();
        for d in [&a, &b] {
            fs::write(d.path().join("other"), "#!/bin/sh\n").unwrap();
            fs::set_permissions(d.path().join("other"), fs::Permissions::from_mode(0o755)).unwrap();
        }
        fs::write(b.path().join("tool"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(b.path().join("tool"), fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::join_paths([a.path(), b.path()]).unwrap();
        assert_eq!(find_on_path("tool", &path), Some(b.path().join("tool")));
        assert_eq!(find_on_path("other", &path), Some(a.path().join("other")));
        assert_eq!(find_on_path("absent", &path), None);
        assert_eq!(find_on_path("", &path), None);
        // A directory is not a command.
        fs::create_dir(a.path().join("dir")).unwrap();
        assert_eq!(find_on_path("dir", &path), None);
    }
}
