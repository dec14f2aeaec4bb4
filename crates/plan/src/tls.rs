//! A pool's `listen.tls`: the certificate and private key its replicas serve HTTPS with. Both
//! or neither; the paths pass through to llama-server (`--ssl-cert-file`, `--ssl-key-file`:
//! flags provision owns), and provision's probes trust exactly the certificate's leaf.

use crate::config::{ListenTls, Pool, ProvisioningMode};
use crate::diagnostic::Diagnostic;
use crate::document::{join_key, Document};

/// llama-server's flag for the certificate file (only in a build with OpenSSL).
pub const CERT_FLAG: &str = "--ssl-cert-file";
/// llama-server's flag for the private key file (only in a build with OpenSSL).
pub const KEY_FLAG: &str = "--ssl-key-file";

/// The pool's certificate and key files as written in the config, when it serves HTTPS.
pub fn files(pool: &Pool) -> Option<(&str, &str)> {
    let tls = pool.listen.as_ref()?.tls.as_ref()?;
    Some((tls.cert_file.as_deref()?, tls.key_file.as_deref()?))
}

/// `https` when the pool serves TLS, else `http`.
pub fn scheme(pool: &Pool) -> &'static str {
    if files(pool).is_some() {
        "https"
    } else {
        "http"
    }
}

/// The problems of pool `path`'s `listen.tls`, located in `doc`.
pub fn check(doc: &Document, path: &str, pool: &Pool) -> Vec<Diagnostic> {
    let Some(tls) = pool.listen.as_ref().and_then(|l| l.tls.as_ref()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut error = |field: &str, message: String, help: &str| {
        let at = join_key(path, field);
        let loc = doc
            .value_location(&at)
            .or_else(|| doc.value_location(&join_key(path, "listen.tls")));
        out.push(Diagnostic::error(at, message).with_help(help).at(loc));
    };
    if pool.provisioning.mode == ProvisioningMode::External {
        // `listen` itself is refused for an external pool (listen.rs).
        return out;
    }
    let ListenTls {
        cert_file,
        key_file,
    } = tls;
    for (field, value, what) in [
        ("cert_file", cert_file, "certificate"),
        ("key_file", key_file, "private key"),
    ] {
        let at = format!("listen.tls.{field}");
        match value {
            None => error(
                &at,
                format!("`listen.tls` needs both `cert_file` and `key_file`: `{field}` is missing"),
                &format!("add `{field}: PATH` (the PEM {what} file), or remove `listen.tls` to serve plain HTTP"),
            ),
            Some(v) if v.trim().is_empty() => error(
                &at,
                format!("`listen.tls.{field}` is empty"),
                &format!("name the PEM {what} file (relative to the config file)"),
            ),
            Some(_) => {}
        }
    }
    out
}
