//! `Debug` of the step specs that carry secret values in memory (never serialised): the
//! values are shown redacted, so a failed assertion, a panic or a debug log that prints a plan
//! shows no secret. Each impl destructures its struct without `..`: a new field does not
//! compile until it is listed here.

use std::collections::BTreeMap;
use std::fmt;

use crate::redact::{redact_url, REDACTED};
use crate::step::{GitClone, ModelResolve, Probe, Spawn};

/// An optional secret: whether it is there, never what it is.
fn presence<T>(value: &Option<T>) -> Option<&'static str> {
    value.as_ref().map(|_| REDACTED)
}

impl fmt::Debug for GitClone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let GitClone {
            repo,
            git_ref,
            submodules,
            dir,
            commands,
            repo_url,
        } = self;
        f.debug_struct("GitClone")
            .field("repo", repo)
            .field("git_ref", git_ref)
            .field("submodules", submodules)
            .field("dir", dir)
            .field("commands", commands)
            .field("repo_url", &redact_url(repo_url))
            .finish()
    }
}

impl fmt::Debug for ModelResolve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ModelResolve {
            model_ref,
            source,
            checksum,
            path,
            cache_dir,
            secret_source,
        } = self;
        f.debug_struct("ModelResolve")
            .field("model_ref", model_ref)
            .field("source", source)
            .field("checksum", checksum)
            .field("path", path)
            .field("cache_dir", cache_dir)
            .field("secret_source", &presence(secret_source))
            .finish()
    }
}

impl fmt::Debug for Spawn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Spawn {
            pool,
            replica,
            backend,
            binary,
            argv,
            env,
            host,
            port,
            reserved_ports,
            handoff_path,
            api_key,
            devices,
            log,
            pid_file,
            tls,
            secret_env,
        } = self;
        // The names, and the values that are not secret (those the plan shows as they are).
        let secret_env: BTreeMap<&String, &str> = secret_env
            .iter()
            .map(|(k, v)| match env.get(k) {
                Some(shown) if shown == v => (k, v.as_str()),
                _ => (k, REDACTED),
            })
            .collect();
        f.debug_struct("Spawn")
            .field("pool", pool)
            .field("replica", replica)
            .field("backend", backend)
            .field("binary", binary)
            .field("argv", argv)
            .field("env", env)
            .field("host", host)
            .field("port", port)
            .field("reserved_ports", reserved_ports)
            .field("handoff_path", handoff_path)
            .field("api_key", api_key)
            .field("devices", devices)
            .field("log", log)
            .field("pid_file", pid_file)
            .field("tls", tls)
            .field("secret_env", &secret_env)
            .finish()
    }
}

impl fmt::Debug for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Probe {
            pool,
            replica,
            url,
            health_path,
            metrics,
            timeout_ms,
            external,
            pinned_cert,
            handoff_path,
            api_key,
            secret_url,
            secret_api_key,
        } = self;
        f.debug_struct("Probe")
            .field("pool", pool)
            .field("replica", replica)
            .field("url", url)
            .field("health_path", health_path)
            .field("metrics", metrics)
            .field("timeout_ms", timeout_ms)
            .field("external", external)
            .field("pinned_cert", pinned_cert)
            .field("handoff_path", handoff_path)
            .field("api_key", api_key)
            .field("secret_url", &redact_url(secret_url))
            .field("secret_api_key", &presence(secret_api_key))
            .finish()
    }
}
