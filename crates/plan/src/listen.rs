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

/// The host written into the pool's handoff URLs: `listen.advertise` (`[v6]` in brackets)
/// when set, else the address provision dials ([`connect_host`] of the bind address).
pub fn handoff_host(pool: &Pool) -> String {
    match pool.listen.as_ref().and_then(|l| l.advertise.as_deref()) {
        Some(a) => match a.trim().parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
            _ => a.trim().to_string(),
        },
        None => connect_host(&bind_host(pool)),
    }
}

/// A host name as DNS allows it (RFC 1123: dot-separated labels of letters, digits and `-`,
/// none starting or ending with `-`, at most 63 characters each and 253 in all).
fn is_host_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// The problem of `listen.advertise`, if any.
fn check_advertise(advertise: &str) -> Option<String> {
    let a = advertise.trim();
    match a.parse::<IpAddr>() {
        Ok(ip) if ip.is_unspecified() => Some(format!(
            "`{a}` is a wildcard address: nobody can connect to it"
        )),
        Ok(_) => None,
        Err(_) if is_host_name(a) && !a.chars().all(|c| c.is_ascii_digit() || c == '.') => None,
        Err(_) => Some(format!("`{a}` is neither a host name nor an IP address")),
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
    if let Some(problem) = pool
        .listen
        .as_ref()
        .and_then(|l| l.advertise.as_deref())
        .filter(|_| !external)
        .and_then(check_advertise)
    {
        error(
            "listen.advertise",
            problem,
            "write the host name or IP address other hosts reach this one by (e.g. gpu1.example.com or 10.0.0.5), without scheme or port",
        );
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

    #[test]
    fn advertised_hosts() {
        for ok in ["gpu1.example.com", "gpu1", "10.0.0.5", "fe80::1", "a-b.c."] {
            assert_eq!(check_advertise(ok), None, "{ok}");
        }
        for bad in [
            "0.0.0.0",
            "::",
            "http://gpu1",
            "gpu1:8080",
            "-gpu",
            "gpu_1.example",
            "",
            "10.0.0.300",
            "a..b",
        ] {
            assert!(check_advertise(bad).is_some(), "{bad}");
        }
    }
}
