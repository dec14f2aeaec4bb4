//! `provision export kubernetes`, run as a user runs it: the manifests on stdout (the same
//! bytes the library renders), `--out DIR`, `--format json`, and exit 2 with the usual
//! rendering for an invalid config, an unknown `--pool` and an impossible option.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use provision_export_k8s::{ExportOptions, NoModels, OutputFormat};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn fixture(rel: &str) -> PathBuf {
    repo().join("fixtures").join(rel)
}

/// Run `provision` in a fresh empty directory, with caches where no model is.
fn provision(args: &[&str]) -> (Output, tempfile::TempDir) {
    let cwd = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_provision"))
        .args(args)
        .current_dir(cwd.path())
        .env("PROVISION_CACHE_DIR", cwd.path().join("cache"))
        .env("HF_HUB_CACHE", cwd.path().join("hub"))
        .output()
        .unwrap();
    (out, cwd)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// What the library renders for a fixture (no model on this machine).
fn expected(path: &Path, opts: &ExportOptions) -> provision_export_k8s::Export {
    let valid = provision_plan::load(path).unwrap();
    provision_export_k8s::export(&valid, opts, path.parent().unwrap(), &NoModels).unwrap()
}

#[test]
fn prints_the_manifests_and_where_secrets_come_from() {
    let config = fixture("configs/two-gpu-pools-shared-build.yaml");
    let config_arg = config.display().to_string();
    let (out, cwd) = provision(&["export", "kubernetes", "--config", &config_arg]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let want = expected(&config, &ExportOptions::default());
    assert_eq!(
        stdout(&out),
        provision_export_k8s::render(&want, OutputFormat::Yaml)
    );
    assert_eq!(stdout(&out).matches("\nkind: Deployment\n").count(), 2);
    let err = stderr(&out);
    assert!(
        err.contains("note: pool `chat` reads HF_TOKEN, LLAMA_API_KEY from the Secret `chat-secrets`; create it first: kubectl create secret generic chat-secrets --from-literal=HF_TOKEN=… --from-literal=LLAMA_API_KEY=…"),
        "{err}"
    );
    // The config's warnings, as for plan.
    assert!(err.contains("legacy spelling"), "{err}");
    for secret in ["sk-do-not-print", "hf_not_a_real_token"] {
        assert!(!stdout(&out).contains(secret) && !err.contains(secret));
    }
    assert_eq!(
        std::fs::read_dir(cwd.path()).unwrap().count(),
        0,
        "wrote files"
    );

    let (out, _) = provision(&[
        "export",
        "kubernetes",
        "--config",
        &config_arg,
        "--format",
        "json",
        "--pool",
        "batch",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let list: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(list["kind"], "List");
    let kinds: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["Service", "Deployment"]);
    assert_eq!(list["items"][1]["metadata"]["name"], "batch");
}

#[test]
fn out_dir_gets_one_file_per_pool() {
    let config = fixture("configs/two-gpu-pools-shared-build.yaml");
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("k8s");
    let (out, _) = provision(&[
        "export",
        "kubernetes",
        "--config",
        &config.display().to_string(),
        "--out",
        &out_dir.display().to_string(),
        "--create-pvc",
        "20Gi",
        "--namespace",
        "llm",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    let want = expected(
        &config,
        &ExportOptions {
            create_pvc: Some("20Gi".into()),
            namespace: Some("llm".into()),
            ..Default::default()
        },
    );
    let mut names: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["batch.yaml", "chat.yaml"]);
    for pool in &want.pools {
        let text = std::fs::read_to_string(out_dir.join(format!("{}.yaml", pool.name))).unwrap();
        assert_eq!(
            text,
            provision_export_k8s::render_pool(pool, OutputFormat::Yaml)
        );
        assert!(text.contains("kind: PersistentVolumeClaim"));
        assert!(text.contains("namespace: llm"));
        assert!(stderr(&out).contains(&format!(
            "wrote {}",
            out_dir.join(format!("{}.yaml", pool.name)).display()
        )));
    }
}

#[test]
fn invalid_input_exits_2_as_for_plan() {
    // An invalid config: the same rendering as `plan`.
    let bad = fixture("invalid/several-mistakes.yaml")
        .display()
        .to_string();
    let (export, _) = provision(&["export", "kubernetes", "--config", &bad]);
    let (plan, _) = provision(&["plan", "--config", &bad]);
    assert_eq!(export.status.code(), Some(2));
    assert_eq!(stderr(&export), stderr(&plan));
    assert!(stderr(&export).contains("error"), "{}", stderr(&export));
    assert_eq!(stdout(&export), "");

    // A missing file.
    let (out, _) = provision(&[
        "export",
        "kubernetes",
        "--config",
        "/nonexistent/pools.yaml",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // --pool naming no pool: as for plan.
    let config = fixture("configs/two-gpu-pools-shared-build.yaml")
        .display()
        .to_string();
    let (export, _) = provision(&[
        "export",
        "kubernetes",
        "--config",
        &config,
        "--pool",
        "bach",
    ]);
    let (plan, _) = provision(&["plan", "--config", &config, "--pool", "bach"]);
    assert_eq!(export.status.code(), Some(2));
    assert!(
        stderr(&export).contains("--pool `bach` names no pool in the config"),
        "{}",
        stderr(&export)
    );
    assert!(stderr(&export).contains("did you mean `batch`?"));
    assert_eq!(stderr(&export).lines().last(), stderr(&plan).lines().last());

    // An option the config cannot satisfy: what and what to do.
    let cpu = fixture("configs/cpu-pool-local-repo.yaml")
        .display()
        .to_string();
    let (out, _) = provision(&[
        "export",
        "kubernetes",
        "--config",
        &cpu,
        "--model-volume",
        "download",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(
            "error: pool `tiny-cpu`: the model `./models/tiny-llama.gguf` is a local file"
        ),
        "{err}"
    );
    assert!(err.contains("  hint: use `--model-volume pvc`"), "{err}");
    assert_eq!(stdout(&out), "");
}

#[test]
fn help_lists_the_options() {
    let (out, _) = provision(&["export", "kubernetes", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    for opt in [
        "--config",
        "--pool",
        "--out",
        "--format",
        "--model-volume",
        "--create-pvc",
        "--max-surge",
        "--image",
        "--secret",
    ] {
        assert!(stdout(&out).contains(opt), "{opt} missing from help");
    }
}
