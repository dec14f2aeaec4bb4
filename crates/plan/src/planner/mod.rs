//! The planner: a validated config becomes a [`Plan`]. Pure: no processes, no network, no
//! file system. Step ids derive from content, so pools that share a repo+ref share one clone,
//! pools that share a source and normalised CMake flags share one build, and pools that share
//! a model share one resolve; replicas each get their own spawn, probe and handoff.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{Backend, Pool, ProvisioningMode, SecretRef};
use crate::diagnostic::{did_you_mean, ConfigError, Diagnostic};
use crate::listen::{bind_host, connect_host, handoff_host, requires_key};
use crate::llama_flags::{split_secret_flags, to_argv, to_redacted_argv, Flag};
use crate::memory_settings::MemorySettings;
use crate::model_ref::ModelRef;
use crate::plan::{arrange, topological_positions, Plan, PoolSummary, Roots, PLAN_VERSION};
use crate::redact::{is_secret_env_value, REDACTED};
use crate::step::*;
use crate::step_id::StepId;
use crate::validate::{PoolInput, ValidConfig};

/// The host replicas bind to unless the pool's `listen.host` says otherwise.
pub const HOST: &str = crate::listen::DEFAULT_HOST;
/// First port tried for replicas without a configured port.
pub const AUTO_PORT_BASE: u16 = 8080;
/// The one target provision builds.
pub const SERVER_TARGET: &str = "llama-server";

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

fn repo_name(url: &str) -> String {
    let trimmed = url.trim_end_matches('/');
    let last = trimmed.rsplit(['/', ':']).next().unwrap_or(trimmed);
    let last = last.strip_suffix(".git").unwrap_or(last);
    let clean: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        "repo".into()
    } else {
        clean
    }
}

/// Ids that read well and stay unique: `base` alone when only one distinct key has it,
/// `base#<hash>` otherwise.
#[derive(Default)]
struct Namer {
    keys: BTreeMap<String, BTreeSet<String>>,
}

impl Namer {
    fn register(&mut self, base: &str, key: &str) {
        // Most pools repeat a (base, key) seen before: no copies for those.
        match self.keys.get_mut(base) {
            Some(keys) if keys.contains(key) => {}
            Some(keys) => {
                keys.insert(key.to_string());
            }
            None => {
                self.keys
                    .insert(base.to_string(), BTreeSet::from([key.to_string()]));
            }
        }
    }

    fn id(&self, base: &str, key: &str) -> String {
        if self.keys.get(base).is_some_and(|k| k.len() > 1) {
            format!("{base}#{}", short_hash(&key))
        } else {
            base.to_string()
        }
    }
}

/// Content keys of a pool's shared nodes, with the base of their ids' names (`llama.cpp@b4567`,
/// `model.gguf`): [`StepId`] adds the kind.
struct Keys {
    clone: Option<(String, String)>,
    build: Option<(String, String)>,
    model: Option<(String, String)>,
}

fn source_root(input: &PoolInput) -> String {
    input
        .pool
        .provisioning
        .source
        .as_ref()
        .and_then(|s| s.build.cache_dir.as_deref())
        .map(config_path)
        .unwrap_or_else(|| "${cache}".into())
}

/// The checkout directory of `repo`: `<root>/src/<name>-<hash of repo>`. When the config uses
/// the repo at several refs, each ref gets its own directory (`-<hash of ref>` appended).
fn checkout_base(input: &PoolInput, repo: &str) -> String {
    format!(
        "{}/src/{}-{}",
        source_root(input),
        repo_name(repo),
        short_hash(&repo)
    )
}

fn keys(input: &PoolInput) -> Keys {
    let prov = &input.pool.provisioning;
    let source = prov
        .source
        .as_ref()
        .filter(|_| prov.mode == ProvisioningMode::Source);
    let clone = source.map(|s| {
        let name = repo_name(&s.repo);
        (
            format!("{name}@{}", s.git_ref.trim()),
            format!("{}\n{}\n{}", s.repo, s.git_ref.trim(), source_root(input)),
        )
    });
    let build = source.zip(input.cmake.as_ref()).map(|(s, c)| {
        let name = repo_name(&s.repo);
        let key = serde_json::json!({
            "repo": s.repo, "ref": s.git_ref.trim(), "defines": c.defines, "extra": c.extra,
            "generator": s.build.generator, "root": source_root(input),
        });
        (format!("{name}@{}", s.git_ref.trim()), key.to_string())
    });
    let model = input.model_ref.as_ref().map(|(text, r)| {
        let cache_dir = prov.model.as_ref().and_then(|m| m.cache_dir.clone());
        let key =
            serde_json::json!({"ref": text, "checksum": input.checksum, "cache_dir": cache_dir});
        (r.file_name().to_string(), key.to_string())
    });
    Keys {
        clone,
        build,
        model,
    }
}

/// The steps while the plan is built, in the order they are first added. Deps are positions
/// and pools borrowed ids until the end, when they are sorted and deduplicated once: a node
/// every pool shares (`preflight-tools`, `gpu-check`) costs one push per pool, and no id is
/// copied per use.
#[derive(Default)]
struct Builder<'a> {
    /// Each step's position, by id.
    ids: HashMap<String, usize>,
    /// The steps, their ids, deps and pools still empty.
    steps: Vec<Step>,
    deps: Vec<Vec<usize>>,
    pools: Vec<Vec<&'a str>>,
}

impl<'a> Builder<'a> {
    /// Add step `id` for `pool` (or add `pool` and `deps` to it); its position.
    fn add(
        &mut self,
        pool: &'a str,
        id: String,
        deps: impl IntoIterator<Item = usize>,
        spec: impl FnOnce() -> StepSpec,
    ) -> usize {
        let next = self.steps.len();
        let at = *self.ids.entry(id).or_insert(next);
        if at == next {
            self.steps.push(Step {
                id: String::new(),
                deps: Vec::new(),
                pools: Vec::new(),
                spec: spec(),
            });
            self.deps.push(Vec::new());
            self.pools.push(Vec::new());
        }
        self.deps[at].extend(deps);
        if self.pools[at].last() != Some(&pool) {
            self.pools[at].push(pool);
        }
        at
    }

    /// The steps in the order they were added, deps and pools sorted.
    fn into_steps(self) -> Vec<Step> {
        let mut steps = self.steps;
        for (id, at) in self.ids {
            steps[at].id = id;
        }
        for (at, (deps, mut pools)) in self.deps.into_iter().zip(self.pools).enumerate() {
            let mut deps: Vec<&str> = deps.iter().map(|&d| steps[d].id.as_str()).collect();
            deps.sort_unstable();
            deps.dedup();
            let deps = deps.into_iter().map(str::to_string).collect();
            pools.sort_unstable();
            pools.dedup();
            let step = &mut steps[at];
            step.deps = deps;
            step.pools = pools.into_iter().map(str::to_string).collect();
        }
        steps
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

    // Names of shared nodes, unique across the whole config so ids do not depend on `--pool`.
    let mut clones = Namer::default();
    let mut builds = Namer::default();
    let mut models = Namer::default();
    // Refs checked out per repo checkout directory: one checkout holds one ref at a time, so
    // a repo used at several refs gets one directory per ref.
    let mut checkout_refs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // Content keys once per pool (each is JSON and hashing); pool ids are unique once valid.
    let pool_keys: HashMap<&str, Keys> = valid
        .pools
        .iter()
        .map(|input| (input.pool.id.as_str(), keys(input)))
        .collect();
    for input in &valid.pools {
        let k = &pool_keys[input.pool.id.as_str()];
        if let (Some(source), true) = (
            &input.pool.provisioning.source,
            input.pool.provisioning.mode == ProvisioningMode::Source,
        ) {
            checkout_refs
                .entry(checkout_base(input, &source.repo))
                .or_default()
                .insert(source.git_ref.trim().to_string());
        }
        if let Some((b, key)) = &k.clone {
            clones.register(b, key);
        }
        if let Some((b, key)) = &k.build {
            builds.register(b, key);
        }
        if let Some((b, key)) = &k.model {
            models.register(b, key);
        }
    }

    let mut b = Builder::default();
    let mut summaries = Vec::new();

    // Shared checks, merged over the selected pools.
    let mut tools: Vec<ToolRequirement> = Vec::new();
    let mut allow_installs = true;
    let mut gpu_devices: BTreeSet<u32> = BTreeSet::new();
    let mut submodules: BTreeMap<String, bool> = BTreeMap::new();
    for input in &selected {
        let prov = &input.pool.provisioning;
        if prov.mode == ProvisioningMode::Source {
            allow_installs &= prov.allow_package_installs;
            let generator = prov
                .source
                .as_ref()
                .and_then(|s| s.build.generator.as_deref());
            for (name, any_of, why) in required_tools(input.pool.backend, generator) {
                let known = tools.iter().any(|t| {
                    t.name == name && t.any_of.iter().eq(any_of.iter()) && t.needed_for == why
                });
                if !known {
                    tools.push(ToolRequirement {
                        name: name.into(),
                        any_of: any_of.iter().map(|s| s.to_string()).collect(),
                        needed_for: why.into(),
                    });
                }
            }
            if let (Some((base, key)), Some(s)) =
                (&pool_keys[input.pool.id.as_str()].clone, &prov.source)
            {
                *submodules.entry(clones.id(base, key)).or_default() |= s.submodules;
            }
        }
        if input.pool.backend == Backend::Cuda && prov.mode != ProvisioningMode::External {
            gpu_devices.extend(&input.pool.devices);
        }
    }
    let preflight = (!tools.is_empty()).then(|| String::from(StepId::PreflightTools));
    let gpu_check = (!gpu_devices.is_empty()).then(|| String::from(StepId::GpuCheck));

    for input in &selected {
        let pool = &input.pool;
        let prov = &pool.provisioning;
        let pid = pool.id.as_str();
        let k = &pool_keys[pid];
        // The pool's steps, as builder positions.
        let mut pool_steps: Vec<usize> = Vec::new();
        let mut track = |at: usize| {
            pool_steps.push(at);
            at
        };

        // Engine binary.
        let (binary, binary_step) = match prov.mode {
            ProvisioningMode::Source => {
                let source = prov
                    .source
                    .as_ref()
                    .expect("validated: source mode has source");
                let cmake = input
                    .cmake
                    .as_ref()
                    .expect("validated: source mode has cmake flags");
                let pre = track(b.add(
                    pid,
                    preflight.clone().expect("source pools need tools"),
                    vec![],
                    || {
                        StepSpec::PreflightTools(PreflightTools {
                            tools: tools.to_vec(),
                            allow_package_installs: allow_installs,
                        })
                    },
                ));
                let (clone_base, clone_key) = k.clone.as_ref().expect("source pool");
                let clone_name = clones.id(clone_base, clone_key);
                let root = source_root(input);
                let name = repo_name(&source.repo);
                let git_ref = source.git_ref.trim().to_string();
                let src_dir = checkout_base(input, &source.repo);
                let src_dir = if checkout_refs.get(&src_dir).is_some_and(|r| r.len() > 1) {
                    format!("{src_dir}-{}", short_hash(&git_ref))
                } else {
                    src_dir
                };
                let with_submodules = submodules.get(&clone_name).copied().unwrap_or(false);
                let clone =
                    track(
                        b.add(pid, StepId::GitClone(clone_name).into(), vec![pre], || {
                            StepSpec::GitClone(git_clone(
                                &repo_location(&source.repo),
                                &git_ref,
                                with_submodules,
                                &src_dir,
                            ))
                        }),
                    );

                let (build_base, build_key) = k.build.as_ref().expect("source pool");
                let build_name = builds.id(build_base, build_key);
                let build_dir = format!("{root}/build/{name}-{}", short_hash(build_key));
                let configure = track(b.add(
                    pid,
                    StepId::CmakeConfigure(build_name.clone()).into(),
                    vec![clone, pre],
                    || {
                        let mut argv: Vec<String> = vec![
                            "cmake".into(),
                            "-S".into(),
                            src_dir.clone(),
                            "-B".into(),
                            build_dir.clone(),
                        ];
                        if let Some(g) = &source.build.generator {
                            argv.extend(["-G".to_string(), g.clone()]);
                        }
                        argv.extend(cmake.to_args());
                        StepSpec::CmakeConfigure(CmakeConfigure {
                            source_dir: src_dir.clone(),
                            build_dir: build_dir.clone(),
                            generator: source.build.generator.clone(),
                            defines: cmake.defines.clone(),
                            extra_args: cmake.extra.clone(),
                            cuda: cmake.cuda(),
                            argv,
                        })
                    },
                ));
                let binary = format!("{build_dir}/bin/{SERVER_TARGET}");
                let build = track(b.add(
                    pid,
                    StepId::CmakeBuild(build_name).into(),
                    vec![configure],
                    || {
                        StepSpec::CmakeBuild(CmakeBuild {
                            build_dir: build_dir.clone(),
                            target: SERVER_TARGET.into(),
                            argv: [
                                "cmake",
                                "--build",
                                &build_dir,
                                "--target",
                                SERVER_TARGET,
                                "--parallel",
                                "${jobs}",
                            ]
                            .map(String::from)
                            .to_vec(),
                            binary: binary.clone(),
                        })
                    },
                ));
                (binary, Some(build))
            }
            ProvisioningMode::Binary => {
                let path = prov
                    .binary
                    .as_ref()
                    .and_then(|b| b.path.as_deref())
                    .expect("validated");
                (config_path(path), None)
            }
            ProvisioningMode::External => (String::new(), None),
            ProvisioningMode::Container | ProvisioningMode::Package => {
                unreachable!("rejected by validation")
            }
        };

        // Model.
        let model = k.model.as_ref().map(|(base, key)| {
            let (text, source) = input
                .model_ref
                .as_ref()
                .expect("non-external pools have a model ref");
            let cache_dir = prov
                .model
                .as_ref()
                .and_then(|m| m.cache_dir.as_deref())
                .map(config_path)
                .unwrap_or_else(|| "${cache}/models".into());
            let path = match source {
                ModelRef::Path { path } => config_path(path),
                ModelRef::Cached { name } => format!("{cache_dir}/{name}"),
                ModelRef::Hf { .. } | ModelRef::Url { .. } => "${model_path}".into(),
            };
            let id = track(b.add(
                pid,
                StepId::ModelResolve(models.id(base, key)).into(),
                vec![],
                || {
                    StepSpec::ModelResolve(ModelResolve {
                        model_ref: redact_url(text),
                        source: shown_source(source),
                        checksum: input.checksum.clone(),
                        path: path.clone(),
                        cache_dir,
                        secret_source: (shown_source(source) != *source).then(|| source.clone()),
                    })
                },
            ));
            (id, path)
        });

        // Fit.
        let fit = match (&model, pool.backend, &gpu_check) {
            (Some((model_id, _)), Backend::Cuda, Some(gpu)) => {
                let memory = memory_settings(valid, input)?;
                let gpu = track(b.add(pid, gpu.clone(), vec![], || {
                    StepSpec::GpuCheck(GpuCheck {
                        devices: gpu_devices.iter().copied().collect(),
                        argv: [
                            "nvidia-smi",
                            "--query-gpu=index,uuid,name,memory.total,memory.free,driver_version,compute_cap",
                            "--format=csv,noheader,nounits",
                        ]
                        .map(String::from)
                        .to_vec(),
                    })
                }));
                Some(track(b.add(
                    pid,
                    StepId::vram_fit(pid).into(),
                    vec![*model_id, gpu],
                    || {
                        StepSpec::VramFit(VramFit {
                            pool: pid.into(),
                            devices: pool.devices.clone(),
                            memory,
                        })
                    },
                )))
            }
            (Some((model_id, _)), _, _) => Some(*model_id),
            _ => None,
        };

        // Replicas. An external server's flags are not provision's to set.
        let flags = if prov.mode == ProvisioningMode::External {
            &[][..]
        } else {
            &input.flags[..]
        };
        let redacted_flags = to_redacted_argv(flags);
        let (arg_flags, env, shown_env) = server_env(pool, flags);
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
        for r in 0..pool.replicas {
            let (url, probe_deps, external) = if prov.mode == ProvisioningMode::External {
                let url = prov
                    .external
                    .as_ref()
                    .map(|e| e.url.trim().trim_end_matches('/').to_string())
                    .unwrap_or_default();
                (url, vec![], true)
            } else {
                let port = match input.ports.get(r as usize) {
                    Some(p) => PortSpec::Fixed { port: *p },
                    None => PortSpec::Auto {
                        base: AUTO_PORT_BASE,
                    },
                };
                let port_text = match port {
                    PortSpec::Fixed { port } => port.to_string(),
                    PortSpec::Auto { .. } => "${port}".into(),
                };
                let model_path = model.as_ref().map(|m| m.1.clone()).unwrap_or_default();
                let head: Vec<String> = vec![
                    binary.clone(),
                    "--host".into(),
                    host.clone(),
                    "--port".into(),
                    port_text.clone(),
                    "--model".into(),
                    model_path,
                ];
                let tls_args = tls.iter().flat_map(|t| {
                    [
                        crate::tls::CERT_FLAG.to_string(),
                        t.cert_file.clone(),
                        crate::tls::KEY_FLAG.to_string(),
                        t.key_file.clone(),
                    ]
                });
                let head: Vec<String> = head.into_iter().chain(tls_args).collect();
                let argv: Vec<String> = head.into_iter().chain(to_argv(&arg_flags)).collect();
                let deps = binary_step.into_iter().chain(fit);
                let spawn = track(b.add(pid, StepId::spawn(pid, r).into(), deps, || {
                    StepSpec::Spawn(Spawn {
                        pool: pid.into(),
                        replica: r,
                        backend: pool.backend,
                        binary: binary.clone(),
                        argv,
                        env: shown_env.clone(),
                        host: host.clone(),
                        port,
                        // Filled in from the plan's other steps (`replica_inputs`).
                        reserved_ports: Default::default(),
                        handoff_path: None,
                        api_key: api_key.clone(),
                        devices: pool.devices.clone(),
                        log: format!("${{runtime}}/logs/{pid}-r{r}.log"),
                        pid_file: format!("${{runtime}}/run/{pid}-r{r}.pid"),
                        tls: tls.clone(),
                        secret_env: env.clone(),
                    })
                }));
                (
                    format!("{scheme}://{}:{port_text}", connect_host(&host)),
                    vec![spawn],
                    false,
                )
            };
            let probe = track(b.add(pid, StepId::probe(pid, r).into(), probe_deps, || {
                StepSpec::Probe(Probe {
                    pool: pid.into(),
                    replica: r,
                    url: redact_url(&url),
                    secret_url: if redact_url(&url) == url {
                        String::new()
                    } else {
                        url.clone()
                    },
                    health_path: "/health".into(),
                    metrics: flags.iter().any(|f| f.name == "--metrics"),
                    timeout_ms: pool.readiness_timeout_ms,
                    external,
                    pinned_cert: tls.as_ref().map(|t| t.cert_file.clone()),
                    // Filled in from the replica's other steps (`replica_inputs`).
                    handoff_path: None,
                    api_key: None,
                    secret_api_key: None,
                })
            }));
            // Handed off at `listen.advertise` when set (probed at the bound address).
            let handoff_url = match (&advertise, external) {
                (Some(advertised), false) => url.replacen(
                    &format!("://{}:", connect_host(&host)),
                    &format!("://{advertised}:"),
                    1,
                ),
                _ => url.clone(),
            };
            track(b.add(pid, StepId::handoff(pid, r).into(), vec![probe], || {
                StepSpec::Handoff(Handoff {
                    pool: pid.into(),
                    replica: r,
                    path: handoff_path(pool, r, total_replicas),
                    engine: pool.engine.as_str().into(),
                    provisioning_mode: prov.mode.as_str().into(),
                    url: redact_url(&handoff_url),
                    model: HandoffModel {
                        id: redact_url(&pool.model),
                        path: model.as_ref().map(|m| m.1.clone()).unwrap_or_default(),
                    },
                    flags: redacted_flags.clone(),
                    devices: pool.devices.clone(),
                    backend: pool.backend,
                    auth: requires_key(pool).then(|| "bearer".to_string()),
                    advertise: advertise.clone(),
                    group_readable: pool.handoff_group_readable,
                })
            }));
        }

        summaries.push((
            pool_steps,
            PoolSummary {
                id: pid.into(),
                engine: pool.engine.as_str().into(),
                backend: pool.backend,
                provisioning_mode: prov.mode.as_str().into(),
                replicas: pool.replicas,
                model: redact_url(&pool.model),
                flags: redacted_flags,
                steps: Vec::new(),
            },
        ));
    }

    let mut steps = b.into_steps();
    crate::replica_inputs::link(&mut steps);
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
    })
}

/// The memory-relevant settings of a pool's server, from its normalised flags: the vram-fit
/// step's inputs. A value the estimate cannot read is a config error at the flag.
fn memory_settings(valid: &ValidConfig, input: &PoolInput) -> Result<MemorySettings, ConfigError> {
    MemorySettings::from_flags(&input.flags).map_err(|bad| {
        let at = valid
            .pools
            .iter()
            .position(|p| p.pool.id == input.pool.id)
            .unwrap_or_default();
        ConfigError::new(
            &valid.file,
            None,
            vec![Diagnostic::error(
                format!("pools[{at}].provisioning.flags"),
                format!("pool `{}`: {}", input.pool.id, bad.message),
            )
            .with_help(bad.help)],
        )
    })
}

/// The flags for a server's argv, its environment, and that environment as shown (secret
/// values `<redacted>`). Secret flags (`--api-key`, `--hf-token`) reach the server in its
/// environment (`LLAMA_API_KEY`, `HF_TOKEN`), never in its argv.
fn server_env(
    pool: &Pool,
    flags: &[Flag],
) -> (
    Vec<Flag>,
    BTreeMap<String, String>,
    BTreeMap<String, String>,
) {
    let (arg_flags, flag_env) =
        split_secret_flags(flags).expect("every secret flag has an environment variable");
    let mut env: BTreeMap<String, String> = pool.provisioning.env.clone();
    if pool.backend == Backend::Cuda {
        let devices: Vec<String> = pool.devices.iter().map(u32::to_string).collect();
        env.insert("CUDA_VISIBLE_DEVICES".into(), devices.join(","));
    }
    let mut secret_names: Vec<String> = pool.provisioning.secret_env.clone();
    for (var, value) in flag_env {
        env.insert(var.into(), value);
        secret_names.push(var.into());
    }
    let shown = env
        .iter()
        .map(|(k, v)| {
            let secret = is_secret_env_value(k, v, &secret_names);
            (k.clone(), if secret { REDACTED.into() } else { v.clone() })
        })
        .collect();
    (arg_flags, env, shown)
}

/// A model source as plans show it: a URL's credentials redacted.
fn shown_source(source: &ModelRef) -> ModelRef {
    match source {
        ModelRef::Url { url } => ModelRef::Url {
            url: redact_url(url),
        },
        other => other.clone(),
    }
}

/// A repo as git gets it: relative paths (`./`, `../`) are relative to the config file.
fn repo_location(repo: &str) -> String {
    let r = repo.trim();
    if r.starts_with("./") || r.starts_with("../") {
        config_path(r)
    } else {
        r.to_string()
    }
}

fn git_clone(repo: &str, git_ref: &str, submodules: bool, dir: &str) -> GitClone {
    let shown = redact_url(repo);
    let mut commands: Vec<Vec<String>> = vec![
        vec![
            "git".into(),
            "clone".into(),
            "--no-checkout".into(),
            shown.clone(),
            dir.into(),
        ],
        ["git", "-C", dir, "fetch", "--force", "--tags", "origin"]
            .map(String::from)
            .to_vec(),
        ["git", "-C", dir, "checkout", "--force", "--detach", git_ref]
            .map(String::from)
            .to_vec(),
    ];
    if submodules {
        commands.push(
            [
                "git",
                "-C",
                dir,
                "submodule",
                "update",
                "--init",
                "--recursive",
                "--force",
            ]
            .map(String::from)
            .to_vec(),
        );
    }
    GitClone {
        repo: shown,
        git_ref: git_ref.into(),
        submodules,
        dir: dir.into(),
        commands,
        repo_url: repo.into(),
    }
}

type ToolSpec = (&'static str, &'static [&'static str], &'static str);

fn required_tools(backend: Backend, generator: Option<&str>) -> Vec<ToolSpec> {
    let mut tools: Vec<ToolSpec> = vec![
        ("git", &["git"], "git-clone"),
        ("cmake", &["cmake"], "cmake-configure, cmake-build"),
        ("C compiler", &["cc", "gcc", "clang"], "cmake-build"),
        ("C++ compiler", &["c++", "g++", "clang++"], "cmake-build"),
    ];
    tools.push(match generator {
        Some(g) if g.starts_with("Ninja") => {
            ("build tool", &["ninja"], "cmake-build (generator Ninja)")
        }
        Some(_) => (
            "build tool",
            &["make"],
            "cmake-build (generator Unix Makefiles)",
        ),
        None => ("build tool", &["ninja", "make"], "cmake-build"),
    });
    if backend == Backend::Cuda {
        tools.push((
            "CUDA compiler",
            &["nvcc"],
            "cmake-build with GGML_CUDA=ON (PATH, then /usr/local/cuda, /opt/cuda, /usr/local/cuda-*)",
        ));
    }
    tools
}

#[cfg(test)]
mod tests {
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
