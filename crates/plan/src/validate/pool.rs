//! One pool's checks, section by section, and its normalised inputs to the planner.

use crate::config::Pool;
use crate::document::join_key;

use super::checker::Checker;
use super::PoolInput;

const POOL_ID_HELP: &str =
    "use up to 64 letters, digits, `.`, `_` and `-`, starting with a letter or digit";

impl Checker<'_> {
    /// Check one pool, section by section; its inputs to the planner when it has no error.
    pub(super) fn pool(&mut self, p: &str, pool: Pool) -> Option<PoolInput> {
        let before = self.errors;
        let pp = join_key(p, "provisioning");
        self.identity(p, &pool);
        self.devices(p, &pp, &pool);
        self.check_mode(&pp, &pool);
        let ports = self.ports(&pp, &pool);
        self.env(&pp, &pool);
        let (model_ref, checksum) = self.model(p, &pp, &pool);
        let flags = self.llama_flags(&pp, &pool, before);
        let cmake = self.cmake_flags(&pp, &pool);

        let after = self.errors;
        (after == before).then_some(PoolInput {
            flags,
            cmake,
            model_ref,
            checksum,
            ports,
            pool,
        })
    }

    /// The pool's own fields: `id`, `engine`, `model` and `handoff_path`.
    pub(super) fn identity(&mut self, p: &str, pool: &Pool) {
        let id_ok = !pool.id.is_empty()
            && pool.id.len() <= 64
            && pool
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            && pool
                .id
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric());
        if !id_ok {
            let msg = if pool.id.is_empty() {
                "the pool id is empty".to_string()
            } else {
                format!("pool id `{}` is not a valid name", pool.id)
            };
            self.error(&join_key(p, "id"), false, &msg, Some(POOL_ID_HELP));
        }
        if crate::engine::of(pool.engine).is_none() {
            let msg = format!(
                "engine `{}` is not supported yet: provision runs llamacpp pools only",
                pool.engine.as_str()
            );
            self.error(
                &join_key(p, "engine"),
                false,
                &msg,
                Some("set `engine: llamacpp`, or provision this pool with another tool"),
            );
        }
        if pool.model.trim().is_empty() {
            self.error(
                &join_key(p, "model"),
                false,
                "the pool's `model` is empty",
                Some("name the model, e.g. `model: qwen2.5-0.5b-instruct-q4_k_m.gguf`"),
            );
        }
        if let Some(h) = &pool.handoff_path {
            self.no_tilde(&join_key(p, "handoff_path"), h);
            if h.trim().is_empty() {
                self.error(
                    &join_key(p, "handoff_path"),
                    false,
                    "`handoff_path` is empty",
                    Some("give a file path, or remove it for the default"),
                );
            }
        }
    }
}
