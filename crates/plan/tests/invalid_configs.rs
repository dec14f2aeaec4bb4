//! The corpus of malformed configs in `fixtures/invalid/`: every file must be rejected, every
//! problem must point at a line and column, and the rendered errors are snapshotted so that a
//! change in wording, location or coverage shows up in review.

use std::path::Path;

use provision_plan::{ConfigError, Document};

/// Files whose problem has no place in the text to point at (there is no text).
const UNLOCATABLE: &[&str] = &["empty-file.yaml"];

fn corpus_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/invalid")
}

/// Parse and validate `path` under the stable name `fixtures/invalid/<name>`.
fn reject(path: &Path) -> ConfigError {
    let name = path.file_name().unwrap().to_string_lossy();
    let text = std::fs::read_to_string(path).unwrap();
    let doc = match Document::parse(&format!("fixtures/invalid/{name}"), text) {
        Ok(doc) => doc,
        Err(err) => return err,
    };
    match provision_plan::validate(&doc) {
        Ok(_) => {
            panic!("fixtures/invalid/{name} was accepted, but every fixture there must be rejected")
        }
        Err(err) => err,
    }
}

#[test]
fn invalid_configs() {
    insta::glob!("../../../fixtures/invalid", "*.*", |path| {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let err = reject(path);
        // Loading from disk gives the same problems.
        let loaded = provision_plan::validate::load(path)
            .err()
            .unwrap_or_else(|| panic!("load accepted fixtures/invalid/{name}"));
        assert_eq!(loaded.diagnostics, err.diagnostics, "{name}");

        assert!(
            !err.diagnostics.is_empty(),
            "{name}: rejected without a diagnostic"
        );
        if !UNLOCATABLE.contains(&name.as_str()) {
            for d in &err.diagnostics {
                assert!(
                    d.location.is_some(),
                    "{name}: `{}` ({}) has no line and column",
                    d.message,
                    d.path
                );
            }
        }
        insta::assert_snapshot!(err.to_string());
    });
}

#[test]
fn corpus_is_large_enough() {
    let n = std::fs::read_dir(corpus_dir())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .count();
    assert!(n >= 45, "fixtures/invalid has {n} files; keep at least 45");
}

#[test]
fn unlocatable_exceptions_exist() {
    for name in UNLOCATABLE {
        assert!(
            corpus_dir().join(name).is_file(),
            "{name} is listed in UNLOCATABLE but is not in fixtures/invalid"
        );
    }
}
