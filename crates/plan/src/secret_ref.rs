//! Reading a secret given by reference ([`SecretRef`]: `{env: NAME}` or `{file: PATH}`) at
//! apply time. The value is never stored: not in the plan (which holds the reference), the
//! state, a log or the server's argv.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

pub use crate::config::SecretRef;

/// A key file larger than this is not a key.
const MAX_FILE: u64 = 64 * 1024;

impl SecretRef {
    /// `{env: NAME}` or `{file: PATH}`, for messages (never the value).
    pub fn describe(&self) -> String {
        match self {
            SecretRef::Env(name) => format!("env {name}"),
            SecretRef::File(path) => format!("file {path}"),
        }
    }

    /// The secret. `expand` fills in a file path's placeholders (`${config_dir}`). The error
    /// names the variable or file and what to do, never a value.
    pub fn resolve(&self, expand: impl Fn(&str) -> String) -> Result<String, String> {
        let value = match self {
            SecretRef::Env(name) => std::env::var(name).map_err(|_| {
                format!("the API key variable {name} is not set (or not UTF-8) in provision's environment")
            })?,
            SecretRef::File(path) => read_key_file(&expand(path))?,
        };
        let value = value.trim_end_matches(['\n', '\r']).to_string();
        if value.is_empty() || value.contains(['\0', '\n']) {
            return Err(format!(
                "the API key from {} is empty or spans several lines",
                self.describe()
            ));
        }
        Ok(value)
    }
}

fn read_key_file(path: &str) -> Result<String, String> {
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK: opening a FIFO does not wait for a writer (it is refused just below).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("cannot read the API key file {path}: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read the API key file {path}: {e}"))?;
    if meta.len() > MAX_FILE {
        return Err(format!(
            "the API key file {path} is not a regular file of at most {MAX_FILE} bytes"
        ));
    }
    // Checked on the descriptor it is read from: a file swapped in after the check is not read.
    if let Some(problem) = key_file_problem("API key file", path, &meta) {
        return Err(format!("{}; {}", problem.what, problem.fix));
    }
    let mut text = String::new();
    file.take(MAX_FILE)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read the API key file {path}: {e}"))?;
    Ok(text)
}

/// Mode bits that let anyone but the owner read, write or run a file.
const NOT_OWNER: u32 = 0o077;

/// Why a private key file may not be used, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFileProblem {
    pub what: String,
    pub fix: String,
}

/// What is wrong with a private key file (`what`: "API key file", "TLS private key file") at
/// `path`, from the metadata of its open descriptor: it must be a regular file, owned by this
/// user or root (another user could change the key under a server), that group and others may
/// neither read nor write (as ssh refuses a loose identity file). `None` when it is private.
pub fn key_file_problem(
    what: &str,
    path: &str,
    meta: &std::fs::Metadata,
) -> Option<KeyFileProblem> {
    if !meta.is_file() {
        return Some(KeyFileProblem {
            what: format!("the {what} {path} is not a regular file"),
            fix: "point the config at the file itself".into(),
        });
    }
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me && meta.uid() != 0 {
        return Some(KeyFileProblem {
            what: format!(
                "the {what} {path} belongs to uid {}, neither this user (uid {me}) nor root: another user could change the key",
                meta.uid()
            ),
            fix: format!("run `chown {me} {path}` (or keep the key in a file of your own), then apply again"),
        });
    }
    let mode = meta.permissions().mode() & 0o777;
    (mode & NOT_OWNER != 0).then(|| KeyFileProblem {
        what: format!(
            "the {what} {path} is accessible by group or others (mode {mode:04o}): no server was started with it"
        ),
        fix: format!("run `chmod 600 {path}` (only its owner may read it), then apply again"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_their_problems() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "k3y\n").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let r = SecretRef::File("${d}/key".into());
        let at = |s: &str| s.replace("${d}", &dir.path().display().to_string());
        assert_eq!(r.resolve(at).unwrap(), "k3y");
        std::fs::write(&key, "").unwrap();
        assert!(r.resolve(at).unwrap_err().contains("empty"));
        let missing = SecretRef::File("${d}/nope".into()).resolve(at).unwrap_err();
        assert!(missing.contains("/nope"), "{missing}");
        let unset = SecretRef::Env("PROVISION_TEST_SURELY_UNSET_VAR".into())
            .resolve(|s| s.to_string())
            .unwrap_err();
        assert!(unset.contains("PROVISION_TEST_SURELY_UNSET_VAR is not set"));
    }

    #[test]
    fn a_loose_or_foreign_key_file_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "k3y\n").unwrap();
        let r = SecretRef::File(key.display().to_string());
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(r
            .resolve(|s| s.to_string())
            .unwrap_err()
            .contains("chmod 600"));
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(r.resolve(|s| s.to_string()).unwrap(), "k3y");
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // Owned by another user (nobody), mode 0600: that user could change the key.
            std::os::unix::fs::chown(&key, Some(65534), None).unwrap();
            let err = r.resolve(|s| s.to_string()).unwrap_err();
            assert!(err.contains("belongs to uid 65534"), "{err}");
        }
    }
}
