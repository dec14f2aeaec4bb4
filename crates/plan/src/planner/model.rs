//! The model-resolve step of a pool: where its model comes from and the path it is read at.

use crate::model_ref::ModelRef;
use crate::step::*;
use crate::step_id::StepId;
use crate::validate::PoolInput;

use super::builder::PoolSteps;
use super::names::Names;
use super::{config_path, redact_url};

/// The pool's model-resolve step and the model's path (none for an external server).
pub(super) fn resolve(
    steps: &mut PoolSteps,
    input: &PoolInput,
    names: &Names,
) -> Option<(usize, String)> {
    let prov = &input.pool.provisioning;
    let k = names.keys(&input.pool.id);
    k.model.as_ref().map(|(base, key)| {
        let (text, source) = input
            .model_ref
            .as_ref()
            .expect("non-external pools have a model ref");
        let cache_dir = prov
            .model
            .as_ref()
            .and_then(|m| m.cache_dir.as_deref())
            .map(config_path)
            .unwrap_or_else(|| "${cache}/models".into());
        let path = match source {
            ModelRef::Path { path } => config_path(path),
            ModelRef::Cached { name } => format!("{cache_dir}/{name}"),
            ModelRef::Hf { .. } | ModelRef::Url { .. } => "${model_path}".into(),
        };
        let id = steps.add(
            StepId::ModelResolve(names.models.id(base, key)).into(),
            vec![],
            || {
                StepSpec::ModelResolve(ModelResolve {
                    model_ref: redact_url(text),
                    source: shown_source(source),
                    checksum: input.checksum.clone(),
                    path: path.clone(),
                    cache_dir,
                    secret_source: (shown_source(source) != *source).then(|| source.clone()),
                })
            },
        );
        (id, path)
    })
}

/// A model source as plans show it: a URL's credentials redacted.
fn shown_source(source: &ModelRef) -> ModelRef {
    match source {
        ModelRef::Url { url } => ModelRef::Url {
            url: redact_url(url),
        },
        other => other.clone(),
    }
}
