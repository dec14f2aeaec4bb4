//! The server container: `llama-server`'s args, environment, port, resources, probes and
//! mounts.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, Probe, ResourceRequirements, VolumeMount,
};
use provision_plan::llama_flags::{to_argv, Flag};

use crate::secrets;

use super::{CONTAINER, PORT_NAME};

/// `llama-server`'s args: listen on every address at `port`, the model at `model_path`, the
/// TLS files when `tls`, then the flags (`arg_flags`: secrets removed).
pub(super) fn args(port: u16, model_path: &str, tls: bool, arg_flags: &[Flag]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--host".into(),
        "0.0.0.0".into(),
        "--port".into(),
        port.to_string(),
        "--model".into(),
        model_path.to_string(),
    ];
    // `listen.tls`: the certificate and key from the pool's TLS Secret.
    if tls {
        args.extend(secrets::tls_args());
    }
    args.extend(to_argv(arg_flags));
    args
}

/// What the server container is made of.
pub(super) struct Parts {
    pub(super) image: String,
    pub(super) args: Vec<String>,
    pub(super) env: BTreeMap<String, EnvVar>,
    pub(super) port: u16,
    pub(super) resources: ResourceRequirements,
    /// Startup, readiness and liveness.
    pub(super) probes: (Probe, Probe, Probe),
    pub(super) mounts: Vec<VolumeMount>,
}

/// The server container.
pub(super) fn container(parts: Parts) -> Container {
    let Parts {
        image,
        args,
        env,
        port,
        resources,
        probes: (startup, readiness, liveness),
        mounts,
    } = parts;
    Container {
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
        resources: Some(resources),
        startup_probe: Some(startup),
        readiness_probe: Some(readiness),
        liveness_probe: Some(liveness),
        volume_mounts: Some(mounts),
        ..Default::default()
    }
}
