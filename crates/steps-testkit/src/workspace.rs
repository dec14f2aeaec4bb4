//! A temporary cache/runtime/config root, a plan made from a config in it, and step contexts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use provision_executor::{Cancel, StepContext};
use provision_plan::redact::Redactor;
use provision_plan::{plan, validate, Document, Plan, PlanOptions, Roots, Step, StepOutputs};
use tempfile::TempDir;

/// A temp directory holding `cache/`, `runtime/` and `config/`, and the plan of a config.
pub struct Workspace {
    pub dir: TempDir,
    pub plan: Plan,
    /// The log every context of this workspace writes to.
    pub log: PathBuf,
    pub cancel: Cancel,
}

/// A CPU pool built from `repo` at `git_ref`, with extra lines under `source.build` (indent them
/// by 10 spaces, e.g. `"          generator: Ninja\n"`; without a `cmake_flags` line,
/// `[-DGGML_NATIVE=OFF]` is added) and `submodules`.
pub fn cpu_pool_config(repo: &str, git_ref: &str, submodules: bool, build_extra: &str) -> String {
    let flags = if build_extra.contains("cmake_flags:") {
        ""
    } else {
        "          cmake_flags: [-DGGML_NATIVE=OFF]\n"
    };
    format!(
        "pools:
  - id: test-cpu
    engine: llamacpp
    model: tiny
    backend: cpu
    devices: []
    provisioning:
      mode: source
      source:
        repo: \"{repo}\"
        ref: \"{git_ref}\"
        submodules: {submodules}
        build:
{build_extra}{flags}      model:
        ref: ./models/tiny.gguf
"
    )
}

impl Workspace {
    /// Plan `config` (YAML or JSON) with the cache, runtime and config dir in a new temp dir.
    pub fn new(config: &str) -> Workspace {
        let dir = tempfile::tempdir().expect("temp dir");
        let plan = plan_in(dir.path(), config);
        let log = dir.path().join("runtime/logs/steps/test.log");
        Workspace {
            dir,
            plan,
            log,
            cancel: Cancel::new(),
        }
    }

    /// Plan another config over the same roots (e.g. other flags, same cache).
    pub fn replan(&mut self, config: &str) {
        self.plan = plan_in(self.dir.path(), config);
    }

    pub fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// The first step of `kind` (e.g. `git-clone`).
    pub fn step(&self, kind: &str) -> &Step {
        self.plan
            .steps
            .iter()
            .find(|s| s.kind() == kind)
            .unwrap_or_else(|| panic!("the plan has no {kind} step"))
    }

    /// A context for the first step of `kind`, with `deps` as its dependencies' outputs.
    pub fn cx(&self, kind: &str, deps: BTreeMap<String, StepOutputs>) -> StepContext<'_> {
        let step = self.step(kind);
        StepContext {
            roots: &self.plan.roots,
            redactor: std::sync::Arc::new(Redactor::for_plan(&self.plan)),
            step,
            secrets: self.plan.secrets.for_step(&step.id),
            deps,
            previous: None,
            log: self.log.clone(),
            jobs: 2,
            cancel: self.cancel.clone(),
        }
    }

    /// The step log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn plan_in(root: &Path, config: &str) -> Plan {
    let config_dir = root.join("config");
    std::fs::create_dir_all(&config_dir).expect("config dir");
    let file = config_dir.join("pools.yaml");
    std::fs::write(&file, config).expect("write config");
    let doc = Document::parse(&file.display().to_string(), config.to_string())
        .unwrap_or_else(|e| panic!("config does not parse: {e}"));
    let valid = validate(&doc).unwrap_or_else(|e| panic!("config is invalid: {e}"));
    let roots = Roots {
        cache: root.join("cache").display().to_string(),
        runtime: root.join("runtime").display().to_string(),
        config_dir: config_dir.display().to_string(),
    };
    plan(&valid, &PlanOptions { roots, pool: None }).unwrap_or_else(|e| panic!("plan: {e}"))
}
