//! The server container's volumes: the model's, and the TLS Secret's when the pool serves
//! `listen.tls`.

use k8s_openapi::api::core::v1::{Volume, VolumeMount};

use crate::model;
use crate::secrets;

/// The container's mounts and the pod's volumes: the model's `volume`, read-only at
/// [`model::MOUNT`], and the TLS Secret `tls_secret`'s.
pub(super) fn volumes(volume: Volume, tls_secret: Option<&str>) -> (Vec<VolumeMount>, Vec<Volume>) {
    let mut mounts = vec![VolumeMount {
        name: model::VOLUME.into(),
        mount_path: model::MOUNT.into(),
        read_only: Some(true),
        ..Default::default()
    }];
    let mut volumes = vec![volume];
    if let Some(secret) = tls_secret {
        mounts.push(secrets::tls_mount());
        volumes.push(secrets::tls_volume(secret));
    }
    (mounts, volumes)
}
