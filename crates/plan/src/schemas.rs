//! The JSON Schemas generated from the types, as `cargo xtask regen-schema` writes them to
//! `schemas/`. A test fails when the committed files are stale.

/// `(file name, contents)` of every generated schema.
pub fn all() -> Vec<(&'static str, String)> {
    [
        ("config.schema.json", crate::config_schema()),
        ("plan.schema.json", crate::plan_schema()),
    ]
    .into_iter()
    .map(|(name, schema)| {
        let mut text = serde_json::to_string_pretty(&schema).expect("a schema serialises");
        text.push('\n');
        (name, text)
    })
    .collect()
}
