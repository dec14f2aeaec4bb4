//! A pool's `listen` address and `api_key`: what validation requires of them, and the
//! addresses the planner derives. Replicas bind 127.0.0.1 unless `listen.host` says otherwise;
//! an address other hosts can reach needs an API key given by reference (`{env: NAME}` or
//! `{file: PATH}`), which reaches the server in its environment (`LLAMA_API_KEY`), never in
//! its argv, the config or the plan.

use std::net::IpAddr;

use crate::config::{Pool, ProvisioningMode, SecretRef};
use crate::diagnostic::Diagnostic;
use crate::document::{join_key, Document};

/// The address replicas bind to when the pool says nothing.
pub const DEFAULT_HOST: &str = "127.0.0.1";

/// The address a pool's replicas bind to.
pub fn bind_host(pool: &Pool) -> String {
    pool.listen
        .as_ref()
        .map_or_else(|| DEFAULT_HOST.to_string(), |l| l.host.trim().to_string())
}

/// The address provision (and the handoff) uses to reach a replica bound to `host`: the
/// loopback address for a wildcard bind, `[v6]` in brackets.
pub fn connect_host(host: &str) -> String {
    match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_unspecified() && ip.is_ipv6() => "[::1]".into(),
        Ok(ip) if ip.is_unspecified() => DEFAULT_HOST.into(),
        Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => host.to_string(),
    }
}

/// Whether the pool's servers require an API key (`api_key`, or `--api-key` in `flags`).
pub fn requires_key(pool: &Pool) -> bool {
    pool.api_key.is_some()
        || pool
            .provisioning
            .flags
            .iter()
            .any(|f| f == "--api-key" || f.starts_with("--api-key="))
}

/// The problems of pool `path`'s `listen` and `api_key`, located in `doc`.
pub fn check(doc: &Document, path: &str, pool: &Pool) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut error = |field: &str, message: String, help: &str| {
        let at = join_key(path, field);
        let loc = doc.value_location(&at);
        out.push(Diagnostic::error(at, message).with_help(help).at(loc));
    };
    let external = pool.provisioning.mode == ProvisioningMode::External;
    if let Some(listen) = &pool.listen {
        let host = listen.host.trim();
        match host.parse::<IpAddr>() {
            Err(_) => error(
                "listen.host",
                format!("`{host}` is not an IP address"),
                "write 127.0.0.1 (this host only), 0.0.0.0 (every interface) or an address of this host",
            ),
            Ok(_) if external => error(
                "listen",
                format!("pool `{}` is external: provision starts no server to bind", pool.id),
                "remove `listen`; the external server's address is `provisioning.external.url`",
            ),
            Ok(ip) if !ip.is_loopback() && pool.api_key.is_none() => error(
                "listen.host",
                format!(
                    "pool `{}` would listen on {host}, reachable from other hosts, without an API key",
                    pool.id
                ),
                "add `api_key: {env: NAME}` or `api_key: {file: PATH}` to the pool, or listen on 127.0.0.1",
            ),
            Ok(_) => {}
        }
    }
    if let Some(key) = &pool.api_key {
        let (what, value) = match key {
            SecretRef::Env(name) => ("env", name),
            SecretRef::File(file) => ("file", file),
        };
        if external {
            error(
                "api_key",
                format!(
                    "pool `{}` is external: provision starts no server to give a key",
                    pool.id
                ),
                "remove `api_key`",
            );
        } else if value.trim().is_empty() || value.contains('\0') {
            error(
                &format!("api_key.{what}"),
                format!("`api_key.{what}` is empty"),
                "name the environment variable or the file that holds the key",
            );
        } else if pool
            .provisioning
            .flags
            .iter()
            .any(|f| f == "--api-key" || f.starts_with("--api-key="))
        {
            error(
                "api_key",
                "both `api_key` and `--api-key` in `flags` set the key".into(),
                "keep `api_key` and remove `--api-key` from `flags`",
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_hosts() {
        assert_eq!(connect_host("0.0.0.0"), "127.0.0.1");
        assert_eq!(connect_host("::"), "[::1]");
        assert_eq!(connect_host("10.1.2.3"), "10.1.2.3");
        assert_eq!(connect_host("fe80::1"), "[fe80::1]");
        assert_eq!(connect_host("127.0.0.1"), "127.0.0.1");
    }
}
