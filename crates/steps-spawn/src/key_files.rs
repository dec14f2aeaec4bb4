//! Private key files must be private: an `api_key: {file: PATH}` or a `listen.tls.key_file`
//! that group or others may read or write is refused before a server starts (as ssh refuses a
//! loose identity file), naming the file and `chmod 600`.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use provision_executor::StepError;
use provision_plan::secret_ref::key_file_problem;

/// `what` (`API key file`, `TLS private key file`) at `path` is a regular file of this user or
/// root that only its owner may use (checked on an open descriptor: see
/// [`key_file_problem`]); else the error says which file and how to fix it.
pub fn check_private(what: &str, path: &Path) -> Result<(), StepError> {
    let unreadable = |e: std::io::Error| {
        StepError::new(format!("cannot read the {what} {}: {e}", path.display())).hint(
            "check the path in the pool's config (relative paths are relative to the config file)",
        )
    };
    // O_NONBLOCK: opening a FIFO does not wait for a writer (refused as not a regular file).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(unreadable)?;
    let meta = file.metadata().map_err(unreadable)?;
    match key_file_problem(what, &path.display().to_string(), &meta) {
        Some(problem) => Err(StepError::new(problem.what).hint(problem.fix)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_owner_only_files_pass() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k");
        std::fs::write(&key, "k").unwrap();
        for (mode, ok) in [
            (0o600, true),
            (0o400, true),
            (0o640, false),
            (0o604, false),
            (0o620, false),
        ] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            let got = check_private("key file", &key);
            assert_eq!(got.is_ok(), ok, "{mode:o}");
            if let Err(e) = got {
                assert!(e
                    .hint
                    .unwrap()
                    .contains(&format!("chmod 600 {}", key.display())));
            }
        }
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
            std::os::unix::fs::chown(&key, Some(65534), None).unwrap();
            let err = check_private("key file", &key).unwrap_err();
            assert!(err.message.contains("belongs to uid 65534"), "{err}");
        }
        assert!(check_private("key file", &dir.path().join("none")).is_err());
        assert!(check_private("key file", dir.path()).is_err());
    }
}
