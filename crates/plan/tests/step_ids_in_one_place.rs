//! Step ids are built and taken apart only by `StepId` (crates/plan/src/step_id.rs): no other
//! source file writes `"spawn:…`, `"probe:…`, `pool/r{n}` or `starts_with("<kind>…`. Test code
//! (after `#[cfg(test)]`, and `tests/`) may spell ids out.

use std::path::{Path, PathBuf};

use provision_plan::StepKind;

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

/// What no file outside step_id.rs may contain, and why.
fn banned() -> Vec<(String, &'static str)> {
    let mut out = vec![
        (
            "/r{".to_string(),
            "a replica name built by hand (ReplicaId)",
        ),
        (
            "rsplit_once(\"/r\")".to_string(),
            "a replica name taken apart by hand (ReplicaId::parse)",
        ),
    ];
    for k in StepKind::ALL {
        let k = k.as_str();
        out.push((format!("\"{k}:"), "an id spelled out (StepId)"));
        out.push((
            format!("starts_with(\"{k}"),
            "an id prefix matched (StepId::kind_of / parse)",
        ));
    }
    out
}

#[test]
fn step_ids_are_built_and_parsed_only_by_step_id() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for krate in std::fs::read_dir(&root).expect("crates dir") {
        let src = krate.expect("entry").path().join("src");
        if src.is_dir() {
            sources(&src, &mut files);
        }
    }
    files.sort();
    assert!(files.len() > 20, "found the sources: {files:?}");
    let banned = banned();
    let mut found = Vec::new();
    for file in files.iter().filter(|f| !f.ends_with("plan/src/step_id.rs")) {
        let text = std::fs::read_to_string(file).expect("readable source");
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (n, line) in code.lines().enumerate() {
            for (pattern, what) in &banned {
                // `"vram-fit: …` is a message, not an id.
                let at = line.find(pattern.as_str());
                let is_message = pattern.ends_with(':')
                    && at.is_some_and(|i| line[i + pattern.len()..].starts_with(' '));
                if at.is_some() && !is_message {
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
        "step ids must go through provision_plan::StepId:\n{}",
        found.join("\n")
    );
}

/// The executor knows no step kind: it asks the kind's traits (crates/plan/src/step_traits.rs)
/// and matches no `StepSpec` variant and no kind name (its tests may).
#[test]
fn the_executor_matches_no_step_kind() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../executor/src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    assert!(files.len() > 5, "found the executor: {files:?}");
    let mut banned: Vec<String> = vec!["StepSpec::".into()];
    banned.extend(StepKind::ALL.iter().map(|k| format!("\"{}\"", k.as_str())));
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable source");
        // Test code: after `#[cfg(test)]`, or a module's `tests.rs` (declared after it).
        let code = match file.file_name().is_some_and(|n| n == "tests.rs") {
            true => "",
            false => text.split("#[cfg(test)]").next().unwrap_or_default(),
        };
        for (n, line) in code.lines().enumerate() {
            if banned.iter().any(|b| line.contains(b.as_str())) {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "the executor must ask StepKind/StepSpec traits, not match kinds:\n{}",
        found.join("\n")
    );
}
