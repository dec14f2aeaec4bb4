//! Whatever a step reports (message, hint, tail), the state file and the events never carry
//! a secret of the plan or a URL credential: the executor redacts every step error.

use provision_executor::events::Recorder;
use provision_executor::{
    apply, ApplyOptions, Cancel, Dispatch, Facts, Outcome, StateFile, StepContext, StepError,
};
use provision_plan::{Document, PlanOptions, Roots};

const KEY: &str = "sk-executor-must-not-record";
const PW: &str = "pw-executor-must-not-record";

const CONFIG: &str = r#"
pools:
  - id: cpu
    engine: llamacpp
    model: tiny
    backend: cpu
    devices: []
    provisioning:
      mode: binary
      binary: {path: /opt/llama-server}
      model: {ref: ./models/tiny.gguf}
      flags: [--api-key, sk-executor-must-not-record]
"#;

/// Every step fails, quoting the plan's API key and a URL with a password.
struct Leaky;

impl Dispatch for Leaky {
    fn facts(&self, _cx: &StepContext<'_>) -> Result<Facts, StepError> {
        Ok(Facts::default())
    }

    fn run(&self, _cx: &StepContext<'_>) -> Result<Outcome, StepError> {
        let leak = format!("key {KEY} at https://bob:{PW}@h.example/x");
        Err(StepError::new(leak.clone()).hint(leak.clone()).tail(leak))
    }

    fn check_alive(&self, _cx: &StepContext<'_>) -> Result<(), String> {
        Ok(())
    }
}

#[test]
fn step_errors_are_redacted_before_they_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let doc = Document::parse("pools.yaml", CONFIG.into()).unwrap();
    let valid = provision_plan::validate(&doc).unwrap();
    let roots = Roots {
        cache: dir.path().join("cache").display().to_string(),
        runtime: dir.path().join("runtime").display().to_string(),
        config_dir: dir.path().display().to_string(),
    };
    let plan = provision_plan::plan(&valid, &PlanOptions { roots, pool: None }).unwrap();
    let file = StateFile::new(dir.path().join("runtime/state.json"));
    let mut state = file.load().unwrap();
    let events = Recorder::default();
    let opts = ApplyOptions {
        jobs: 2,
        build_jobs: 1,
        fail_fast: false,
        force: false,
    };
    apply(
        &plan,
        &Leaky,
        &file,
        &mut state,
        &opts,
        &events,
        &Cancel::new(),
    )
    .unwrap();

    let saved = std::fs::read_to_string(dir.path().join("runtime/state.json")).unwrap();
    let emitted = format!("{:?}", events.events());
    assert!(saved.contains("<redacted>"), "{saved}");
    for secret in [KEY, PW] {
        assert!(!saved.contains(secret), "{secret} in the state:\n{saved}");
        assert!(
            !emitted.contains(secret),
            "{secret} in the events:\n{emitted}"
        );
    }
}
