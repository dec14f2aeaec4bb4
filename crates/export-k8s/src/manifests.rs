//! The manifests of each pool: a Deployment and a Service (and the models' claim when asked),
//! as typed `k8s-openapi` objects.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SecretKeySelector, Service, ServicePort, ServiceSpec, Toleration, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use provision_plan::llama_flags::to_argv;
use provision_plan::redact::{is_secret_env_value, redact_url};
use provision_plan::{Backend, PoolInput, ProvisioningMode, ValidConfig};
use provision_steps_model::ModelInfo;
use serde::Serialize;

use crate::error::ExportError;
use crate::image::image_for;
use crate::memory::{host_need, mebibytes};
use crate::model::{self, ModelLookup};
use crate::names::{
    is_dns1123_label, is_dns1123_subdomain, is_quantity, labels, pool_name, MODEL_ANNOTATION,
    POOL_ANNOTATION,
};
use crate::options::{ExportOptions, ModelVolume};
use crate::secrets::{self, split_flags};

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

fn check_options(opts: &ExportOptions) -> Result<(), ExportError> {
    let name = |what: &str, value: &Option<String>, ok: fn(&str) -> bool, help: &str| match value {
        Some(v) if !ok(v) => Err(ExportError::usage(
            format!("{what} `{v}` is not a valid Kubernetes name"),
            help,
        )),
        _ => Ok(()),
    };
    let subdomain =
        "use lower-case letters, digits, `-` and `.`, starting and ending with a letter or digit";
    name(
        "--namespace",
        &opts.namespace,
        is_dns1123_label,
        "use up to 63 lower-case letters, digits and `-`, starting and ending with a letter or digit",
    )?;
    name(
        "--model-claim",
        &opts.model_claim,
        is_dns1123_subdomain,
        subdomain,
    )?;
    name("--secret", &opts.secret, is_dns1123_subdomain, subdomain)?;
    name(
        "--storage-class",
        &opts.storage_class,
        is_dns1123_subdomain,
        subdomain,
    )?;
    if let Some(size) = &opts.create_pvc {
        if !is_quantity(size) {
            return Err(ExportError::usage(
                format!("--create-pvc `{size}` is not a Kubernetes quantity"),
                "write a size such as `20Gi` or `500Mi`",
            ));
        }
    }
    if opts.model_volume != ModelVolume::Pvc
        && (opts.create_pvc.is_some() || opts.model_claim.is_some())
    {
        return Err(ExportError::usage(
            format!(
                "--create-pvc and --model-claim need `--model-volume pvc`, not `{}`",
                opts.model_volume.as_str()
            ),
            "drop them, or use `--model-volume pvc`",
        ));
    }
    if opts.model_dir.is_some() && opts.model_volume != ModelVolume::HostPath {
        return Err(ExportError::usage(
            "--model-dir needs `--model-volume host-path`",
            "add `--model-volume host-path`, or drop --model-dir",
        ));
    }
    if opts.max_surge > i32::MAX as u32 {
        return Err(ExportError::usage("--max-surge is too large", "use 0 or 1"));
    }
    Ok(())
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

fn pvc(
    claim: &str,
    pool_name: &str,
    size: &str,
    replicas: u32,
    opts: &ExportOptions,
) -> PersistentVolumeClaim {
    // Several pods (maybe on several nodes) mount a claim shared by several replicas.
    let access = if replicas > 1 {
        "ReadWriteMany"
    } else {
        "ReadWriteOnce"
    };
    let mut metadata = meta(claim, opts, None);
    metadata.labels = Some(labels(pool_name));
    PersistentVolumeClaim {
        metadata,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec![access.into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(size.to_string()),
                )])),
                limits: None,
            }),
            storage_class_name: opts.storage_class.clone(),
            ..Default::default()
        }),
        status: None,
    }
}

fn http_get(tls: bool) -> Option<HTTPGetAction> {
    Some(HTTPGetAction {
        path: Some("/health".into()),
        port: IntOrString::String(PORT_NAME.into()),
        scheme: tls.then(|| "HTTPS".into()),
        ..Default::default()
    })
}

/// Startup: `/health` answers 200 once the model is loaded; allowed the pool's
/// `readiness_timeout_ms`. Readiness: out of the Service while not healthy. Liveness: restarted
/// after a minute without an answer.
/// Over HTTPS when the pool serves `listen.tls` (the kubelet does not verify the certificate).
fn probes(readiness_timeout_ms: u64, tls: bool) -> (Probe, Probe, Probe) {
    let period_ms = STARTUP_PERIOD_S as u64 * 1000;
    let startup_failures = readiness_timeout_ms
        .div_ceil(period_ms)
        .clamp(1, i32::MAX as u64) as i32;
    let probe = |period: i32, failures: i32| Probe {
        http_get: http_get(tls),
        period_seconds: Some(period),
        timeout_seconds: Some(5),
        failure_threshold: Some(failures),
        ..Default::default()
    };
    (
        probe(STARTUP_PERIOD_S, startup_failures),
        probe(5, 3),
        probe(10, 6),
    )
}

fn pool(
    input: &PoolInput,
    opts: &ExportOptions,
    config_dir: &Path,
    models: &dyn ModelLookup,
    warnings: &mut Vec<String>,
) -> Result<Built, ExportError> {
    let pool = &input.pool;
    let prov = &pool.provisioning;
    let name = pool_name(&pool.id);
    let secret_name = opts
        .secret
        .clone()
        .unwrap_or_else(|| format!("{name}-secrets"));
    let from_secret = |key: &str| EnvVar {
        name: key.to_string(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret_name.clone(),
                key: key.to_string(),
                optional: None,
            }),
            ..Default::default()
        }),
    };

    // Environment: config env (secret-looking names from the Secret), then secret flags.
    let (arg_flags, flag_keys) = split_flags(&input.flags)
        .map_err(|e| ExportError::usage(format!("pool `{}`: {e}", pool.id), "remove the flag"))?;
    let mut env: BTreeMap<String, EnvVar> = BTreeMap::new();
    let mut secret_keys: Vec<String> = Vec::new();
    for (k, v) in &prov.env {
        if k == "CUDA_VISIBLE_DEVICES" {
            warnings.push(format!(
                "pool `{}`: `CUDA_VISIBLE_DEVICES` is not exported: in Kubernetes the device plugin assigns GPUs",
                pool.id
            ));
            continue;
        }
        if is_secret_env_value(k, v, &prov.secret_env) {
            env.insert(k.clone(), from_secret(k));
            secret_keys.push(k.clone());
        } else {
            env.insert(
                k.clone(),
                EnvVar {
                    name: k.clone(),
                    value: Some(v.clone()),
                    value_from: None,
                },
            );
        }
    }
    // The pool's `api_key` (by reference) comes from the Secret as well.
    let api_key = pool.api_key.as_ref().map(|_| "LLAMA_API_KEY");
    for key in flag_keys.into_iter().chain(api_key) {
        env.insert(key.to_string(), from_secret(key));
        secret_keys.push(key.to_string());
    }
    secret_keys.sort();
    secret_keys.dedup();

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
        env.get("HF_TOKEN").cloned(),
        url_is_secret.then(|| from_secret("MODEL_URL")),
        opts,
        config_dir,
    )?;
    warnings.extend(placement.note.clone());
    if url_is_secret && placement.downloader.is_some() {
        secret_keys.push("MODEL_URL".into());
        secret_keys.sort();
    }

    let mut args: Vec<String> = vec![
        "--host".into(),
        "0.0.0.0".into(),
        "--port".into(),
        port.to_string(),
        "--model".into(),
        placement.path.clone(),
    ];
    // `listen.tls`: the certificate and key from the pool's TLS Secret.
    let tls_secret = provision_plan::tls::files(pool).map(|_| format!("{name}-tls"));
    if tls_secret.is_some() {
        args.extend(secrets::tls_args());
    }
    args.extend(to_argv(&arg_flags));

    // Resources.
    let mut requests: BTreeMap<String, Quantity> = BTreeMap::new();
    let mut limits: BTreeMap<String, Quantity> = BTreeMap::new();
    if pool.backend == Backend::Cuda {
        limits.insert(
            GPU_RESOURCE.into(),
            Quantity(pool.devices.len().to_string()),
        );
    }
    if let Some(threads) = arg_flags
        .iter()
        .find(|f| f.name == "--threads")
        .and_then(|f| f.value.as_deref())
        .filter(|t| t.parse::<u32>().is_ok_and(|n| n > 0))
    {
        requests.insert("cpu".into(), Quantity(threads.to_string()));
    }
    if let Some(path) = models.local_path(input) {
        match ModelInfo::open(&path)
            .map_err(|e| e.to_string())
            .and_then(|info| host_need(&info, &input.flags, pool.backend, pool.devices.len()))
        {
            Ok(bytes) => {
                requests.insert("memory".into(), Quantity(mebibytes(bytes)));
            }
            Err(e) => warnings.push(format!(
                "pool `{}`: no memory request: cannot estimate from {}: {e}",
                pool.id,
                path.display()
            )),
        }
        if opts.model_volume == ModelVolume::Download {
            if let Ok(meta) = std::fs::metadata(&path) {
                requests.insert("ephemeral-storage".into(), Quantity(mebibytes(meta.len())));
            }
        }
    }

    let (startup, readiness, liveness) = probes(pool.readiness_timeout_ms, tls_secret.is_some());
    let mut mounts = vec![VolumeMount {
        name: model::VOLUME.into(),
        mount_path: model::MOUNT.into(),
        read_only: Some(true),
        ..Default::default()
    }];
    let mut volumes = vec![placement.volume];
    if let Some(secret) = &tls_secret {
        mounts.push(secrets::tls_mount());
        volumes.push(secrets::tls_volume(secret));
    }
    let container = Container {
        name: CONTAINER.into(),
        image: Some(image),
        args: Some(args),
        env: (!env.is_empty()).then(|| env.into_values().collect()),
        ports: Some(vec![ContainerPort {
            name: Some(PORT_NAME.into()),
            container_port: i32::from(port),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        resources: Some(ResourceRequirements {
            requests: (!requests.is_empty()).then_some(requests),
            limits: (!limits.is_empty()).then_some(limits),
            ..Default::default()
        }),
        startup_probe: Some(startup),
        readiness_probe: Some(readiness),
        liveness_probe: Some(liveness),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    let tolerations = (pool.backend == Backend::Cuda).then(|| {
        vec![Toleration {
            key: Some(GPU_RESOURCE.into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        }]
    });

    let mut annotations = BTreeMap::from([(POOL_ANNOTATION.to_string(), pool.id.clone())]);
    if let Some((text, _)) = &input.model_ref {
        annotations.insert(MODEL_ANNOTATION.to_string(), redact_url(text));
    }
    let selector = labels(&name);
    let max_surge = opts.max_surge as i32;
    let deployment = Deployment {
        metadata: meta(&name, opts, Some(annotations)),
        spec: Some(DeploymentSpec {
            replicas: Some(pool.replicas.min(i32::MAX as u32) as i32),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                match_expressions: None,
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(max_surge)),
                    // Both zero would never make progress.
                    max_unavailable: Some(IntOrString::Int(if max_surge == 0 { 1 } else { 0 })),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(selector.clone()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    init_containers: placement.downloader.map(|c| vec![c]),
                    volumes: Some(volumes),
                    tolerations,
                    // No `<SERVICE>_PORT`-style variables in the server's environment.
                    enable_service_links: Some(false),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    };
    let service = Service {
        metadata: meta(&name, opts, None),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.into()),
                port: i32::from(port),
                target_port: Some(IntOrString::String(PORT_NAME.into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    };
    Ok(Built {
        claim: placement.claim,
        manifests: PoolManifests {
            pool: pool.id.clone(),
            name,
            resources: vec![
                Resource::Service(Box::new(service)),
                Resource::Deployment(Box::new(deployment)),
            ],
            secret: (!secret_keys.is_empty()).then_some((secret_name, secret_keys)),
            tls_secret,
        },
    })
}
