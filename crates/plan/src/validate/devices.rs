//! A pool's devices: `devices` and `tensor_split`, against its backend.

use crate::config::{Backend, Pool, ProvisioningMode};
use crate::document::{join_index, join_key};

use super::checker::Checker;

impl Checker<'_> {
    /// `devices` and `tensor_split`, against the backend.
    pub(super) fn devices(&mut self, p: &str, pp: &str, pool: &Pool) {
        let prov = &pool.provisioning;
        let devices_path = join_key(p, "devices");
        match pool.backend {
            Backend::Cuda => {
                if pool.devices.is_empty() && prov.mode != ProvisioningMode::External {
                    self.error(
                        &devices_path,
                        false,
                        "a GPU pool needs at least one device",
                        Some("list GPU indices, e.g. `devices: [0]`, or set `backend: cpu` for an explicit CPU pool"),
                    );
                }
                if prov.env.contains_key("CUDA_VISIBLE_DEVICES") {
                    self.error(
                        &join_key(&join_key(pp, "env"), "CUDA_VISIBLE_DEVICES"),
                        true,
                        "`CUDA_VISIBLE_DEVICES` is set by provision from `devices`",
                        Some("remove it from env and list the GPUs in `devices`"),
                    );
                }
                if prov.env.contains_key("CUDA_DEVICE_ORDER") {
                    self.error(
                        &join_key(&join_key(pp, "env"), "CUDA_DEVICE_ORDER"),
                        true,
                        "`CUDA_DEVICE_ORDER` is set by provision (`PCI_BUS_ID`, the order of nvidia-smi's indices that `devices` uses)",
                        Some("remove it from env: another order would give the server other cards than the ones checked"),
                    );
                }
            }
            Backend::Cpu => {
                if !pool.devices.is_empty() {
                    self.warning(
                        &devices_path,
                        "a CPU pool uses no GPU: `devices` is ignored",
                        Some("set `devices: []`"),
                    );
                }
                if pool.tensor_split.is_some() {
                    self.error(
                        &join_key(p, "tensor_split"),
                        true,
                        "`tensor_split` needs a GPU pool",
                        Some("remove it, or set `backend: cuda`"),
                    );
                }
            }
        }
        for (j, d) in pool.devices.iter().enumerate() {
            if pool.devices[..j].contains(d) {
                let msg = format!("device {d} is listed twice");
                self.error(
                    &join_index(&devices_path, j),
                    false,
                    &msg,
                    Some("list each GPU once"),
                );
            }
        }
        if let (Some(split), Backend::Cuda) = (&pool.tensor_split, pool.backend) {
            let sp = join_key(p, "tensor_split");
            if split.len() != pool.devices.len() {
                let msg = format!(
                    "`tensor_split` has {} but the pool has {}",
                    plural(split.len(), "ratio"),
                    plural(pool.devices.len(), "device")
                );
                self.error(
                    &sp,
                    false,
                    &msg,
                    Some("give one ratio per device, in the order of `devices`"),
                );
            }
            for (j, r) in split.iter().enumerate() {
                if !r.is_finite() || *r <= 0.0 {
                    let msg = format!("tensor split ratio {r} must be greater than 0");
                    self.error(
                        &join_index(&sp, j),
                        false,
                        &msg,
                        Some("use positive ratios, e.g. [3, 1]"),
                    );
                }
            }
        }
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}
