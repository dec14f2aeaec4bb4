//! The manifests of every fixture config: snapshots (YAML for each, JSON for one), and the
//! properties that must hold whatever the snapshots say — deterministic output, YAML and JSON
//! holding the same objects, the plan's normalised flags, no secret value anywhere, GPUs as a
//! device count and never `CUDA_VISIBLE_DEVICES`, ports, probes, rolling update.

mod common;

use common::*;
use provision_export_k8s::{ExportError, ExportOptions, ModelVolume, OutputFormat};
use provision_plan::{Backend, PlanOptions, ProvisioningMode, Roots, StepSpec};
use serde_json::Value;

fn warnings_and_notes(export: &provision_export_k8s::Export) -> String {
    let mut lines: Vec<String> = export
        .warnings
        .iter()
        .map(|w| format!("warning: {w}"))
        .collect();
    for p in &export.pools {
        if let Some((secret, keys)) = &p.secret {
            lines.push(format!(
                "secret: pool `{}` reads {} from `{secret}`",
                p.pool,
                keys.join(", ")
            ));
        }
    }
    lines.join("\n")
}

fn check_fixture(path: &std::path::Path, yaml_name: &str, warnings_name: &str) {
    let valid = load(path);
    let export = export_with(&valid, &ExportOptions::default()).unwrap();
    let yaml = render(&export, OutputFormat::Yaml);
    insta::assert_snapshot!(yaml_name, yaml);
    insta::assert_snapshot!(warnings_name, warnings_and_notes(&export));
    // Deterministic: the same bytes again.
    let again = export_with(&load(path), &ExportOptions::default()).unwrap();
    assert_eq!(render(&again, OutputFormat::Yaml), yaml);
}

#[test]
fn every_fixture_matches_its_snapshot() {
    insta::glob!("../../../fixtures/configs", "*.*", |path| {
        check_fixture(path, "yaml", "warnings")
    });
}

/// The end-to-end config (what `cargo xtask e2e` applies).
#[test]
fn e2e_fixture_matches_its_snapshot() {
    insta::glob!("../../../fixtures/e2e", "*.yaml", |path| {
        check_fixture(path, "e2e_yaml", "e2e_warnings")
    });
}

/// The other option sets, each on the fixture that shows it best, and the JSON format.
#[test]
fn option_sets_match_their_snapshots() {
    let two_gpu = load(&repo().join("fixtures/configs/two-gpu-pools-shared-build.yaml"));
    let cpu = load(&repo().join("fixtures/configs/cpu-pool-local-repo.yaml"));
    let sets = option_sets();
    let opts = |name: &str| sets.iter().find(|(n, _)| *n == name).unwrap().1.clone();

    let e = export_with(&two_gpu, &opts("all-options")).unwrap();
    insta::assert_snapshot!("two_gpu_all_options", render(&e, OutputFormat::Yaml));
    let e = export_with(&two_gpu, &opts("download")).unwrap();
    insta::assert_snapshot!("two_gpu_download", render(&e, OutputFormat::Yaml));
    insta::assert_snapshot!("two_gpu_download_json", render(&e, OutputFormat::Json));
    // host-path without --model-dir: the directory of the path ref, under the config dir.
    let host = ExportOptions {
        model_volume: ModelVolume::HostPath,
        ..ExportOptions::default()
    };
    let e = export_with(&cpu, &host).unwrap();
    insta::assert_snapshot!("cpu_host_path", render(&e, OutputFormat::Yaml));
    insta::assert_snapshot!("cpu_host_path_warnings", warnings_and_notes(&e));
}

#[test]
fn yaml_and_json_hold_the_same_objects() {
    for (name, export) in all_exports() {
        let values = json_values(&export);
        let yaml = yaml_documents(&render(&export, OutputFormat::Yaml));
        assert_eq!(yaml, values, "{name}: YAML differs from the objects");
        let list: Value = serde_json::from_str(&render(&export, OutputFormat::Json)).unwrap();
        assert_eq!(list["apiVersion"], "v1");
        assert_eq!(list["kind"], "List");
        assert_eq!(list["items"].as_array().unwrap(), &values, "{name}");
        // Per-pool renderings together are the whole stream.
        let per_pool: String = export
            .pools
            .iter()
            .map(|p| provision_export_k8s::render_pool(p, OutputFormat::Yaml))
            .collect();
        assert_eq!(per_pool, render(&export, OutputFormat::Yaml), "{name}");
    }
}

fn deployment<'a>(values: &'a [Value], name: &str) -> &'a Value {
    values
        .iter()
        .find(|v| v["kind"] == "Deployment" && v["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no Deployment {name}"))
}

fn service<'a>(values: &'a [Value], name: &str) -> &'a Value {
    values
        .iter()
        .find(|v| v["kind"] == "Service" && v["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no Service {name}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// What maps to what, checked against the config and the plan of every fixture.
#[test]
#[allow(clippy::too_many_lines)] // a test: one scenario, read top to bottom
fn pools_map_to_deployments_and_services() {
    let roots = Roots {
        cache: "/cache".into(),
        runtime: ".runtime".into(),
        config_dir: CONFIG_DIR.into(),
    };
    let mut checked = 0;
    for path in fixtures() {
        let valid = load(&path);
        let plan = provision_plan::plan(
            &valid,
            &PlanOptions {
                roots: roots.clone(),
                pool: None,
            },
        )
        .unwrap();
        let export = export_with(&valid, &ExportOptions::default()).unwrap();
        let values = json_values(&export);
        for input in &valid.pools {
            let pool = &input.pool;
            let Some(exported) = export.pools.iter().find(|p| p.pool == pool.id) else {
                assert_eq!(
                    pool.provisioning.mode,
                    ProvisioningMode::External,
                    "{} missing",
                    pool.id
                );
                continue;
            };
            let d = deployment(&values, &exported.name);
            assert_eq!(d["spec"]["replicas"], pool.replicas, "{}", pool.id);
            let strategy = &d["spec"]["strategy"];
            assert_eq!(strategy["type"], "RollingUpdate");
            assert_eq!(strategy["rollingUpdate"]["maxSurge"], 0);
            assert_eq!(strategy["rollingUpdate"]["maxUnavailable"], 1);
            let pod = &d["spec"]["template"]["spec"];
            assert_eq!(pod["containers"].as_array().unwrap().len(), 1);
            let c = &pod["containers"][0];

            // Flags: exactly the plan's normalised flags, secrets left out.
            let handoff = plan
                .steps
                .iter()
                .find_map(|s| match &s.spec {
                    StepSpec::Handoff(h) if h.pool == pool.id => Some(h.flags.clone()),
                    _ => None,
                })
                .unwrap();
            let mut planned = Vec::new();
            let mut i = 0;
            while i < handoff.len() {
                if handoff
                    .get(i + 1)
                    .is_some_and(|v| v == provision_plan::llama_flags::REDACTED)
                {
                    i += 2;
                    continue;
                }
                planned.push(handoff[i].clone());
                i += 1;
            }
            let args = strings(&c["args"]);
            let port = input.ports.first().copied().unwrap_or(8080);
            assert_eq!(
                args[..6],
                [
                    "--host",
                    "0.0.0.0",
                    "--port",
                    &port.to_string(),
                    "--model",
                    &format!(
                        "/models/{}",
                        input.model_ref.as_ref().unwrap().1.file_name()
                    )
                ]
            );
            // `listen.tls`: the files of the TLS Secret (tests/tls.rs), then the flags.
            let flags = if args.get(6).is_some_and(|a| a == "--ssl-cert-file") {
                &args[10..]
            } else {
                &args[6..]
            };
            assert_eq!(flags, &planned[..], "{}", pool.id);

            // Ports: the container's named port, and the Service in front of it.
            assert_eq!(c["ports"][0]["containerPort"], port);
            assert_eq!(c["ports"][0]["name"], "http");
            let s = service(&values, &exported.name);
            assert_eq!(s["spec"]["ports"][0]["port"], port);
            assert_eq!(s["spec"]["ports"][0]["targetPort"], "http");
            assert_eq!(s["spec"]["selector"], d["spec"]["selector"]["matchLabels"]);
            assert_eq!(
                s["spec"]["selector"],
                d["spec"]["template"]["metadata"]["labels"]
            );

            // GPUs: the device count, a toleration, never CUDA_VISIBLE_DEVICES.
            let limits = &c["resources"]["limits"];
            match pool.backend {
                Backend::Cuda => {
                    assert_eq!(limits["nvidia.com/gpu"], pool.devices.len().to_string());
                    assert_eq!(pod["tolerations"][0]["key"], "nvidia.com/gpu");
                }
                Backend::Cpu => {
                    assert!(limits.get("nvidia.com/gpu").is_none());
                    assert!(pod.get("tolerations").is_none());
                }
            }
            let env_names: Vec<&str> = c["env"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| e["name"].as_str().unwrap())
                .collect();
            assert!(!env_names.contains(&"CUDA_VISIBLE_DEVICES"));

            // Probes on /health; the startup probe spans readiness_timeout_ms.
            for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
                assert_eq!(c[probe]["httpGet"]["path"], "/health", "{probe}");
                assert_eq!(c[probe]["httpGet"]["port"], "http", "{probe}");
            }
            let span = c["startupProbe"]["failureThreshold"].as_u64().unwrap()
                * c["startupProbe"]["periodSeconds"].as_u64().unwrap()
                * 1000;
            assert!(span >= pool.readiness_timeout_ms && span < pool.readiness_timeout_ms + 10_000);

            // The model volume, mounted read-only where --model points.
            assert_eq!(pod["volumes"][0]["name"], "models");
            assert_eq!(c["volumeMounts"][0]["mountPath"], "/models");
            assert_eq!(c["volumeMounts"][0]["readOnly"], true);
            checked += 1;
        }
    }
    assert!(checked >= 6, "only {checked} pools checked");
}

/// No secret value from any fixture appears in any output; each secret is a Secret reference.
#[test]
fn secrets_never_appear() {
    let mut secrets_seen = 0;
    for path in fixtures() {
        let valid = load(&path);
        let mut secret_values: Vec<String> = Vec::new();
        for input in &valid.pools {
            for f in input.flags.iter().filter(|f| f.secret) {
                secret_values.push(f.value.clone().unwrap());
            }
            for (k, v) in &input.pool.provisioning.env {
                if provision_export_k8s::secrets::is_secret_env(
                    k,
                    &input.pool.provisioning.secret_env,
                ) {
                    secret_values.push(v.clone());
                }
            }
        }
        secrets_seen += secret_values.len();
        for (set, opts) in option_sets() {
            let Ok(export) = export_with(&valid, &opts) else {
                continue;
            };
            for format in [OutputFormat::Yaml, OutputFormat::Json] {
                let text = render(&export, format);
                for s in &secret_values {
                    assert!(
                        !text.contains(s.as_str()),
                        "{} ({set}) shows a secret",
                        path.display()
                    );
                }
            }
        }
    }
    assert!(
        secrets_seen >= 2,
        "the fixtures should hold secrets to check"
    );

    let valid = load(&repo().join("fixtures/configs/two-gpu-pools-shared-build.yaml"));
    let export = export_with(&valid, &ExportOptions::default()).unwrap();
    let values = json_values(&export);
    let c = &deployment(&values, "chat")["spec"]["template"]["spec"]["containers"][0];
    for key in ["LLAMA_API_KEY", "HF_TOKEN"] {
        let env = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == key)
            .unwrap();
        assert_eq!(env["valueFrom"]["secretKeyRef"]["name"], "chat-secrets");
        assert_eq!(env["valueFrom"]["secretKeyRef"]["key"], key);
        assert!(env.get("value").is_none());
    }
    assert!(!strings(&c["args"]).contains(&"--api-key".to_string()));
    let chat = export.pools.iter().find(|p| p.pool == "chat").unwrap();
    assert_eq!(
        chat.secret,
        Some((
            "chat-secrets".into(),
            vec!["HF_TOKEN".into(), "LLAMA_API_KEY".into()]
        ))
    );
}

#[test]
fn pool_selection_and_bad_options_are_config_errors() {
    let valid = load(&repo().join("fixtures/configs/two-gpu-pools-shared-build.yaml"));
    let one = export_with(
        &valid,
        &ExportOptions {
            pool: Some("batch".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(one.pools.len(), 1);
    assert_eq!(one.pools[0].name, "batch");
    match export_with(
        &valid,
        &ExportOptions {
            pool: Some("bach".into()),
            ..Default::default()
        },
    ) {
        Err(ExportError::Config(e)) => {
            let text = e.to_string();
            assert!(text.contains("--pool `bach` names no pool"), "{text}");
            assert!(text.contains("did you mean `batch`?"), "{text}");
        }
        other => panic!("{other:?}"),
    }
    let cpu = load(&repo().join("fixtures/configs/cpu-pool-local-repo.yaml"));
    let bad: Vec<(ExportOptions, &str)> = vec![
        (
            ExportOptions {
                model_volume: ModelVolume::Download,
                ..Default::default()
            },
            "local file",
        ),
        (
            ExportOptions {
                create_pvc: Some("20GB".into()),
                ..Default::default()
            },
            "quantity",
        ),
        (
            ExportOptions {
                namespace: Some("Prod".into()),
                ..Default::default()
            },
            "--namespace",
        ),
        (
            ExportOptions {
                secret: Some("a_b".into()),
                ..Default::default()
            },
            "--secret",
        ),
        (
            ExportOptions {
                model_dir: Some("/m".into()),
                ..Default::default()
            },
            "--model-dir",
        ),
        (
            ExportOptions {
                model_volume: ModelVolume::HostPath,
                model_dir: Some("models".into()),
                ..Default::default()
            },
            "absolute",
        ),
        (
            ExportOptions {
                model_volume: ModelVolume::Download,
                create_pvc: Some("1Gi".into()),
                ..Default::default()
            },
            "--create-pvc",
        ),
    ];
    for (opts, expected) in bad {
        match export_with(&cpu, &opts) {
            Err(ExportError::Usage { message, help }) => {
                assert!(message.contains(expected), "{message}");
                assert!(help.is_some());
            }
            other => panic!("{expected}: {other:?}"),
        }
    }
    // An hf: model on a node needs the node's directory.
    let hf = load(&repo().join("fixtures/configs/llamacpp-3090-source.yaml"));
    let host = ExportOptions {
        model_volume: ModelVolume::HostPath,
        ..Default::default()
    };
    assert!(
        matches!(export_with(&hf, &host), Err(ExportError::Usage { message, .. }) if message.contains("not a file path"))
    );
}

#[test]
fn a_shared_claim_is_written_once_and_shared_by_many_replicas() {
    let valid = load(&repo().join("fixtures/configs/two-gpu-pools-shared-build.yaml"));
    let opts = ExportOptions {
        model_claim: Some("models".into()),
        create_pvc: Some("50Gi".into()),
        ..Default::default()
    };
    let values = json_values(&export_with(&valid, &opts).unwrap());
    let claims: Vec<&Value> = values
        .iter()
        .filter(|v| v["kind"] == "PersistentVolumeClaim")
        .collect();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0]["spec"]["accessModes"][0], "ReadWriteMany");
    assert_eq!(
        claims[0]["spec"]["resources"]["requests"]["storage"],
        "50Gi"
    );
    for name in ["chat", "batch"] {
        let pod = &deployment(&values, name)["spec"]["template"]["spec"];
        assert_eq!(
            pod["volumes"][0]["persistentVolumeClaim"]["claimName"],
            "models"
        );
    }
    // Objects come in apply order: the claim before the Deployments that mount it.
    let kinds: Vec<&str> = values.iter().map(|v| v["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "PersistentVolumeClaim",
            "Service",
            "Deployment",
            "Service",
            "Deployment"
        ]
    );
    // maxSurge when configured: a surge replica, none unavailable.
    let surge = ExportOptions {
        max_surge: 1,
        ..Default::default()
    };
    let values = json_values(&export_with(&valid, &surge).unwrap());
    let ru = &deployment(&values, "chat")["spec"]["strategy"]["rollingUpdate"];
    assert_eq!(
        (ru["maxSurge"].as_i64(), ru["maxUnavailable"].as_i64()),
        (Some(1), Some(0))
    );
}
