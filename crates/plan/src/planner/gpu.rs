//! The GPU steps of a pool: one gpu-check over every device, and the pool's vram-fit (does its
//! model fit the memory of its devices).

use crate::config::Backend;
use crate::diagnostic::{ConfigError, Diagnostic};
use crate::memory_settings::MemorySettings;
use crate::step::*;
use crate::step_id::StepId;
use crate::validate::{PoolInput, ValidConfig};

use super::builder::PoolSteps;
use super::checks::Checks;

/// The step the pool's replicas wait for before they start: vram-fit on a GPU (after the
/// gpu-check and model `model`), the model-resolve step `model` otherwise; none without a
/// model.
pub(super) fn fit(
    steps: &mut PoolSteps,
    valid: &ValidConfig,
    input: &PoolInput,
    model: Option<usize>,
    checks: &Checks,
) -> Result<Option<usize>, ConfigError> {
    let pool = &input.pool;
    let pid = pool.id.as_str();
    Ok(match (model, pool.backend, &checks.gpu_check) {
        (Some(model_id), Backend::Cuda, Some(gpu)) => {
            let memory = memory_settings(valid, input)?;
            let gpu = steps.add(gpu.clone(), vec![], || {
                StepSpec::GpuCheck(GpuCheck {
                    devices: checks.gpu_devices.iter().copied().collect(),
                    argv: [
                        "nvidia-smi",
                        "--query-gpu=index,uuid,name,memory.total,memory.free,driver_version,compute_cap",
                        "--format=csv,noheader,nounits",
                    ]
                    .map(String::from)
                    .to_vec(),
                })
            });
            Some(
                steps.add(StepId::vram_fit(pid).into(), vec![model_id, gpu], || {
                    StepSpec::VramFit(VramFit {
                        pool: pid.into(),
                        devices: pool.devices.clone(),
                        memory,
                    })
                }),
            )
        }
        (Some(model_id), _, _) => Some(model_id),
        _ => None,
    })
}

/// The memory-relevant settings of a pool's server, from its normalised flags: the vram-fit
/// step's inputs. A value the estimate cannot read is a config error at the flag.
fn memory_settings(valid: &ValidConfig, input: &PoolInput) -> Result<MemorySettings, ConfigError> {
    let engine = crate::engine::planned(input.pool.engine);
    engine.memory_settings(&input.flags).map_err(|bad| {
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
