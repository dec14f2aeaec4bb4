//! What passes between steps is typed (issue 14 item 2): every kind's outputs are a struct
//! whose every field has a type (no `serde_json::Value` inside), and no step crate reads or
//! builds outputs as an untyped map (`dep_output("port")`, `outputs["pid"]`,
//! `BTreeMap<String, Value>`). Test code (after `#[cfg(test)]`, a module's `tests.rs`, and
//! `tests/`) may look at outputs as JSON: that is how the state file records them.

use std::path::{Path, PathBuf};

use provision_plan::StepOutputs;
use serde_json::Value;

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The places in `schema` (a JSON Schema) that accept any JSON value: a `serde_json::Value`
/// field, or a map of them.
fn untyped(schema: &Value, at: &str, found: &mut Vec<String>) {
    match schema {
        Value::Bool(true) => found.push(at.to_string()),
        Value::Object(o) => {
            let constrained = [
                "type", "$ref", "anyOf", "oneOf", "allOf", "enum", "const", "not",
            ]
            .iter()
            .any(|k| o.contains_key(*k));
            if !constrained {
                found.push(at.to_string());
            }
            for (k, v) in o {
                match k.as_str() {
                    "properties" | "$defs" => {
                        for (name, s) in v.as_object().into_iter().flatten() {
                            untyped(s, &format!("{at}/{name}"), found);
                        }
                    }
                    "items" | "additionalProperties" => untyped(v, &format!("{at}[{k}]"), found),
                    "anyOf" | "oneOf" | "allOf" => {
                        for (i, s) in v.as_array().into_iter().flatten().enumerate() {
                            untyped(s, &format!("{at}/{k}[{i}]"), found);
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

#[test]
fn every_output_field_has_a_type() {
    let schema = serde_json::to_value(schemars::schema_for!(StepOutputs)).unwrap();
    let defs = schema["$defs"].as_object().expect("the outputs structs");
    assert!(defs.len() >= 10, "one struct per kind: {:?}", defs.keys());
    let mut found = Vec::new();
    untyped(&schema, "StepOutputs", &mut found);
    assert!(
        found.is_empty(),
        "outputs fields that take any JSON value (a serde_json::Value): {found:?}"
    );
    // The check sees a `Value` field.
    #[derive(schemars::JsonSchema)]
    #[allow(dead_code)]
    struct Loose {
        port: u16,
        anything: Value,
    }
    let mut loose = Vec::new();
    untyped(
        &serde_json::to_value(schemars::schema_for!(Loose)).unwrap(),
        "Loose",
        &mut loose,
    );
    assert_eq!(loose, ["Loose/anything"]);
}

/// What no step crate (nor the cli's dispatch and commands) writes outside its tests.
const BANNED: &[(&str, &str)] = &[
    ("dep_output", "a dependency's output looked up by name"),
    ("outputs[\"", "an output indexed by name"),
    ("outputs.get(\"", "an output looked up by name"),
    ("outputs.insert(", "an output map built by hand"),
    ("BTreeMap<String, Value>", "an untyped outputs map"),
    (
        "BTreeMap<String, serde_json::Value>",
        "an untyped outputs map",
    ),
    ("Map<String, Value>", "an untyped outputs map"),
    ("from_v1", "state version 1 is read by the executor alone"),
];

#[test]
fn no_step_reads_or_writes_untyped_outputs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for krate in std::fs::read_dir(&root).expect("crates dir") {
        let krate = krate.expect("entry").path();
        let name = krate.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("steps-") || name == "cli" {
            sources(&krate.join("src"), &mut files);
        }
    }
    files.sort();
    assert!(
        files
            .iter()
            .any(|f| f.ends_with("steps-spawn/src/probe.rs"))
            && files.iter().any(|f| f.ends_with("cli/src/dispatch.rs")),
        "found the step crates: {files:?}"
    );
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable source");
        let code = match file.file_name().is_some_and(|n| n == "tests.rs") {
            true => "",
            false => text.split("#[cfg(test)]").next().unwrap_or_default(),
        };
        for (n, line) in code.lines().enumerate() {
            for (pattern, what) in BANNED {
                if line.contains(pattern) && !line.trim_start().starts_with("//") {
                    found.push(format!(
                        "{}:{}: {what}: {}",
                        file.display(),
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "outputs pass between steps typed (provision_plan::outputs, cx.dep::<T>(&id)):\n{}",
        found.join("\n")
    );
}
