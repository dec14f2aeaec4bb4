//! Output: multi-document YAML (`---` before each document; see [`crate::yaml`] for why not
//! serde_norway's writer) or one JSON `List`. Deterministic: maps are ordered, and nothing varies
//! with the machine or the time.

use crate::manifests::{Export, PoolManifests, Resource};
use crate::options::OutputFormat;

/// Every exported pool in one document stream.
pub fn render(export: &Export, format: OutputFormat) -> String {
    let resources: Vec<&Resource> = export.resources().collect();
    render_resources(&resources, format)
}

/// One pool's objects (what `--out DIR` writes to `<name>.yaml`).
pub fn render_pool(pool: &PoolManifests, format: OutputFormat) -> String {
    let resources: Vec<&Resource> = pool.resources.iter().collect();
    render_resources(&resources, format)
}

fn render_resources(resources: &[&Resource], format: OutputFormat) -> String {
    match format {
        OutputFormat::Yaml => resources
            .iter()
            .map(|r| {
                let value = serde_json::to_value(r).expect("Kubernetes objects serialise");
                format!("---\n{}", crate::yaml::to_string(&value))
            })
            .collect(),
        OutputFormat::Json => {
            let list = serde_json::json!({
                "apiVersion": "v1",
                "kind": "List",
                "items": resources,
            });
            let mut text =
                serde_json::to_string_pretty(&list).expect("Kubernetes objects serialise");
            text.push('\n');
            text
        }
    }
}
