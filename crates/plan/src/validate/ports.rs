//! A pool's ports: one per replica, or none for free ports.

use crate::config::Pool;
use crate::document::join_key;

use super::checker::Checker;

impl Checker<'_> {
    /// `provisioning.ports`: one per replica, or none; the ports.
    pub(super) fn ports(&mut self, pp: &str, pool: &Pool) -> Vec<u16> {
        let prov = &pool.provisioning;
        let ports: Vec<u16> = prov.ports.iter().map(|p| p.0 as u16).collect();
        if !ports.is_empty() && ports.len() != pool.replicas as usize {
            let msg = format!(
                "{} {} for {} {}",
                ports.len(),
                if ports.len() == 1 { "port" } else { "ports" },
                pool.replicas,
                if pool.replicas == 1 {
                    "replica"
                } else {
                    "replicas"
                }
            );
            self.error(
                &join_key(pp, "ports"),
                false,
                &msg,
                Some("give one port per replica, or omit `ports` to use free ports from 8080"),
            );
        }
        ports
    }
}
