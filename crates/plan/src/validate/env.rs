//! A pool's environment: `provisioning.env`.

use crate::config::Pool;
use crate::document::join_key;

use super::checker::Checker;

impl Checker<'_> {
    /// `provisioning.env`: valid variable names.
    pub(super) fn env(&mut self, pp: &str, pool: &Pool) {
        let prov = &pool.provisioning;
        for key in prov.env.keys() {
            // A NUL byte is reported for every field (see `crate::unpassable`).
            if key.is_empty() || key.contains('=') {
                let msg = format!("`{key}` is not a valid environment variable name");
                self.error(
                    &join_key(&join_key(pp, "env"), key),
                    true,
                    &msg,
                    Some("use a non-empty name without `=`"),
                );
            }
        }
    }
}
