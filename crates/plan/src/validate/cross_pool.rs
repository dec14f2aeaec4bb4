//! Checks across pools: unique ids, ports and handoff files.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::Pool;
use crate::document::{join_index, join_key};

use super::checker::Checker;

impl Checker<'_> {
    pub(super) fn cross_pool(&mut self, pools: &[(String, Pool)]) {
        let mut ids: BTreeMap<&str, &str> = BTreeMap::new();
        // Where each port is first used: the pool's path and the port's position.
        let mut ports: BTreeMap<u32, (&str, usize)> = BTreeMap::new();
        let port_path = |path: &str, j: usize| join_index(&join_key(path, "provisioning.ports"), j);
        for (path, pool) in pools {
            if let Some(first) = ids.get(pool.id.as_str()) {
                let msg = format!(
                    "duplicate pool id `{}`: already used by {}",
                    pool.id,
                    self.line_of(first)
                );
                self.error(
                    &join_key(path, "id"),
                    false,
                    &msg,
                    Some("give every pool a unique id"),
                );
            } else {
                ids.insert(&pool.id, path);
            }
            for (j, port) in pool.provisioning.ports.iter().enumerate() {
                if let Some(&(first_pool, first_j)) = ports.get(&port.0) {
                    let first = port_path(first_pool, first_j);
                    let msg = format!(
                        "port {} is already used by {}",
                        port.0,
                        self.line_of(&first)
                    );
                    self.error(
                        &port_path(path, j),
                        false,
                        &msg,
                        Some("give every replica of every pool its own port"),
                    );
                } else {
                    ports.insert(port.0, (path, j));
                }
            }
        }
    }

    /// At most [`MAX_POOLS_PER_DEVICE`](crate::config::MAX_POOLS_PER_DEVICE) GPU pools on
    /// one device: reported at the first pool past it, once per device.
    pub(super) fn pools_per_device(&mut self, pools: &[(String, Pool)]) {
        use crate::config::{Backend, ProvisioningMode, MAX_POOLS_PER_DEVICE};
        let mut on: BTreeMap<u32, usize> = BTreeMap::new();
        for (path, pool) in pools {
            let external = pool.provisioning.mode == ProvisioningMode::External;
            if pool.backend != Backend::Cuda || external {
                continue;
            }
            for (j, d) in pool.devices.iter().enumerate() {
                let n = on.entry(*d).or_default();
                *n += 1;
                if *n == MAX_POOLS_PER_DEVICE + 1 {
                    let msg = format!(
                        "pool `{}` is the {}th GPU pool on device {d}: at most {MAX_POOLS_PER_DEVICE} may share one device",
                        pool.id, *n
                    );
                    self.error(
                        &join_index(&join_key(path, "devices"), j),
                        false,
                        &msg,
                        Some("spread the pools over more devices, or serve several models from fewer pools"),
                    );
                }
            }
        }
    }

    pub(super) fn handoff_collisions(&mut self, pools: &[(String, Pool)], total_replicas: u32) {
        // Each handoff file, and the pool and field that name it first.
        let mut seen: BTreeMap<String, (&str, &str)> = BTreeMap::new();
        let mut ids: BTreeSet<&str> = BTreeSet::new();
        for (path, pool) in pools {
            // A duplicate id is reported once, as such.
            if !ids.insert(&pool.id) {
                continue;
            }
            let field = if pool.handoff_path.is_some() {
                "handoff_path"
            } else {
                "id"
            };
            for r in 0..pool.replicas {
                let file = crate::planner::handoff_path(pool, r, total_replicas);
                if let Some(&(first_pool, first_field)) = seen.get(&file) {
                    let first = self.line_of(&join_key(first_pool, first_field));
                    let msg = format!("handoff file `{file}` is also written by {first}");
                    self.error(
                        &join_key(path, field),
                        false,
                        &msg,
                        Some("give each pool its own `handoff_path`"),
                    );
                    break;
                }
                seen.insert(file, (path, field));
            }
        }
    }
}
