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
/// gpu-check, the model `model` and the models of the pools `ledger` places before it), the
/// model-resolve step `model` otherwise; none without a model. A GPU pool is added to
/// `ledger`, the GPU pools so far in config order.
pub(super) fn fit(
    steps: &mut PoolSteps,
    valid: &ValidConfig,
    input: &PoolInput,
    model: Option<(usize, &StepId)>,
    checks: &Checks,
    ledger: &mut Ledger,
) -> Result<Option<usize>, ConfigError> {
    let pool = &input.pool;
    let pid = pool.id.as_str();
    Ok(match (model, pool.backend, &checks.gpu_check) {
        (Some((model_at, model_id)), Backend::Cuda, Some(gpu)) => {
            let memory = memory_settings(valid, input)?;
            let gpu = steps.add(gpu.clone(), vec![], || {
                StepSpec::GpuCheck(GpuCheck {
                    devices: checks.gpu_devices.iter().copied().collect(),
                    argv: GPU_QUERY.map(String::from).to_vec(),
                })
            });
            let before = ledger.sharing(&pool.devices);
            let deps = [model_at, gpu]
                .into_iter()
                .chain(before.iter().map(|&i| ledger.pools[i].1));
            let placed_before: Vec<LedgerPool> =
                before.iter().map(|&i| ledger.pools[i].0.clone()).collect();
            let fit = steps.add(StepId::vram_fit(pid).into(), deps, || {
                StepSpec::VramFit(VramFit {
                    pool: pid.into(),
                    devices: pool.devices.clone(),
                    replicas: pool.replicas,
                    model: model_id.clone(),
                    memory: memory.clone(),
                    placed_before,
                })
            });
            ledger.push(
                LedgerPool {
                    pool: pid.into(),
                    devices: pool.devices.clone(),
                    replicas: pool.replicas,
                    model: model_id.clone(),
                    memory,
                },
                model_at,
            );
            Some(fit)
        }
        _ => None,
    })
}

/// The GPU pools planned so far, in config order, each with its model-resolve step's
/// position, and where each device's pools are.
#[derive(Default)]
pub(super) struct Ledger {
    pools: Vec<(LedgerPool, usize)>,
    on: std::collections::HashMap<u32, Vec<usize>>,
}

impl Ledger {
    fn push(&mut self, pool: LedgerPool, model_at: usize) {
        let at = self.pools.len();
        for d in &pool.devices {
            self.on.entry(*d).or_default().push(at);
        }
        self.pools.push((pool, model_at));
    }

    /// The pools (positions, in order) that share a device with `devices`: those placed
    /// before a pool on its devices. Only direct sharers are named (a plan grows with their
    /// number, not with the square of a whole chain): a pool placed before one of them on
    /// another device is left out, which can only make that one look more likely to be
    /// placed, so the fit counts it more often, never less.
    fn sharing(&self, devices: &[u32]) -> Vec<usize> {
        let mut at: Vec<usize> = devices
            .iter()
            .filter_map(|d| self.on.get(d))
            .flatten()
            .copied()
            .collect();
        at.sort_unstable();
        at.dedup();
        at
    }
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
