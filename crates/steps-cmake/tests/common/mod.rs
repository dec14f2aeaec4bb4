//! Shared by the cmake step tests: the fixture project in a real git repository, cloned,
//! configured and built by the real steps.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use provision_executor::{Outcome, StepError};
use provision_plan::outputs::{CmakeBuildOutputs, CmakeConfigureOutputs, KindOutputs};
use provision_plan::step::{CmakeBuild, CmakeConfigure};
use provision_plan::{StepOutputs, StepSpec};
use provision_steps_cmake::{build, configure_on};
use provision_steps_testkit::{cpu_pool_config, TestRepo, Workspace};
use provision_steps_tools::Host;

pub fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/cmake-hello")
}

/// The fixture project committed to a new repository and tagged `v1`.
pub fn hello_repo() -> TestRepo {
    let repo = TestRepo::new();
    repo.commit_tree(&fixture(), "cmake-hello");
    repo.tag("v1");
    repo
}

/// A workspace planning the fixture at `v1` with `build_extra` under `source.build`.
pub fn workspace(repo: &TestRepo, build_extra: &str) -> Workspace {
    Workspace::new(&cpu_pool_config(&repo.url(), "v1", false, build_extra))
}

pub fn configure_spec(ws: &Workspace) -> CmakeConfigure {
    match &ws.step("cmake-configure").spec {
        StepSpec::CmakeConfigure(c) => c.clone(),
        _ => unreachable!(),
    }
}

pub fn build_spec(ws: &Workspace) -> CmakeBuild {
    match &ws.step("cmake-build").spec {
        StepSpec::CmakeBuild(b) => b.clone(),
        _ => unreachable!(),
    }
}

/// Run the git-clone step; its outputs keyed by its id (the configure's deps).
pub fn clone(ws: &Workspace) -> BTreeMap<String, StepOutputs> {
    let step = ws.step("git-clone");
    let StepSpec::GitClone(spec) = &step.spec else {
        unreachable!()
    };
    let out = provision_steps_git::run(spec, &ws.cx("git-clone", BTreeMap::new())).unwrap();
    BTreeMap::from([(step.id.clone(), out.outputs.expect("clone outputs"))])
}

pub fn configure_with(
    ws: &Workspace,
    spec: &CmakeConfigure,
    host: &Host,
) -> Result<Outcome, StepError> {
    let deps = clone(ws);
    configure_on(spec, &ws.cx("cmake-configure", deps), host)
}

/// Build after `configured`, with the outputs of the configure and of the clone (as the
/// executor gives a step every dependency's, direct and indirect).
pub fn build_after(ws: &Workspace, configured: &Outcome) -> Result<Outcome, StepError> {
    let mut deps = clone(ws);
    let id = ws.step("cmake-configure").id.clone();
    deps.insert(id, configured.outputs.clone().expect("configure outputs"));
    build(&build_spec(ws), &ws.cx("cmake-build", deps))
}

/// The typed outputs of a passed step.
pub fn typed<T: KindOutputs>(outcome: &Outcome) -> &T {
    outcome
        .outputs
        .as_ref()
        .and_then(T::of)
        .unwrap_or_else(|| panic!("no {} outputs", T::KIND))
}

/// What a configure recorded.
pub fn cfg(outcome: &Outcome) -> &CmakeConfigureOutputs {
    typed(outcome)
}

/// What a build recorded.
pub fn bin(outcome: &Outcome) -> &CmakeBuildOutputs {
    typed(outcome)
}

/// Clone, configure and build with this machine's tools.
pub fn clone_configure_build(ws: &Workspace) -> (Outcome, Outcome) {
    let configured = configure_with(ws, &configure_spec(ws), &Host::current()).unwrap();
    let built = build_after(ws, &configured).unwrap();
    (configured, built)
}

/// What the binary prints.
pub fn run_binary(path: &str) -> String {
    let out = std::process::Command::new(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}
