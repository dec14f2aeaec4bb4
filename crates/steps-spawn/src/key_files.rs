//! Private key files must be private: an `api_key: {file: PATH}` or a `listen.tls.key_file`
//! that group or others may read or write is refused before a server starts (as ssh refuses a
//! loose identity file), naming the file and `chmod 600`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use provision_executor::StepError;

/// Mode bits that let anyone but the owner read, write or run the file.
const NOT_OWNER: u32 = 0o077;

/// `what` (`API key file`, `TLS private key file`) at `path` is a regular file only its owner
/// may use; else the error says which file and how to fix it.
pub fn check_private(what: &str, path: &Path) -> Result<(), StepError> {
    let meta = std::fs::metadata(path).map_err(|e| {
        StepError::new(format!("cannot read the {what} {}: {e}", path.display())).hint(
            "check the path in the pool's config (relative paths are relative to the config file)",
        )
    })?;
    if !meta.is_file() {
        return Err(StepError::new(format!(
            "the {what} {} is not a regular file",
            path.display()
        )));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & NOT_OWNER != 0 {
        return Err(StepError::new(format!(
            "the {what} {} is accessible by group or others (mode {mode:04o}): no server was started with it",
            path.display()
        ))
        .hint(format!(
            "run `chmod 600 {}` (only its owner may read it), then apply again",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(check_private("key file", &dir.path().join("none")).is_err());
        assert!(check_private("key file", dir.path()).is_err());
    }
}
