//! The planner: a validated config becomes a [`Plan`]. Pure: no processes, no network, no
//! file system. Step ids derive from content, so pools that share a repo+ref share one clone,
//! pools that share a source and normalised CMake flags share one build, and pools that share
//! a model share one resolve; replicas each get their own spawn, probe and handoff.

use std::fmt::Write as _;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::Pool;
use crate::diagnostic::{did_you_mean, ConfigError, Diagnostic};
use crate::plan::{arrange, topological_positions, Plan, PoolSummary, Roots, PLAN_VERSION};
use crate::validate::{PoolInput, ValidConfig};

use builder::{Builder, PoolSteps};
use checks::Checks;
use names::Names;
use replica::{Replica, Server, Upstream};

mod build;
mod builder;
mod checks;
mod gpu;
mod mode;
mod model;
mod names;
mod replica;

/// The host replicas bind to unless the pool's `listen.host` says otherwise.
pub const HOST: &str = crate::listen::DEFAULT_HOST;
/// First port tried for replicas without a configured port.
pub const AUTO_PORT_BASE: u16 = 8080;

#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub roots: Roots,
    /// Plan only this pool.
    pub pool: Option<String>,
}

/// First 8 hex digits of the sha256 of the canonical JSON of `value`.
pub fn short_hash(value: &impl Serialize) -> String {
    let canonical = serde_json::to_vec(&serde_json::to_value(value).expect("serialisable"))
        .expect("serialisable");
    let digest = Sha256::digest(&canonical);
    let mut hex = String::with_capacity(8);
    for b in &digest[..4] {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

pub use crate::redact::redact_url;

/// A path from the config: absolute as is, relative to the config file otherwise.
fn config_path(p: &str) -> String {
    if p.starts_with('/') || p.starts_with("${") {
        p.to_string()
    } else {
        format!("${{config_dir}}/{}", p.trim_start_matches("./"))
    }
}

/// The handoff file of replica `r` of `pool`, before root expansion. The default is
/// `${runtime}/engines/llamacpp.json` when the config has exactly one replica, and
/// `${runtime}/engines/llamacpp-<pool>-r<N>.json` otherwise. A pool's `handoff_path` overrides
/// it; with several replicas `-r<N>` goes before the extension.
pub fn handoff_path(pool: &Pool, r: u32, total_replicas: u32) -> String {
    match &pool.handoff_path {
        Some(p) if pool.replicas > 1 => {
            let p = config_path(p);
            let (dir, name) = p.rsplit_once('/').map_or(("", p.as_str()), |(d, n)| (d, n));
            let with = match name.rsplit_once('.') {
                Some((stem, ext)) if !stem.is_empty() => format!("{stem}-r{r}.{ext}"),
                _ => format!("{name}-r{r}"),
            };
            if dir.is_empty() {
                with
            } else {
                format!("{dir}/{with}")
            }
        }
        Some(p) => config_path(p),
        None if total_replicas == 1 => "${runtime}/engines/llamacpp.json".into(),
        None => format!("${{runtime}}/engines/llamacpp-{}-r{r}.json", pool.id),
    }
}

/// Pick the pools to plan: all, or the one `--pool` names (an error naming the nearest id).
pub fn select<'a>(
    valid: &'a ValidConfig,
    pool: Option<&str>,
) -> Result<Vec<&'a PoolInput>, ConfigError> {
    let Some(wanted) = pool else {
        return Ok(valid.pools.iter().collect());
    };
    let found: Vec<&PoolInput> = valid.pools.iter().filter(|p| p.pool.id == wanted).collect();
    if found.is_empty() {
        let ids: Vec<&str> = valid.pools.iter().map(|p| p.pool.id.as_str()).collect();
        let help = match did_you_mean(wanted, ids.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!(
                "the config has: {}",
                ids.iter()
                    .map(|i| format!("`{i}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        return Err(ConfigError::new(
            &valid.file,
            None,
            vec![
                Diagnostic::error("", format!("--pool `{wanted}` names no pool in the config"))
                    .with_help(help),
            ],
        ));
    }
    Ok(found)
}

/// Build the plan for a validated config.
pub fn plan(valid: &ValidConfig, opts: &PlanOptions) -> Result<Plan, ConfigError> {
    let selected = select(valid, opts.pool.as_deref())?;
    let total_replicas: u32 = valid.pools.iter().map(|p| p.pool.replicas).sum();
    let names = Names::of(valid);
    let checks = Checks::of(&selected, &names);

    let mut b = Builder::default();
    let mut summaries = Vec::new();
    let mut ledger = gpu::Ledger::default();
    for &input in &selected {
        let pool = &input.pool;
        let mut steps = PoolSteps::new(&mut b, pool.id.as_str());
        let (binary, binary_step) = mode::binary(&mut steps, input, &names, &checks);
        let model = model::resolve(&mut steps, input, &names);
        let fit = gpu::fit(
            &mut steps,
            valid,
            input,
            model.as_ref().map(|m| (m.0, &m.2)),
            &checks,
            &mut ledger,
        )?;
        let server = Server::of(input);
        let upstream = Upstream {
            binary,
            binary_step,
            model_step: model.as_ref().map(|m| m.0),
            model_path: model.map(|m| m.1).unwrap_or_default(),
            fit,
            total_replicas,
        };
        for r in 0..pool.replicas {
            let replica = Replica {
                input,
                server: &server,
                upstream: &upstream,
                r,
            };
            replica.plan(&mut steps);
        }
        summaries.push((steps.into_positions(), summary(pool, server.redacted_flags)));
    }
    finish(valid, opts, b, summaries)
}

/// A pool as the plan lists it, its steps still to fill in.
fn summary(pool: &Pool, flags: Vec<String>) -> PoolSummary {
    PoolSummary {
        id: pool.id.clone(),
        engine: pool.engine.as_str().into(),
        backend: pool.backend,
        provisioning_mode: pool.provisioning.mode.as_str().into(),
        replicas: pool.replicas,
        model: redact_url(&pool.model),
        flags,
        steps: Vec::new(),
    }
}

/// The plan of the built steps in dependency order, each pool listing its steps (builder
/// positions in `summaries`) in plan order.
fn finish(
    valid: &ValidConfig,
    opts: &PlanOptions,
    b: Builder,
    summaries: Vec<(Vec<usize>, PoolSummary)>,
) -> Result<Plan, ConfigError> {
    let (mut steps, mut secrets) = b.into_steps();
    crate::replica_inputs::link(&mut steps);
    crate::replica_inputs::link_secrets(&steps, &mut secrets);
    let order = topological_positions(&steps).map_err(|e| {
        ConfigError::new(
            &valid.file,
            None,
            vec![Diagnostic::error("", format!("internal error: {e}"))],
        )
    })?;
    // Where each builder position lands in the plan, for each pool's steps in plan order.
    let mut position = vec![0; order.len()];
    for (p, &at) in order.iter().enumerate() {
        position[at] = p;
    }
    arrange(&mut steps, &order);
    let pools = summaries
        .into_iter()
        .map(|(ats, mut s)| {
            let mut ps: Vec<usize> = ats.into_iter().map(|at| position[at]).collect();
            ps.sort_unstable();
            ps.dedup();
            s.steps = ps.into_iter().map(|p| steps[p].id.clone()).collect();
            s
        })
        .collect();
    Ok(Plan {
        plan_version: PLAN_VERSION,
        roots: opts.roots.clone(),
        pools,
        steps,
        changes: None,
        secrets,
    })
}

#[cfg(test)]
mod tests {
    use super::names::repo_name;
    use super::*;

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact_url("https://u:tok@github.com/a/b.git"),
            "https://<redacted>@github.com/a/b.git"
        );
        assert_eq!(
            redact_url("https://github.com/a/b.git"),
            "https://github.com/a/b.git"
        );
        assert_eq!(
            redact_url("git@github.com:a/b.git"),
            "git@github.com:a/b.git"
        );
    }

    #[test]
    fn repo_names() {
        assert_eq!(
            repo_name("https://github.com/ggml-org/llama.cpp.git"),
            "llama.cpp"
        );
        assert_eq!(repo_name("git@host:org/x.git/"), "x");
        assert_eq!(repo_name("file:///tmp/src repo"), "src_repo");
    }
}
