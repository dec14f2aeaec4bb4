//! The server container's resources: GPUs (limits), CPU from `--threads`, memory from the
//! model when it is on this machine, ephemeral storage for a downloaded model; and the
//! tolerations of a GPU pool.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use provision_plan::llama_flags::Flag;
use provision_plan::{Backend, PoolInput};
use provision_steps_model::ModelInfo;

use crate::memory::{host_need, mebibytes};
use crate::model::ModelLookup;
use crate::options::{ExportOptions, ModelVolume};

use super::GPU_RESOURCE;

/// The requests and limits of `input`'s server (`arg_flags`: its flags left in args); a
/// request that cannot be estimated is a warning.
pub(super) fn requirements(
    input: &PoolInput,
    arg_flags: &[Flag],
    models: &dyn ModelLookup,
    opts: &ExportOptions,
    warnings: &mut Vec<String>,
) -> ResourceRequirements {
    let pool = &input.pool;
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
    ResourceRequirements {
        requests: (!requests.is_empty()).then_some(requests),
        limits: (!limits.is_empty()).then_some(limits),
        ..Default::default()
    }
}

/// A GPU pool tolerates the taint of GPU nodes.
pub(super) fn tolerations(backend: Backend) -> Option<Vec<Toleration>> {
    (backend == Backend::Cuda).then(|| {
        vec![Toleration {
            key: Some(GPU_RESOURCE.into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        }]
    })
}
