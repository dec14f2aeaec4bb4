//! The steps of each replica: spawn (its server; none for an external server), probe (ready?)
//! and handoff (the file that tells clients where it is).

use std::collections::BTreeMap;

use crate::config::{Backend, Pool, ProvisioningMode, SecretRef};
use crate::engine::{PlannedEngine, ServerArgs};
use crate::listen::{bind_host, connect_host, handoff_host, requires_key};
use crate::llama_flags::{to_redacted_argv, Flag};
use crate::redact::is_secret_env_value;
use crate::secret_placeholder::{is_valid_name, names_in, placeholder, url_with_placeholders};
use crate::secrets::StepSecrets;
use crate::step::*;
use crate::step_id::StepId;
use crate::validate::PoolInput;

use super::builder::PoolSteps;
use super::{config_path, handoff_path, redact_url, AUTO_PORT_BASE};

/// What a pool's replicas share: the server's flags, environment, address and TLS files.
pub(super) struct Server<'i> {
    /// The engine the pool runs.
    engine: &'static dyn PlannedEngine,
    flags: &'i [Flag],
    /// The flags as plans show them.
    pub(super) redacted_flags: Vec<String>,
    arg_flags: Vec<Flag>,
    /// The environment, each secret value a `${secret:env.NAME}` placeholder.
    env: BTreeMap<String, String>,
    /// The values of those placeholders.
    env_secrets: StepSecrets,
    host: String,
    tls: Option<TlsFiles>,
    scheme: &'static str,
    advertise: Option<String>,
    api_key: Option<SecretRef>,
}

impl<'i> Server<'i> {
    pub(super) fn of(input: &'i PoolInput) -> Self {
        let pool = &input.pool;
        let engine = crate::engine::planned(pool.engine);
        // An external server's flags are not provision's to set.
        let flags = if pool.provisioning.mode == ProvisioningMode::External {
            &[][..]
        } else {
            &input.flags[..]
        };
        let redacted_flags = to_redacted_argv(flags);
        let (arg_flags, env, env_secrets) = server_env(engine, pool, flags);
        let host = bind_host(pool);
        let tls = crate::tls::files(pool).map(|(cert, key)| TlsFiles {
            cert_file: config_path(cert),
            key_file: config_path(key),
        });
        let scheme = crate::tls::scheme(pool);
        let advertise = pool
            .listen
            .as_ref()
            .and_then(|l| l.advertise.as_ref())
            .map(|_| handoff_host(pool));
        let api_key = pool.api_key.as_ref().map(|k| match k {
            SecretRef::File(path) => SecretRef::File(config_path(path)),
            env => env.clone(),
        });
        Server {
            engine,
            flags,
            redacted_flags,
            arg_flags,
            env,
            env_secrets,
            host,
            tls,
            scheme,
            advertise,
            api_key,
        }
    }
}

/// What the replicas' steps take from the pool's other steps.
pub(super) struct Upstream {
    /// The server binary, and the step that makes it.
    pub(super) binary: String,
    pub(super) binary_step: Option<usize>,
    /// The model's resolve step and path (empty without a model).
    pub(super) model_step: Option<usize>,
    pub(super) model_path: String,
    /// The GPU pool's vram-fit: a gate spawns wait for, not part of their fingerprints.
    pub(super) fit: Option<usize>,
    /// Replicas in the whole config (the default handoff path depends on it).
    pub(super) total_replicas: u32,
}

/// Replica `r` of a pool.
pub(super) struct Replica<'x> {
    pub(super) input: &'x PoolInput,
    pub(super) server: &'x Server<'x>,
    pub(super) upstream: &'x Upstream,
    pub(super) r: u32,
}

impl Replica<'_> {
    /// Add the replica's spawn (unless external), probe and handoff steps.
    pub(super) fn plan(&self, steps: &mut PoolSteps) {
        let prov = &self.input.pool.provisioning;
        let (url, probe_deps, external) = if prov.mode == ProvisioningMode::External {
            let url = prov
                .external
                .as_ref()
                .map(|e| e.url.trim().trim_end_matches('/').to_string())
                .unwrap_or_default();
            (url, vec![], true)
        } else {
            let (url, spawn) = self.spawn(steps);
            (url, vec![spawn], false)
        };
        let probe = self.probe(steps, &url, probe_deps, external);
        self.handoff(steps, &url, probe, external);
    }

    /// The spawn step; the URL the server answers at, and the step's position.
    fn spawn(&self, steps: &mut PoolSteps) -> (String, usize) {
        let (pool, server, up, r) = (&self.input.pool, self.server, self.upstream, self.r);
        let pid = pool.id.as_str();
        let port = match self.input.ports.get(r as usize) {
            Some(p) => PortSpec::Fixed { port: *p },
            None => PortSpec::Auto {
                base: AUTO_PORT_BASE,
            },
        };
        let port_text = match port {
            PortSpec::Fixed { port } => port.to_string(),
            PortSpec::Auto { .. } => "${port}".into(),
        };
        let args = ServerArgs {
            binary: &up.binary,
            host: &server.host,
            port: &port_text,
            model: &up.model_path,
            tls: server.tls.as_ref(),
        };
        // What keeps the layers where the pool puts them (`--fit off` on a GPU), what makes the
        // server report them, then the flags.
        let (mut flags, mut unless_unknown) = server
            .engine
            .residency_flags(pool.backend, &server.arg_flags);
        // What makes its log report where it loaded the model, which the probe reads.
        let (report, optional) = server.engine.report_flags(pool.backend, &server.arg_flags);
        flags.extend(report);
        unless_unknown.extend(optional);
        flags.extend(server.arg_flags.iter().cloned());
        let argv = server.engine.argv(args, &flags);
        let deps = up
            .binary_step
            .into_iter()
            .chain(up.model_step)
            .chain(up.fit);
        let spawn = steps.add_with_secrets(StepId::spawn(pid, r).into(), deps, || {
            let spec = StepSpec::Spawn(Spawn {
                pool: pid.into(),
                replica: r,
                engine: pool.engine,
                backend: pool.backend,
                binary: up.binary.clone(),
                argv,
                unless_unknown,
                env: server.env.clone(),
                host: server.host.clone(),
                port,
                // Filled in from the plan's other steps (`replica_inputs`).
                reserved_ports: Default::default(),
                handoff_path: None,
                api_key: server.api_key.clone(),
                devices: pool.devices.clone(),
                log: format!("${{runtime}}/logs/{pid}-r{r}.log"),
                pid_file: format!("${{runtime}}/run/{pid}-r{r}.pid"),
                tls: server.tls.clone(),
            });
            (spec, server.env_secrets.clone())
        });
        let url = format!(
            "{}://{}:{port_text}",
            server.scheme,
            connect_host(&server.host)
        );
        (url, spawn)
    }

    /// The probe step of the server at `url`; its position.
    fn probe(&self, steps: &mut PoolSteps, url: &str, deps: Vec<usize>, external: bool) -> usize {
        let (pool, server, r) = (&self.input.pool, self.server, self.r);
        let pid = pool.id.as_str();
        steps.add_with_secrets(StepId::probe(pid, r).into(), deps, || {
            let (url, secrets) = url_with_placeholders(url, "url");
            let spec = StepSpec::Probe(Probe {
                pool: pid.into(),
                replica: r,
                engine: pool.engine,
                url,
                health_path: server.engine.health_path().into(),
                metrics: server.engine.serves_metrics(server.flags),
                timeout_ms: pool.readiness_timeout_ms,
                external,
                pinned_cert: server.tls.as_ref().map(|t| t.cert_file.clone()),
                // Filled in from the replica's other steps (`replica_inputs`).
                // The API key of a spawn that gets it as a flag or env value is the secret
                // `api_key`, by reference this one: both from its spawn (`replica_inputs`).
                handoff_path: None,
                api_key: None,
            });
            (spec, secrets.into_iter().collect())
        })
    }

    /// The handoff step, after `probe`, of the server probed at `url`.
    fn handoff(&self, steps: &mut PoolSteps, url: &str, probe: usize, external: bool) {
        let (pool, server, up, r) = (&self.input.pool, self.server, self.upstream, self.r);
        let pid = pool.id.as_str();
        let prov = &pool.provisioning;
        // Handed off at `listen.advertise` when set (probed at the bound address).
        let handoff_url = match (&server.advertise, external) {
            (Some(advertised), false) => url.replacen(
                &format!("://{}:", connect_host(&server.host)),
                &format!("://{advertised}:"),
                1,
            ),
            _ => url.to_string(),
        };
        steps.add(StepId::handoff(pid, r).into(), vec![probe], || {
            StepSpec::Handoff(Handoff {
                pool: pid.into(),
                replica: r,
                path: handoff_path(pool, r, up.total_replicas),
                engine: pool.engine.as_str().into(),
                provisioning_mode: prov.mode.as_str().into(),
                url: redact_url(&handoff_url),
                model: HandoffModel {
                    id: redact_url(&pool.model),
                    path: up.model_path.clone(),
                },
                flags: server.redacted_flags.clone(),
                devices: pool.devices.clone(),
                backend: pool.backend,
                auth: requires_key(pool).then(|| "bearer".to_string()),
                advertise: server.advertise.clone(),
                group_readable: pool.handoff_group_readable,
            })
        });
    }
}

/// The flags for a server's argv, its environment (each secret value a `${secret:env.NAME}`
/// placeholder), and the secret values. Secret flags (llama.cpp's `--api-key`, `--hf-token`)
/// reach the server in its environment (`LLAMA_API_KEY`, `HF_TOKEN`), never in its argv.
fn server_env(
    engine: &dyn PlannedEngine,
    pool: &Pool,
    flags: &[Flag],
) -> (Vec<Flag>, BTreeMap<String, String>, StepSecrets) {
    let (arg_flags, flag_env) = engine
        .secret_flags_env(flags)
        .expect("every secret flag has an environment variable");
    let mut env: BTreeMap<String, String> = pool.provisioning.env.clone();
    if pool.backend == Backend::Cuda {
        let devices: Vec<String> = pool.devices.iter().map(u32::to_string).collect();
        env.insert("CUDA_VISIBLE_DEVICES".into(), devices.join(","));
        // `devices` are nvidia-smi's indices, which follow the PCI bus; CUDA's own order is
        // fastest first, which differs on a mixed host (a 3090 beside a 3060): without this the
        // server could get another card than the one gpu-check and vram-fit looked at.
        env.insert("CUDA_DEVICE_ORDER".into(), "PCI_BUS_ID".into());
    }
    let mut secret_names: Vec<String> = pool.provisioning.secret_env.clone();
    for (var, value) in flag_env {
        env.insert(var.into(), value);
        secret_names.push(var.into());
    }
    let mut secrets = StepSecrets::default();
    for (i, (k, v)) in env.iter_mut().enumerate() {
        // A value that itself looks like a placeholder goes by reference too, so the server
        // gets it as written.
        if is_secret_env_value(k, v, &secret_names) || !names_in(v).is_empty() {
            // A variable name no placeholder can hold (with a `}`) goes by its position.
            let name = Some(format!("env.{k}"))
                .filter(|n| is_valid_name(n))
                .unwrap_or_else(|| format!("env#{i}"));
            secrets.insert(name.clone(), std::mem::replace(v, placeholder(&name)));
        }
    }
    (arg_flags, env, secrets)
}
