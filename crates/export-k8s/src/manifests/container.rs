//! The server container: `llama-server`'s args, environment, port, resources, probes and
//! mounts.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, Probe, ResourceRequirements, VolumeMount,
};
use provision_plan::engine::{PlannedEngine, ServerArgs};
use provision_plan::llama_flags::Flag;

use crate::secrets;

use super::{CONTAINER, PORT_NAME};

/// The server's args, as its engine makes them (the image's entrypoint is the server): listen
/// on every address at `port`, the model at `model_path`, the TLS files when `tls`, then the
/// flags (`arg_flags`: secrets removed).
pub(super) fn args(
    engine: &dyn PlannedEngine,
    port: u16,
    model_path: &str,
    tls: bool,
    arg_flags: &[Flag],
) -> Vec<String> {
    // `listen.tls`: the certificate and key from the pool's TLS Secret.
    let tls = tls.then(secrets::tls_files);
    let port = port.to_string();
    let server = ServerArgs {
        binary: "",
        host: "0.0.0.0",
        port: &port,
        model: model_path,
        tls: tls.as_ref(),
    };
    // Without the binary: the image runs it.
    engine.argv(server, arg_flags).split_off(1)
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
