//! One pool's checks, section by section, and its normalised inputs to the planner.

use crate::cmake_flags;
use crate::config::{Backend, Engine, Pool, ProvisioningMode};
use crate::diagnostic::Diagnostic;
use crate::document::{join_index, join_key};
use crate::llama_flags::{self, FlagContext};
use crate::memory_settings::{raw_index, MemorySettings};
use crate::model_ref::{parse_checksum, ModelRef};
use crate::unpassable::starts_with_tilde;

use super::checker::Checker;
use super::mode::CHECKSUM_HELP;
use super::PoolInput;

const POOL_ID_HELP: &str =
    "use up to 64 letters, digits, `.`, `_` and `-`, starting with a letter or digit";

impl Checker<'_> {
    pub(super) fn pool(&mut self, p: &str, pool: Pool) -> Option<PoolInput> {
        let before = self.errors;
        let prov = &pool.provisioning;
        let pp = join_key(p, "provisioning");

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
        if pool.engine != Engine::Llamacpp {
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

        // Devices and backend.
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
                        &join_key(&join_key(&pp, "env"), "CUDA_VISIBLE_DEVICES"),
                        true,
                        "`CUDA_VISIBLE_DEVICES` is set by provision from `devices`",
                        Some("remove it from env and list the GPUs in `devices`"),
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

        // Mode.
        self.check_mode(&pp, &pool);

        // Ports.
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
                &join_key(&pp, "ports"),
                false,
                &msg,
                Some("give one port per replica, or omit `ports` to use free ports from 8080"),
            );
        }

        // Env.
        for key in prov.env.keys() {
            // A NUL byte is reported for every field (see `crate::unpassable`).
            if key.is_empty() || key.contains('=') {
                let msg = format!("`{key}` is not a valid environment variable name");
                self.error(
                    &join_key(&join_key(&pp, "env"), key),
                    true,
                    &msg,
                    Some("use a non-empty name without `=`"),
                );
            }
        }

        // Model.
        let mut model_ref = None;
        let mut checksum = None;
        if prov.mode != ProvisioningMode::External {
            let (ref_path, text) = match &prov.model {
                Some(m) if m.model_ref.trim().is_empty() => {
                    self.error(
                        &join_key(&pp, "model.ref"),
                        true,
                        "missing model ref: `provisioning.model` has no `ref`",
                        Some("set `ref` (a path, `hf:ORG/REPO/FILE.gguf` or `https://…`), or remove `provisioning.model` to use the pool's `model`"),
                    );
                    (None, String::new())
                }
                Some(m) => (Some(join_key(&pp, "model.ref")), m.model_ref.clone()),
                None => (Some(join_key(p, "model")), pool.model.clone()),
            };
            if let Some(ref_path) = &ref_path {
                self.no_tilde(ref_path, &text);
            }
            if let Some(ref_path) =
                ref_path.filter(|_| !text.trim().is_empty() && !starts_with_tilde(&text))
            {
                match ModelRef::parse(&text) {
                    Ok(r) => model_ref = Some((text.trim().to_string(), r)),
                    Err(e) => {
                        let msg = format!("malformed model ref: {e}");
                        self.error(&ref_path, false, &msg, Some("e.g. `hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf` or `./models/tiny.gguf`"));
                    }
                }
            }
            if let Some(dir) = prov.model.as_ref().and_then(|m| m.cache_dir.as_deref()) {
                self.no_tilde(&join_key(&pp, "model.cache_dir"), dir);
            }
            if let Some(c) = prov.model.as_ref().and_then(|m| m.checksum.as_ref()) {
                match parse_checksum(c) {
                    Ok(c) => checksum = Some(c),
                    Err(e) => self.error(
                        &join_key(&pp, "model.checksum"),
                        false,
                        &format!("malformed checksum: {e}"),
                        Some(CHECKSUM_HELP),
                    ),
                }
            }
        }

        // Flags.
        let normalized = llama_flags::normalize(
            &prov.flags,
            FlagContext {
                backend: pool.backend,
                ctx: pool.ctx,
                tensor_split: pool.tensor_split.as_deref(),
            },
        );
        let flags_path = join_key(&pp, "flags");
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
            if let Err(bad) = MemorySettings::from_flags(&normalized.flags) {
                let path = raw_index(&prov.flags, &bad.flag)
                    .map_or(flags_path.clone(), |i| join_index(&flags_path, i));
                self.error(&path, false, &bad.message, Some(&bad.help));
            }
        }

        // CMake flags.
        let mut cmake = None;
        if prov.mode == ProvisioningMode::Source {
            if let Some(source) = &prov.source {
                let (flags, notes) =
                    cmake_flags::normalize(&source.build.cmake_flags, pool.backend);
                let cp = join_key(&pp, "source.build.cmake_flags");
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

        let after = self.errors;
        (after == before).then_some(PoolInput {
            flags: normalized.flags,
            cmake,
            model_ref,
            checksum,
            ports,
            pool,
        })
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}
