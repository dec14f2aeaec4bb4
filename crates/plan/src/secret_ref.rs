//! Reading a secret given by reference ([`SecretRef`]: `{env: NAME}` or `{file: PATH}`) at
//! apply time. The value is never stored: not in the plan (which holds the reference), the
//! state, a log or the server's argv.

use std::io::Read;

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
    if !meta.is_file() || meta.len() > MAX_FILE {
        return Err(format!(
            "the API key file {path} is not a regular file of at most {MAX_FILE} bytes"
        ));
    }
    let mut text = String::new();
    file.take(MAX_FILE)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read the API key file {path}: {e}"))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_their_problems() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "k3y\n").unwrap();
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
}
