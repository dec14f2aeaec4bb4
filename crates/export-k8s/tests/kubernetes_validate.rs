//! Strict schema validation of every manifest with PyPI's `kubernetes-validate` (pinned in
//! `kubernetes-validate-requirements.txt`, installed into a venv under `target/` on first use),
//! against the Kubernetes version of the `k8s-openapi` feature, with `--strict`: an unknown
//! field or a wrong type fails. Broken manifests prove the validator rejects what it must.
//!
//! Needs `python3` with `venv` and pip's access to PyPI the first time.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use provision_export_k8s::{OutputFormat, KUBERNETES_VERSION};
use serde_json::Value;

const REQUIREMENTS: &str = include_str!("kubernetes-validate-requirements.txt");

/// The venv's python, creating the venv when missing or made from other requirements.
fn validator_python() -> PathBuf {
    let hash: String = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        REQUIREMENTS.hash(&mut h);
        format!("{:016x}", h.finish())
    };
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("kubernetes-validate-{hash}"));
    let python = venv.join("bin/python");
    let stamp = venv.join("installed");
    if stamp.is_file() {
        return python;
    }
    // Built aside and renamed, so a concurrent or interrupted run never sees half a venv
    // (the venv's python finds its site-packages relative to itself, so renaming is safe).
    let tmp = venv.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    run(Command::new("python3").args(["-m", "venv"]).arg(&tmp));
    let requirements = tmp.join("requirements.txt");
    std::fs::write(&requirements, REQUIREMENTS).unwrap();
    run(Command::new(tmp.join("bin/python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
            "-r",
        ])
        .arg(&requirements));
    std::fs::write(tmp.join("installed"), REQUIREMENTS).unwrap();
    if std::fs::rename(&tmp, &venv).is_err() {
        // Another run finished first.
        let _ = std::fs::remove_dir_all(&tmp);
        assert!(
            stamp.is_file(),
            "could not put the venv at {}",
            venv.display()
        );
    }
    python
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `kubernetes-validate --strict -k <version>` on `files`: (passed, output).
fn validate(files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(validator_python())
        .args(["-m", "kubernetes_validate", "--strict", "-k"])
        .arg(format!("{KUBERNETES_VERSION}.0"))
        .args(files)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn every_manifest_passes_strict_validation_and_broken_ones_fail() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let mut resources = 0;
    let mut exports = all_exports();
    exports.extend(memory_exports());
    for (i, (_, export)) in exports.iter().enumerate() {
        // The YAML stream as written.
        let yaml = dir.path().join(format!("{i:02}.yaml"));
        std::fs::write(&yaml, render(export, OutputFormat::Yaml)).unwrap();
        files.push(yaml);
        // The JSON List's items (the validator has no schema for `List` itself).
        let list: Value = serde_json::from_str(&render(export, OutputFormat::Json)).unwrap();
        for (j, item) in list["items"].as_array().unwrap().iter().enumerate() {
            let json = dir.path().join(format!("{i:02}-{j:02}.json"));
            std::fs::write(&json, serde_json::to_string_pretty(item).unwrap()).unwrap();
            files.push(json);
        }
        resources += 2 * export.resources().count();
    }
    let (ok, output) = validate(&files);
    assert!(ok, "kubernetes-validate rejected the manifests:\n{output}");
    // Every object was checked against a schema: none skipped, none unknown.
    let passed = output
        .lines()
        .filter(|l| l.contains(" passed for resource "))
        .count();
    assert_eq!(passed, resources, "{output}");
    assert!(!output.contains("WARN"), "{output}");
    assert!(
        output.contains(&format!("against version {KUBERNETES_VERSION}")),
        "{output}"
    );

    // The validator rejects what must fail the run.
    let valid = load(&repo().join("fixtures/configs/two-gpu-pools-shared-build.yaml"));
    let export = export_with(&valid, &Default::default()).unwrap();
    let deployment = json_values(&export)
        .into_iter()
        .find(|v| v["kind"] == "Deployment")
        .unwrap();
    type Mutation = fn(&mut Value);
    // (what, change, written by serde_norway instead of our emitter, expected error)
    let broken: [(&str, Mutation, bool, &str); 3] = [
        (
            "unknown field",
            |d| d["spec"]["template"]["spec"]["containers"][0]["gpus"] = 2.into(),
            false,
            "'gpus' was unexpected",
        ),
        (
            "type error",
            |d| d["spec"]["replicas"] = "2".into(),
            false,
            "is not of type 'integer'",
        ),
        (
            // serde_norway writes `-fa` followed by a plain `on`: a boolean in YAML 1.1.
            "a flag value read as a YAML 1.1 boolean",
            |_| {},
            true,
            "is not of type 'string'",
        ),
    ];
    for (i, (what, mutate, norway, expected)) in broken.iter().enumerate() {
        let mut d = deployment.clone();
        mutate(&mut d);
        let path = dir.path().join(format!("broken-{i}.yaml"));
        let text = if *norway {
            let text = serde_norway::to_string(&d).unwrap();
            assert!(text.contains("- on\n"), "{text}");
            text
        } else {
            provision_export_k8s::yaml::to_string(&d)
        };
        std::fs::write(&path, text).unwrap();
        let (ok, output) = validate(&[path]);
        assert!(!ok, "{what}: the validator accepted it:\n{output}");
        assert!(output.contains(expected), "{what}:\n{output}");
    }
}
