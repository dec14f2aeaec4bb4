//! The names of the nodes pools share (clones, builds, models): content keys per pool, and
//! ids unique across the whole config so that they do not depend on `--pool`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::config::ProvisioningMode;
use crate::validate::{PoolInput, ValidConfig};

use super::{config_path, short_hash};

/// The names of the whole config's shared nodes, and each pool's content keys.
pub(super) struct Names<'a> {
    pub(super) clones: Namer,
    pub(super) builds: Namer,
    pub(super) models: Namer,
    /// Refs checked out per repo checkout directory: one checkout holds one ref at a time, so
    /// a repo used at several refs gets one directory per ref.
    pub(super) checkout_refs: BTreeMap<String, BTreeSet<String>>,
    /// Content keys once per pool (each is JSON and hashing); pool ids are unique once valid.
    pool_keys: HashMap<&'a str, Keys>,
}

impl<'a> Names<'a> {
    /// Names unique across the whole config, so ids do not depend on `--pool`.
    pub(super) fn of(valid: &'a ValidConfig) -> Self {
        let mut clones = Namer::default();
        let mut builds = Namer::default();
        let mut models = Namer::default();
        let mut checkout_refs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let pool_keys: HashMap<&str, Keys> = valid
            .pools
            .iter()
            .map(|input| (input.pool.id.as_str(), keys(input)))
            .collect();
        for input in &valid.pools {
            let k = &pool_keys[input.pool.id.as_str()];
            if let (Some(source), true) = (
                &input.pool.provisioning.source,
                input.pool.provisioning.mode == ProvisioningMode::Source,
            ) {
                checkout_refs
                    .entry(checkout_base(input, &source.repo))
                    .or_default()
                    .insert(source.git_ref.trim().to_string());
            }
            if let Some((b, key)) = &k.clone {
                clones.register(b, key);
            }
            if let Some((b, key)) = &k.build {
                builds.register(b, key);
            }
            if let Some((b, key)) = &k.model {
                models.register(b, key);
            }
        }

        Names {
            clones,
            builds,
            models,
            checkout_refs,
            pool_keys,
        }
    }

    /// The content keys of pool `id`.
    pub(super) fn keys(&self, id: &str) -> &Keys {
        &self.pool_keys[id]
    }
}

/// Ids that read well and stay unique: `base` alone when only one distinct key has it,
/// `base#<hash>` otherwise.
#[derive(Default)]
pub(super) struct Namer {
    keys: BTreeMap<String, BTreeSet<String>>,
}

impl Namer {
    pub(super) fn register(&mut self, base: &str, key: &str) {
        // Most pools repeat a (base, key) seen before: no copies for those.
        match self.keys.get_mut(base) {
            Some(keys) if keys.contains(key) => {}
            Some(keys) => {
                keys.insert(key.to_string());
            }
            None => {
                self.keys
                    .insert(base.to_string(), BTreeSet::from([key.to_string()]));
            }
        }
    }

    pub(super) fn id(&self, base: &str, key: &str) -> String {
        if self.keys.get(base).is_some_and(|k| k.len() > 1) {
            format!("{base}#{}", short_hash(&key))
        } else {
            base.to_string()
        }
    }
}

/// Content keys of a pool's shared nodes, with the base of their ids' names (`llama.cpp@b4567`,
/// `model.gguf`): [`StepId`] adds the kind.
pub(super) struct Keys {
    pub(super) clone: Option<(String, String)>,
    pub(super) build: Option<(String, String)>,
    pub(super) model: Option<(String, String)>,
}

pub(super) fn source_root(input: &PoolInput) -> String {
    input
        .pool
        .provisioning
        .source
        .as_ref()
        .and_then(|s| s.build.cache_dir.as_deref())
        .map(config_path)
        .unwrap_or_else(|| "${cache}".into())
}

/// The checkout directory of `repo`: `<root>/src/<name>-<hash of repo>`. When the config uses
/// the repo at several refs, each ref gets its own directory (`-<hash of ref>` appended).
pub(super) fn checkout_base(input: &PoolInput, repo: &str) -> String {
    format!(
        "{}/src/{}-{}",
        source_root(input),
        repo_name(repo),
        short_hash(&repo)
    )
}

pub(super) fn keys(input: &PoolInput) -> Keys {
    let prov = &input.pool.provisioning;
    let source = prov
        .source
        .as_ref()
        .filter(|_| prov.mode == ProvisioningMode::Source);
    let clone = source.map(|s| {
        let name = repo_name(&s.repo);
        (
            format!("{name}@{}", s.git_ref.trim()),
            format!("{}\n{}\n{}", s.repo, s.git_ref.trim(), source_root(input)),
        )
    });
    let build = source.zip(input.cmake.as_ref()).map(|(s, c)| {
        let name = repo_name(&s.repo);
        let key = serde_json::json!({
            "repo": s.repo, "ref": s.git_ref.trim(), "defines": c.defines, "extra": c.extra,
            "generator": s.build.generator, "root": source_root(input),
        });
        (format!("{name}@{}", s.git_ref.trim()), key.to_string())
    });
    let model = input.model_ref.as_ref().map(|(text, r)| {
        let cache_dir = prov.model.as_ref().and_then(|m| m.cache_dir.clone());
        let key =
            serde_json::json!({"ref": text, "checksum": input.checksum, "cache_dir": cache_dir});
        (r.file_name().to_string(), key.to_string())
    });
    Keys {
        clone,
        build,
        model,
    }
}

pub(super) fn repo_name(url: &str) -> String {
    let trimmed = url.trim_end_matches('/');
    let last = trimmed.rsplit(['/', ':']).next().unwrap_or(trimmed);
    let last = last.strip_suffix(".git").unwrap_or(last);
    let clean: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        "repo".into()
    } else {
        clean
    }
}
