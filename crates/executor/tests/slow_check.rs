//! A slow freshness check (a git host that takes its time to answer `ls-remote`) holds up its
//! own dependents only: an independent step found dirty meanwhile starts at once.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use provision_executor::events::Recorder;
use provision_executor::{
    apply, ApplyOptions, Cancel, Dispatch, Facts, Outcome, StateFile, StepContext, StepError,
};
use provision_plan::{Document, PlanOptions, Roots};

const CONFIG: &str = r#"
pools:
  - id: cpu
    engine: llamacpp
    model: tiny
    backend: cpu
    devices: []
    provisioning:
      source: {repo: "file:///srv/llama.cpp", ref: v1}
      model: {ref: ./models/tiny.gguf}
"#;

/// How long the clone's check waits for the model to be resolved before it gives up.
const PATIENCE: Duration = Duration::from_secs(10);

/// What has happened so far.
#[derive(Default)]
struct Seen {
    clone_check_started: bool,
    model_resolved: bool,
}

/// The clone's check waits until the model is resolved; the model's check waits until the
/// clone's has started (so the model's step becomes dirty while the clone's check is out).
#[derive(Default)]
struct SlowClone {
    seen: Mutex<Seen>,
    wake: Condvar,
    /// Whether the model's check saw the clone's start, and the clone's the model resolved.
    model_check_saw_clone: Mutex<Option<bool>>,
    clone_check_saw_model: Mutex<Option<(Duration, bool)>>,
}

impl SlowClone {
    fn wait_for(&self, done: impl Fn(&Seen) -> bool) -> bool {
        let guard = self.seen.lock().unwrap();
        let (guard, _) = self
            .wake
            .wait_timeout_while(guard, PATIENCE, |s| !done(s))
            .unwrap();
        done(&guard)
    }

    fn set(&self, f: impl FnOnce(&mut Seen)) {
        f(&mut self.seen.lock().unwrap());
        self.wake.notify_all();
    }
}

impl Dispatch for SlowClone {
    fn facts(&self, cx: &StepContext<'_>) -> Result<Facts, StepError> {
        match cx.step.kind() {
            "git-clone" => {
                let t = Instant::now();
                self.set(|s| s.clone_check_started = true);
                let resolved = self.wait_for(|s| s.model_resolved);
                *self.clone_check_saw_model.lock().unwrap() = Some((t.elapsed(), resolved));
            }
            "model-resolve" => {
                let started = self.wait_for(|s| s.clone_check_started);
                *self.model_check_saw_clone.lock().unwrap() = Some(started);
            }
            _ => {}
        }
        Ok(Facts::new())
    }

    fn run(&self, cx: &StepContext<'_>) -> Result<Outcome, StepError> {
        match cx.step.kind() {
            "preflight-tools" => Ok(Outcome::default()),
            "model-resolve" => {
                self.set(|s| s.model_resolved = true);
                Err(StepError::new("stop here: only the order matters"))
            }
            _ => Err(StepError::new("stop here: only the order matters")),
        }
    }

    fn check_alive(&self, _cx: &StepContext<'_>) -> Result<(), String> {
        Ok(())
    }
}

#[test]
fn a_slow_check_does_not_hold_back_an_independent_step() {
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
    let dispatch = SlowClone::default();
    let opts = ApplyOptions {
        jobs: 4,
        ..ApplyOptions::default()
    };
    apply(
        &plan,
        &dispatch,
        &file,
        &mut state,
        &opts,
        &Recorder::default(),
        &Cancel::new(),
    )
    .unwrap();
    assert_eq!(
        *dispatch.model_check_saw_clone.lock().unwrap(),
        Some(true),
        "the clone was not checked while the model's check was out"
    );
    let (took, resolved) = dispatch
        .clone_check_saw_model
        .lock()
        .unwrap()
        .expect("the clone was checked");
    assert!(
        resolved,
        "the model was not resolved while the clone's check waited {took:?}"
    );
}
