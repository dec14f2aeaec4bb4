//! A pool's model: its ref and checksum.

use crate::config::{Pool, ProvisioningMode};
use crate::document::join_key;
use crate::model_ref::{parse_checksum, ModelRef};
use crate::split_name::{SplitName, SPLIT_CHECKSUM_HELP};
use crate::unpassable::starts_with_tilde;

use super::checker::Checker;
use super::mode::CHECKSUM_HELP;

impl Checker<'_> {
    /// The model ref (`provisioning.model.ref`, or the pool's `model`) and checksum; both
    /// parsed, unless the server is external.
    pub(super) fn model(
        &mut self,
        p: &str,
        pp: &str,
        pool: &Pool,
    ) -> (Option<(String, ModelRef)>, Option<String>) {
        let prov = &pool.provisioning;
        let mut model_ref = None;
        let mut checksum = None;
        if prov.mode != ProvisioningMode::External {
            let (ref_path, text) = match &prov.model {
                Some(m) if m.model_ref.trim().is_empty() => {
                    self.error(
                        &join_key(pp, "model.ref"),
                        true,
                        "missing model ref: `provisioning.model` has no `ref`",
                        Some("set `ref` (a path, `hf:ORG/REPO/FILE.gguf` or `https://…`), or remove `provisioning.model` to use the pool's `model`"),
                    );
                    (None, String::new())
                }
                Some(m) => (Some(join_key(pp, "model.ref")), m.model_ref.clone()),
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
                self.no_tilde(&join_key(pp, "model.cache_dir"), dir);
            }
            if let Some(c) = prov.model.as_ref().and_then(|m| m.checksum.as_ref()) {
                let split = model_ref
                    .as_ref()
                    .and_then(|(_, r): &(String, ModelRef)| SplitName::parse(r.file_name()));
                match parse_checksum(c) {
                    Ok(_) if split.is_some() => self.error(
                        &join_key(pp, "model.checksum"),
                        false,
                        &format!(
                            "a checksum is the sha256 of one file, and this ref is a split model of {} shards",
                            split.map_or(0, |s| s.count)
                        ),
                        Some(SPLIT_CHECKSUM_HELP),
                    ),
                    Ok(c) => checksum = Some(c),
                    Err(e) => self.error(
                        &join_key(pp, "model.checksum"),
                        false,
                        &format!("malformed checksum: {e}"),
                        Some(CHECKSUM_HELP),
                    ),
                }
            }
        }
        (model_ref, checksum)
    }
}
