//! The model-resolve step of a pool: where its model comes from and the path it is read at.

use crate::model_ref::ModelRef;
use crate::secret_placeholder::url_with_placeholders;
use crate::secrets::StepSecrets;
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
) -> Option<(usize, String, StepId)> {
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
            ModelRef::Hf { .. } | ModelRef::HfQuant { .. } | ModelRef::Url { .. } => {
                "${model_path}".into()
            }
        };
        let step_id = StepId::ModelResolve(names.models.id(base, key));
        let id = steps.add_with_secrets(step_id.clone().into(), vec![], || {
            let (source, secrets) = with_placeholders(source);
            let spec = StepSpec::ModelResolve(ModelResolve {
                model_ref: redact_url(text),
                source,
                checksum: input.checksum.clone(),
                path: path.clone(),
                cache_dir,
            });
            (spec, secrets)
        });
        (id, path, step_id)
    })
}

/// A model source as the spec holds it, a URL's credentials placeholders, and their values.
fn with_placeholders(source: &ModelRef) -> (ModelRef, StepSecrets) {
    match source {
        ModelRef::Url { url } => {
            let (url, secrets) = url_with_placeholders(url, "source");
            (ModelRef::Url { url }, secrets.into_iter().collect())
        }
        other => (other.clone(), StepSecrets::default()),
    }
}
