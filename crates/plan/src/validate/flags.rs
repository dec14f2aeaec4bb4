//! A pool's server flags (`provisioning.flags`) and CMake flags (`source.build.cmake_flags`),
//! normalised.

use crate::cmake_flags::{self, CmakeFlags};
use crate::config::{Pool, ProvisioningMode};
use crate::diagnostic::Diagnostic;
use crate::document::{join_index, join_key};
use crate::llama_flags::{Flag, FlagContext};
use crate::memory_settings::raw_index;

use super::checker::Checker;

impl Checker<'_> {
    /// `provisioning.flags`, normalised; the memory settings read from them once the pool has
    /// no other error (since `before` errors).
    pub(super) fn llama_flags(&mut self, pp: &str, pool: &Pool, before: usize) -> Vec<Flag> {
        let prov = &pool.provisioning;
        let engine = crate::engine::flags_of(pool.engine);
        let normalized = engine.normalize(
            &prov.flags,
            FlagContext {
                backend: pool.backend,
                ctx: pool.ctx,
                tensor_split: pool.tensor_split.as_deref(),
            },
        );
        let flags_path = join_key(pp, "flags");
        for note in &normalized.notes {
            let path = note
                .index
                .map_or(flags_path.clone(), |i| join_index(&flags_path, i));
            if note.error {
                self.error(&path, false, &note.message, note.help.as_deref());
            } else {
                let mut d = Diagnostic::warning(&path, &note.message);
                d.help = note.help.clone();
                self.push(d, false);
            }
        }

        // The memory settings the vram-fit step estimates with must be readable (checked
        // once the pool is otherwise valid: a bad `tensor_split` is reported at the field).
        if self.errors == before && prov.mode != ProvisioningMode::External {
            if let Err(bad) = engine.memory_settings(&normalized.flags) {
                let path = raw_index(&prov.flags, &bad.flag)
                    .map_or(flags_path.clone(), |i| join_index(&flags_path, i));
                self.error(&path, false, &bad.message, Some(&bad.help));
            }
        }
        normalized.flags
    }

    /// `provisioning.source.build.cmake_flags`, normalised (source mode).
    pub(super) fn cmake_flags(&mut self, pp: &str, pool: &Pool) -> Option<CmakeFlags> {
        let prov = &pool.provisioning;
        let mut cmake = None;
        if prov.mode == ProvisioningMode::Source {
            if let Some(source) = &prov.source {
                let (flags, notes) =
                    cmake_flags::normalize(&source.build.cmake_flags, pool.backend);
                let cp = join_key(pp, "source.build.cmake_flags");
                for note in notes {
                    let path = note.index.map_or(cp.clone(), |i| join_index(&cp, i));
                    let mut d = if note.error {
                        Diagnostic::error(&path, note.message)
                    } else {
                        Diagnostic::warning(&path, note.message)
                    };
                    d.help = note.help;
                    self.push(d, false);
                }
                cmake = Some(flags);
            }
        }
        cmake
    }
}
