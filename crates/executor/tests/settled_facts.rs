//! Facts a step settles by running (a model's digest, too costly for a check): recorded in
//! place of the check's placeholder, so the next apply, whose check finds them cheaply (a
//! digest cache), finds the step fresh; and a rerun that settles the same facts dirties none
//! of its dependents.

use std::collections::BTreeMap;
use std::sync::Mutex;

use provision_executor::events::Recorder;
use provision_executor::{
    apply, ApplyOptions, ApplyReport, Cancel, Dispatch, Facts, Outcome, StateFile, StepContext,
    StepError, StepResult,
};
use provision_plan::{Document, Plan, PlanOptions, Roots};

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

fn plan_for(dir: &std::path::Path) -> Plan {
    let doc = Document::parse("pools.yaml", CONFIG.into()).unwrap();
    let valid = provision_plan::validate(&doc).unwrap();
    let roots = Roots {
        cache: dir.join("cache").display().to_string(),
        runtime: dir.join("runtime").display().to_string(),
        config_dir: dir.display().to_string(),
    };
    provision_plan::plan(&valid, &PlanOptions { roots, pool: None }).unwrap()
}

/// A model-resolve whose check reads a digest from a cache (a placeholder when it is not
/// there) and whose run "hashes" the model, caches the digest and settles it.
#[derive(Default)]
struct Hashing {
    cache: Mutex<Option<String>>,
    hashed: Mutex<u32>,
    runs: Mutex<Vec<String>>,
}

const DIGEST: &str = "sha256:abc";

impl Dispatch for Hashing {
    fn facts(&self, cx: &StepContext<'_>) -> Result<Facts, StepError> {
        if cx.step.kind() != "model-resolve" {
            return Ok(Facts::new());
        }
        let digest = self.cache.lock().unwrap().clone();
        Ok([("digest".into(), digest.unwrap_or_else(|| "pending".into()))].into())
    }

    fn run(&self, cx: &StepContext<'_>) -> Result<Outcome, StepError> {
        self.runs.lock().unwrap().push(cx.step.id.clone());
        if cx.step.kind() != "model-resolve" {
            return Ok(Outcome::default());
        }
        *self.hashed.lock().unwrap() += 1;
        *self.cache.lock().unwrap() = Some(DIGEST.into());
        Ok(Outcome::default().settle([("digest".into(), DIGEST.into())].into()))
    }
}

fn apply_once(plan: &Plan, file: &StateFile, d: &Hashing) -> ApplyReport {
    d.runs.lock().unwrap().clear();
    let mut state = file.load().unwrap();
    let opts = ApplyOptions {
        jobs: 4,
        build_jobs: 1,
        fail_fast: false,
        force: false,
    };
    let report = apply(
        plan,
        d,
        file,
        &mut state,
        &opts,
        &Recorder::default(),
        &Cancel::new(),
    )
    .unwrap();
    assert!(report.ok(), "{:?}", report.results);
    report
}

fn ran(report: &ApplyReport) -> Vec<&str> {
    report
        .results
        .iter()
        .filter(|(_, r)| *r == StepResult::Ran)
        .map(|(id, _)| id.as_str())
        .collect()
}

#[test]
fn a_settled_digest_is_recorded_and_the_next_apply_is_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_for(dir.path());
    let file = StateFile::new(dir.path().join("runtime/state.json"));
    let d = Hashing::default();
    let first = apply_once(&plan, &file, &d);
    assert_eq!(ran(&first).len(), plan.steps.len());
    let state = file.load().unwrap();
    let model = plan
        .steps
        .iter()
        .find(|s| s.kind() == "model-resolve")
        .unwrap();
    // The record holds the settled digest, not the check's placeholder.
    let recorded: &BTreeMap<String, String> = &state.steps[&model.id].facts;
    assert_eq!(recorded["digest"], DIGEST);

    // The check now finds the digest in the cache: fresh, nothing hashed again.
    let second = apply_once(&plan, &file, &d);
    assert_eq!(ran(&second), Vec::<&str>::new());
    assert_eq!(*d.hashed.lock().unwrap(), 1);

    // The cache is lost: the model is hashed again, settles the same digest, and nothing
    // downstream of it runs again (no server restarted).
    *d.cache.lock().unwrap() = None;
    let third = apply_once(&plan, &file, &d);
    assert_eq!(ran(&third), vec![model.id.as_str()]);
    assert_eq!(*d.hashed.lock().unwrap(), 2);
}
