//! The committed schemas must match the types.

use std::path::Path;

#[test]
fn committed_schemas_are_up_to_date() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
    let mut stale = Vec::new();
    for (name, expected) in provision_plan::schemas::all() {
        let actual = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        if actual != expected {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "schemas/{} {} stale: run `cargo xtask regen-schema` and commit the result",
        stale.join(", schemas/"),
        if stale.len() == 1 { "is" } else { "are" }
    );
}
