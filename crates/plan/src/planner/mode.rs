//! The server binary of a pool, per provisioning mode (the planner's mode dispatch): built from
//! source, a binary on disk, or none (an external server).

use crate::config::ProvisioningMode;
use crate::validate::PoolInput;

use super::builder::PoolSteps;
use super::checks::Checks;
use super::config_path;
use super::names::Names;

/// The pool's server binary, and the step that makes it (source mode only).
pub(super) fn binary(
    steps: &mut PoolSteps,
    input: &PoolInput,
    names: &Names,
    checks: &Checks,
) -> (String, Option<usize>) {
    let prov = &input.pool.provisioning;
    match prov.mode {
        ProvisioningMode::Source => {
            let (binary, build) = super::build::source(steps, input, names, checks);
            (binary, Some(build))
        }
        ProvisioningMode::Binary => {
            let path = prov
                .binary
                .as_ref()
                .and_then(|b| b.path.as_deref())
                .expect("validated");
            (config_path(path), None)
        }
        ProvisioningMode::External => (String::new(), None),
        ProvisioningMode::Container | ProvisioningMode::Package => {
            unreachable!("rejected by validation")
        }
    }
}
