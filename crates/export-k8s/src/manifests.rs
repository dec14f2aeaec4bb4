//! The manifests of each pool: a Deployment and a Service (and the models' claim when asked),
//! as typed `k8s-openapi` objects.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use provision_plan::redact::redact_url;
use provision_plan::{PoolInput, ProvisioningMode, ValidConfig};
use serde::Serialize;

use crate::error::ExportError;
use crate::image::image_for;
use crate::model::{self, ModelLookup};
use crate::names::{labels, pool_name};
use crate::options::{check_options, ExportOptions};

use container::{args, container, Parts};
use env::{from_secret, Environment};
use probes::probes;
use pvc::pvc;
use volumes::volumes;
use workload::{deployment, service, Pod};

mod container;
mod env;
mod probes;
mod pvc;
mod resources;
mod volumes;
mod workload;

/// The extended resource NVIDIA's device plugin announces; one per GPU.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// The container and its port.
pub const CONTAINER: &str = "llama-server";
pub const PORT_NAME: &str = "http";
/// The port a replica listens on when the config names none.
pub const DEFAULT_PORT: u16 = 8080;
/// The startup probe's period; its failure threshold spans the pool's `readiness_timeout_ms`.
pub const STARTUP_PERIOD_S: i32 = 10;

/// One Kubernetes object.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Resource {
    PersistentVolumeClaim(Box<PersistentVolumeClaim>),
    Service(Box<Service>),
    Deployment(Box<Deployment>),
}

impl Resource {
    pub fn kind(&self) -> &'static str {
        match self {
            Resource::PersistentVolumeClaim(_) => "PersistentVolumeClaim",
            Resource::Service(_) => "Service",
            Resource::Deployment(_) => "Deployment",
        }
    }
}

/// The objects of one pool, in the order they are applied.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolManifests {
    pub pool: String,
    /// The Kubernetes name of the pool's Deployment and Service.
    pub name: String,
    pub resources: Vec<Resource>,
    /// The Secret the pool reads and the keys it needs in it (created by the user).
    pub secret: Option<(String, Vec<String>)>,
    /// The `kubernetes.io/tls` Secret with the pool's certificate and key (`listen.tls`;
    /// created by the user: `kubectl create secret tls NAME --cert=… --key=…`).
    pub tls_secret: Option<String>,
}

/// What an export produced: the manifests of each exported pool, and remarks for stderr.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    pub pools: Vec<PoolManifests>,
    pub warnings: Vec<String>,
}

impl Export {
    pub fn resources(&self) -> impl Iterator<Item = &Resource> {
        self.pools.iter().flat_map(|p| &p.resources)
    }
}

/// Build the manifests of a validated config. `config_dir` is where relative paths in the
/// config are relative to; `models` finds model files on this machine for memory requests.
pub fn export(
    valid: &ValidConfig,
    opts: &ExportOptions,
    config_dir: &Path,
    models: &dyn ModelLookup,
) -> Result<Export, ExportError> {
    check_options(opts)?;
    let selected = provision_plan::planner::select(valid, opts.pool.as_deref())?;
    let mut out = Export {
        pools: Vec::new(),
        warnings: Vec::new(),
    };
    // Claims already written (pools may share one with --model-claim).
    let mut claims: Vec<String> = Vec::new();
    // Replicas per claim, for its access mode.
    let mut claim_replicas: BTreeMap<String, u32> = BTreeMap::new();
    let mut pools = Vec::new();
    for input in selected {
        if input.pool.provisioning.mode == ProvisioningMode::External {
            out.warnings.push(format!(
                "pool `{}` is an external server ({}): provision does not run it, so nothing is exported for it",
                input.pool.id,
                redact_url(input.pool.provisioning.external.as_ref().map_or("", |e| e.url.as_str()))
            ));
            continue;
        }
        let built = pool(input, opts, config_dir, models, &mut out.warnings)?;
        if let Some(claim) = &built.claim {
            *claim_replicas.entry(claim.clone()).or_default() += input.pool.replicas;
        }
        pools.push(built);
    }
    for built in pools {
        let mut resources = Vec::new();
        if let (Some(size), Some(claim)) = (&opts.create_pvc, &built.claim) {
            if !claims.contains(claim) {
                claims.push(claim.clone());
                resources.push(Resource::PersistentVolumeClaim(Box::new(pvc(
                    claim,
                    &built.manifests.name,
                    size,
                    claim_replicas[claim],
                    opts,
                ))));
            }
        }
        let mut manifests = built.manifests;
        resources.append(&mut manifests.resources);
        manifests.resources = resources;
        out.pools.push(manifests);
    }
    Ok(out)
}

struct Built {
    manifests: PoolManifests,
    claim: Option<String>,
}

fn meta(
    name: &str,
    opts: &ExportOptions,
    annotations: Option<BTreeMap<String, String>>,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: opts.namespace.clone(),
        labels: Some(labels(name)),
        annotations,
        ..Default::default()
    }
}

/// The Deployment and Service of one pool, and the claim its models volume mounts.
fn pool(
    input: &PoolInput,
    opts: &ExportOptions,
    config_dir: &Path,
    models: &dyn ModelLookup,
    warnings: &mut Vec<String>,
) -> Result<Built, ExportError> {
    let pool = &input.pool;
    let name = pool_name(&pool.id);
    let secret_name = opts
        .secret
        .clone()
        .unwrap_or_else(|| format!("{name}-secrets"));
    let mut env = Environment::of(input, &secret_name, warnings)?;

    let (image, unpinned) = image_for(input, opts.image.as_deref());
    warnings.extend(unpinned);

    let port = input.ports.first().copied().unwrap_or(DEFAULT_PORT);
    // A model URL with credentials in it: the download container reads it from the Secret.
    let url_is_secret = input
        .model_ref
        .as_ref()
        .is_some_and(|(_, source)| model::url_is_secret(source));
    let placement = model::place(
        input,
        &name,
        &image,
        env.vars.get("HF_TOKEN").cloned(),
        url_is_secret.then(|| from_secret(&secret_name, "MODEL_URL")),
        opts,
        config_dir,
    )?;
    warnings.extend(placement.note.clone());
    if url_is_secret && placement.downloader.is_some() {
        env.secret_keys.push("MODEL_URL".into());
        env.secret_keys.sort();
    }

    let tls_secret = provision_plan::tls::files(pool).map(|_| format!("{name}-tls"));
    let engine = provision_plan::engine::planned(pool.engine);
    let args = args(
        engine,
        port,
        &placement.path,
        tls_secret.is_some(),
        &env.arg_flags,
    );
    let resources = resources::requirements(input, &env.arg_flags, models, opts, warnings);
    let probes = probes(
        engine.health_path(),
        pool.readiness_timeout_ms,
        tls_secret.is_some(),
    );
    let (mounts, volumes) = volumes(placement.volume, tls_secret.as_deref());
    let container = container(Parts {
        image,
        args,
        env: env.vars,
        port,
        resources,
        probes,
        mounts,
    });
    let pod = Pod {
        container,
        downloader: placement.downloader,
        volumes,
    };
    let secret_keys = env.secret_keys;
    Ok(Built {
        claim: placement.claim,
        manifests: PoolManifests {
            pool: pool.id.clone(),
            resources: vec![
                Resource::Service(Box::new(service(&name, opts, port))),
                Resource::Deployment(Box::new(deployment(input, &name, opts, pod))),
            ],
            name,
            secret: (!secret_keys.is_empty()).then_some((secret_name, secret_keys)),
            tls_secret,
        },
    })
}
