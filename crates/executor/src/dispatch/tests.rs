use super::*;
use provision_plan::outputs::{GitCloneOutputs, ModelResolveOutputs, SpawnOutputs};
use provision_plan::step::{GpuCheck, StepSpec};

fn step() -> Step {
    Step {
        id: "gpu-check".into(),
        deps: vec![],
        pools: vec![],
        spec: StepSpec::GpuCheck(GpuCheck {
            devices: vec![],
            argv: vec![],
        }),
    }
}

fn with<R>(deps: Vec<(StepId, StepOutputs)>, f: impl FnOnce(&StepContext<'_>) -> R) -> R {
    let step = step();
    let roots = Roots {
        cache: "/c".into(),
        runtime: "/r".into(),
        config_dir: "/d".into(),
    };
    let cx = StepContext {
        roots: &roots,
        redactor: Arc::new(Redactor::default()),
        step: &step,
        deps: deps
            .into_iter()
            .map(|(id, o)| (id.to_string(), o))
            .collect(),
        previous: None,
        log: PathBuf::new(),
        jobs: 3,
        cancel: Cancel::new(),
        secrets: &StepSecrets::default(),
    };
    f(&cx)
}

fn model(path: &str) -> StepOutputs {
    ModelResolveOutputs {
        path: path.into(),
        digest: "sha256:0".into(),
        size: 1,
        architecture: "llama".into(),
    }
    .into()
}

fn clone(commit: &str) -> StepOutputs {
    GitCloneOutputs {
        commit: commit.into(),
        dir: "/src".into(),
    }
    .into()
}

#[test]
fn model_path_comes_from_the_model_resolve_outputs() {
    let m = StepId::ModelResolve("m.gguf".into());
    let g = StepId::GitClone("x@1".into());
    let expanded = with(
        vec![(g.clone(), clone("abc")), (m, model("/made.gguf"))],
        |cx| cx.expand("${cache}/m ${model_path} -j${jobs}"),
    );
    assert_eq!(expanded, "/c/m /made.gguf -j3");
    // Nothing gives it: left as is.
    let expanded = with(vec![(g, clone("abc"))], |cx| cx.expand("${model_path}"));
    assert_eq!(expanded, "${model_path}");
}

#[test]
fn a_dependency_is_read_by_its_id_as_its_kind() {
    let g = StepId::GitClone("x@1".into());
    let s = StepId::spawn("p", 0);
    with(vec![(g.clone(), clone("abc"))], |cx| {
        assert_eq!(cx.dep::<GitCloneOutputs>(&g).unwrap().commit, "abc");
        // Of another kind: a clear error naming both kinds.
        let err = cx.dep::<SpawnOutputs>(&g).unwrap_err();
        assert!(
            err.message
                .contains("the outputs of `git-clone:x@1` are git-clone outputs, not spawn"),
            "{}",
            err.message
        );
        // Not a dependency.
        assert_eq!(cx.maybe_dep::<SpawnOutputs>(&s).unwrap(), None);
        let err = cx.dep::<SpawnOutputs>(&s).unwrap_err();
        assert!(
            err.message.contains("`spawn:p/r0` is not a dependency"),
            "{}",
            err.message
        );
        assert_eq!(
            cx.the_dep::<GitCloneOutputs>().unwrap().unwrap().commit,
            "abc"
        );
        assert_eq!(cx.the_dep::<ModelResolveOutputs>().unwrap(), None);
    });
}

#[test]
fn two_dependencies_of_the_kind_asked_for_by_kind_are_an_error() {
    let a = StepId::GitClone("a@1".into());
    let b = StepId::GitClone("b@1".into());
    with(vec![(a, clone("1")), (b, clone("2"))], |cx| {
        let err = cx.the_dep::<GitCloneOutputs>().unwrap_err();
        assert!(
            err.message.contains("two git-clone dependencies"),
            "{}",
            err.message
        );
    });
}

#[test]
fn a_step_fills_in_its_own_secrets_and_a_missing_one_names_step_and_secret() {
    let step = Step {
        id: StepId::spawn("a", 0).to_string(),
        deps: vec![],
        pools: vec![],
        spec: StepSpec::GpuCheck(GpuCheck {
            devices: vec![],
            argv: vec![],
        }),
    };
    let roots = Roots {
        cache: "/c".into(),
        runtime: "/r".into(),
        config_dir: "/d".into(),
    };
    let secrets: StepSecrets = [("env.K".to_string(), "v4lue".to_string())]
        .into_iter()
        .collect();
    let cx = StepContext {
        roots: &roots,
        redactor: Arc::new(Redactor::default()),
        step: &step,
        deps: BTreeMap::new(),
        previous: None,
        log: PathBuf::new(),
        jobs: 1,
        cancel: Cancel::new(),
        secrets: &secrets,
    };
    assert_eq!(
        cx.expand_secrets("${cache}/${secret:env.K}").unwrap(),
        "${cache}/v4lue"
    );
    assert_eq!(cx.secret("env.K"), Some("v4lue"));
    let err = cx.expand_secrets("${secret:env.OTHER}").unwrap_err();
    assert_eq!(
        err.message,
        "step spawn:a/r0: the secret `env.OTHER` is not in the plan's secrets"
    );
    assert!(err.hint.unwrap().contains("plan again"));
}
