//! Every fixture config plans, deterministically, into a plan that matches its snapshot, reads
//! back, satisfies the plan schema and never shows a secret.

use std::path::Path;

use provision_plan::{Document, Plan, PlanOptions, Roots};

fn roots() -> Roots {
    Roots {
        cache: "/cache".into(),
        runtime: ".runtime".into(),
        config_dir: "/config".into(),
    }
}

fn plan_fixture(path: &Path) -> (provision_plan::ValidConfig, Plan) {
    let name = format!(
        "fixtures/configs/{}",
        path.file_name().unwrap().to_string_lossy()
    );
    let text = std::fs::read_to_string(path).unwrap();
    let doc = Document::parse(&name, text).unwrap_or_else(|e| panic!("{e}"));
    let valid = provision_plan::validate(&doc).unwrap_or_else(|e| panic!("{e}"));
    let plan = provision_plan::plan(
        &valid,
        &PlanOptions {
            roots: roots(),
            pool: None,
        },
    )
    .unwrap();
    (valid, plan)
}

#[test]
fn fixture_plans_match_snapshots() {
    insta::glob!("../../../fixtures/configs", "*.*", |path| {
        let (valid, plan) = plan_fixture(path);
        let json = plan.to_json();
        insta::assert_snapshot!("json", json);
        insta::assert_snapshot!("text", provision_plan::render_text(&plan));
        insta::assert_snapshot!("warnings", valid.render_warnings());

        // Deterministic: planning again gives the same bytes.
        assert_eq!(plan_fixture(path).1.to_json(), json);
        // The JSON reads back into the same plan.
        let back: Plan = serde_json::from_str(&json).unwrap();
        assert_eq!(back.to_json(), json);
    });
}

/// The end-to-end config's plan (the e2e run applies exactly this).
#[test]
fn e2e_plan_matches_its_snapshot() {
    insta::glob!("../../../fixtures/e2e", "*.yaml", |path| {
        let (_, plan) = plan_fixture(path);
        insta::assert_snapshot!("e2e_json", plan.to_json());
    });
}

#[test]
fn fixture_plans_satisfy_the_plan_schema() {
    let schema = provision_plan::plan_schema();
    insta::glob!("../../../fixtures/configs", "*.*", |path| {
        let (_, plan) = plan_fixture(path);
        let doc = Document::parse("plan.json", plan.to_json()).unwrap();
        let problems = provision_plan::schema_check::SchemaChecker::new(&schema, &doc).check();
        assert!(problems.is_empty(), "{}: {problems:?}", path.display());

        // The check is not vacuous: a wrong type is caught.
        let broken = plan
            .to_json()
            .replacen("\"plan_version\": 2", "\"plan_version\": \"two\"", 1);
        let doc = Document::parse("plan.json", broken).unwrap();
        let problems = provision_plan::schema_check::SchemaChecker::new(&schema, &doc).check();
        assert_eq!(problems.len(), 1, "{problems:?}");
    });
}

#[test]
fn secrets_never_appear_in_plans() {
    let (_, plan) = plan_fixture(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/configs/two-gpu-pools-shared-build.yaml"
    )));
    let json = plan.to_json();
    let text = provision_plan::render_text(&plan);
    for secret in ["sk-do-not-print", "hf_not_a_real_token"] {
        assert!(
            !json.contains(secret) && !text.contains(secret),
            "{secret} leaked"
        );
    }
    assert!(json.contains("<redacted>"));
    // The spec names each secret; the process still gets the real value, from the plan's
    // secrets table.
    let spawn = plan.steps.iter().find_map(|s| match &s.spec {
        provision_plan::StepSpec::Spawn(sp) if sp.pool == "chat" => {
            Some((s.id.clone(), sp.clone()))
        }
        _ => None,
    });
    let (id, spawn) = spawn.expect("chat has a spawn step");
    assert_eq!(spawn.env["LLAMA_API_KEY"], "${secret:env.LLAMA_API_KEY}");
    assert_eq!(spawn.env["HF_TOKEN"], "${secret:env.HF_TOKEN}");
    let secrets = plan.secrets.for_step(&id);
    assert_eq!(secrets.get("env.LLAMA_API_KEY"), Some("sk-do-not-print"));
    assert_eq!(secrets.get("env.HF_TOKEN"), Some("hf_not_a_real_token"));
}

#[test]
fn shared_source_build_and_model_are_one_step_each() {
    let (_, plan) = plan_fixture(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/configs/two-gpu-pools-shared-build.yaml"
    )));
    let count = |kind: &str| plan.steps.iter().filter(|s| s.kind() == kind).count();
    assert_eq!(count("git-clone"), 1);
    assert_eq!(count("cmake-configure"), 1);
    assert_eq!(count("cmake-build"), 1);
    assert_eq!(count("model-resolve"), 1);
    assert_eq!(count("spawn"), 3);
    assert_eq!(count("handoff"), 3);
    let build = plan
        .steps
        .iter()
        .find(|s| s.kind() == "cmake-build")
        .unwrap();
    assert_eq!(build.pools, ["batch", "chat"]);
}

#[test]
fn pool_selection_plans_one_pool_and_rejects_unknown_ids() {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/configs/two-gpu-pools-shared-build.yaml"
    ));
    let valid = provision_plan::load(path).unwrap();
    let plan = provision_plan::plan(
        &valid,
        &PlanOptions {
            roots: roots(),
            pool: Some("batch".into()),
        },
    )
    .unwrap();
    assert_eq!(plan.pools.len(), 1);
    assert!(plan
        .steps
        .iter()
        .all(|s| s.pools.contains(&"batch".to_string())));
    assert!(plan.step("spawn:chat/r0").is_none());
    // Ids of shared steps do not depend on the selection.
    assert!(plan.step("cmake-build:llama.cpp@b4567").is_some());

    let err = provision_plan::plan(
        &valid,
        &PlanOptions {
            roots: roots(),
            pool: Some("chatt".into()),
        },
    )
    .unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.contains("--pool `chatt` names no pool") && shown.contains("did you mean `chat`?"),
        "{shown}"
    );
}

/// Every id the planner writes is a [`StepId`](provision_plan::StepId) of its step's kind that
/// reads back to the same string, and so is every dependency (issue 14 item 3).
#[test]
fn every_planned_id_parses_as_its_kind_and_round_trips() {
    use provision_plan::StepId;
    insta::glob!("../../../fixtures/configs", "*.*", |path| {
        let (_, plan) = plan_fixture(path);
        for step in &plan.steps {
            let id = StepId::parse(&step.id).unwrap_or_else(|| panic!("{} parses", step.id));
            assert_eq!(id.kind(), step.spec.step_kind(), "{}", step.id);
            assert_eq!(id.to_string(), step.id);
            for dep in &step.deps {
                assert!(StepId::parse(dep).is_some(), "{dep}");
            }
        }
    });
}
