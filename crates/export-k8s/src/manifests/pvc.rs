//! The claim holding the models (`--create-pvc`), shared by the pools that mount it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::names::labels;
use crate::options::ExportOptions;

use super::meta;

/// Claim `claim` of `size`, labelled as pool `pool_name`'s; ReadWriteMany when `replicas` pods
/// (maybe on several nodes) mount it.
pub(super) fn pvc(
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
