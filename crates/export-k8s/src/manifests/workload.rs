//! The pool's Deployment (its replicas, rolled one at a time) and Service (their port).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Container, PodSpec, PodTemplateSpec, Service, ServicePort, ServiceSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use provision_plan::redact::redact_url;
use provision_plan::PoolInput;

use crate::names::{labels, MODEL_ANNOTATION, POOL_ANNOTATION};
use crate::options::ExportOptions;

use super::resources::tolerations;
use super::{meta, PORT_NAME};

/// The pod of a pool: its server `container`, the model's `downloader` and the `volumes`.
pub(super) struct Pod {
    pub(super) container: Container,
    pub(super) downloader: Option<Container>,
    pub(super) volumes: Vec<Volume>,
}

/// The Deployment `name` of `input`'s replicas.
pub(super) fn deployment(
    input: &PoolInput,
    name: &str,
    opts: &ExportOptions,
    pod: Pod,
) -> Deployment {
    let pool = &input.pool;
    let mut annotations = BTreeMap::from([(POOL_ANNOTATION.to_string(), pool.id.clone())]);
    if let Some((text, _)) = &input.model_ref {
        annotations.insert(MODEL_ANNOTATION.to_string(), redact_url(text));
    }
    let selector = labels(name);
    let max_surge = opts.max_surge as i32;
    Deployment {
        metadata: meta(name, opts, Some(annotations)),
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
                    labels: Some(selector),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![pod.container],
                    init_containers: pod.downloader.map(|c| vec![c]),
                    volumes: Some(pod.volumes),
                    tolerations: tolerations(pool.backend),
                    // No `<SERVICE>_PORT`-style variables in the server's environment.
                    enable_service_links: Some(false),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// The ClusterIP Service `name` in front of the pool's replicas, at `port`.
pub(super) fn service(name: &str, opts: &ExportOptions, port: u16) -> Service {
    Service {
        metadata: meta(name, opts, None),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(labels(name)),
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
    }
}
