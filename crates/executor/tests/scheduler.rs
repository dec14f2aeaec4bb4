//! The scheduler with a fake dispatch: order, parallelism, failure, freshness, dirty reasons,
//! resumption, cancellation. The plan is a real plan made by the planner.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use provision_executor::events::{EventSink, Recorder};
use provision_executor::{
    apply, is_volatile, preview, ApplyOptions, ApplyReport, Cancel, Dispatch, Event, Facts,
    Outcome, Preview, SaveCounts, State, StateFile, StepContext, StepError, StepResult, StepStatus,
};
use provision_plan::outputs::{ServerIdentity, SpawnOutputs};
use provision_plan::{Backend, Document, Plan, PlanOptions, Roots};

const CONFIG: &str = r#"
pools:
  - id: gpu
    engine: llamacpp
    model: big
    devices: [0]
    provisioning:
      source: {repo: "file:///srv/llama.cpp", ref: v1, build: {cmake_flags: [-DCMAKE_CUDA_ARCHITECTURES=86]}}
      model: {ref: ./models/big.gguf}
      ports: [8080]
  - id: cpu
    engine: llamacpp
    model: tiny
    backend: cpu
    devices: []
    replicas: 2
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

/// A dispatch whose steps sleep, fail on demand, report facts on demand and die on demand.
#[derive(Default)]
struct Fake {
    delay: HashMap<&'static str, Duration>,
    fail: Mutex<HashSet<String>>,
    facts: Mutex<HashMap<String, Facts>>,
    dead: Mutex<HashSet<String>>,
    runs: Mutex<Vec<(String, Instant, Instant)>>,
    pid: AtomicU32,
}

impl Fake {
    fn runs(&self) -> Vec<String> {
        self.runs
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.0.clone())
            .collect()
    }
    fn interval(&self, id: &str) -> (Instant, Instant) {
        let runs = self.runs.lock().unwrap();
        let r = runs
            .iter()
            .rev()
            .find(|r| r.0 == id)
            .unwrap_or_else(|| panic!("{id} did not run"));
        (r.1, r.2)
    }
    fn reset_runs(&self) {
        self.runs.lock().unwrap().clear();
    }
}

impl Dispatch for Fake {
    fn facts(&self, cx: &StepContext<'_>) -> Result<Facts, StepError> {
        Ok(self
            .facts
            .lock()
            .unwrap()
            .get(&cx.step.id)
            .cloned()
            .unwrap_or_default())
    }

    fn run(&self, cx: &StepContext<'_>) -> Result<Outcome, StepError> {
        let start = Instant::now();
        let delay = self
            .delay
            .get(cx.step.kind())
            .copied()
            .unwrap_or(Duration::from_millis(1));
        while start.elapsed() < delay {
            if cx.cancel.is_cancelled() {
                self.runs
                    .lock()
                    .unwrap()
                    .push((cx.step.id.clone(), start, Instant::now()));
                return Err(StepError::cancelled());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        self.runs
            .lock()
            .unwrap()
            .push((cx.step.id.clone(), start, Instant::now()));
        if self.fail.lock().unwrap().contains(&cx.step.id) {
            return Err(StepError::new(format!("{} broke", cx.step.id)).hint("fix it"));
        }
        if cx.step.kind() != "spawn" {
            return Ok(Outcome::default());
        }
        // Above 1: a state recording pid 0 or 1 is corrupt.
        let pid = 1000 + self.pid.fetch_add(1, Ordering::SeqCst);
        Ok(Outcome::new(fake_server(pid, &cx.step.id)))
    }

    fn check_alive(&self, cx: &StepContext<'_>) -> Result<(), String> {
        match self.dead.lock().unwrap().contains(&cx.step.id) {
            true => Err("process is gone".into()),
            false => Ok(()),
        }
    }
}

/// What a spawn step records, of a server that is not there.
fn fake_server(pid: u32, id: &str) -> SpawnOutputs {
    SpawnOutputs {
        server: ServerIdentity {
            pid,
            pgid: pid,
            start_time: 1,
            boot_id: String::new(),
            instance: None,
        },
        port: 1,
        host: "127.0.0.1".into(),
        url: "http://127.0.0.1:1".into(),
        log: format!("{id}.log"),
        pid_file: format!("{id}.pid"),
        binary: "llama-server".into(),
        binary_digest: "sha256:00".into(),
        backend: Backend::Cpu,
        devices: Vec::new(),
        started_at: String::new(),
        handoff_path: None,
        gpu_layers: None,
    }
}

struct Run {
    _dir: tempfile::TempDir,
    plan: Plan,
    file: StateFile,
}

impl Run {
    fn new() -> Run {
        let dir = tempfile::tempdir().unwrap();
        let plan = plan_for(dir.path());
        let file = StateFile::new(dir.path().join("runtime/state.json"));
        Run {
            _dir: dir,
            plan,
            file,
        }
    }

    fn apply(&self, fake: &Fake, opts: &ApplyOptions) -> (ApplyReport, Vec<Event>) {
        self.apply_with(fake, opts, &Cancel::new())
    }

    fn apply_with(
        &self,
        fake: &Fake,
        opts: &ApplyOptions,
        cancel: &Cancel,
    ) -> (ApplyReport, Vec<Event>) {
        let mut state = self.file.load().unwrap();
        let events = Recorder::default();
        let report = apply(
            &self.plan, fake, &self.file, &mut state, opts, &events, cancel,
        )
        .unwrap();
        // What was saved is what apply ended with.
        assert_eq!(self.file.load().unwrap(), state);
        (report, events.events())
    }

    fn state(&self) -> State {
        self.file.load().unwrap()
    }
}

fn opts() -> ApplyOptions {
    ApplyOptions {
        jobs: 8,
        build_jobs: 2,
        fail_fast: false,
        force: false,
    }
}

fn ids_where(report: &ApplyReport, f: impl Fn(&StepResult) -> bool) -> Vec<String> {
    report
        .results
        .iter()
        .filter(|(_, r)| f(r))
        .map(|(id, _)| id.clone())
        .collect()
}

fn reasons(run: &Run, ids: &[String]) -> String {
    let state = run.state();
    ids.iter()
        .map(|id| {
            format!(
                "{id}: {}",
                state.steps[id]
                    .reason
                    .as_ref()
                    .map(|r| r.to_string())
                    .unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_step_starts_after_its_dependencies_finish() {
    let run = Run::new();
    let fake = Fake {
        delay: [
            ("git-clone", Duration::from_millis(20)),
            ("model-resolve", Duration::from_millis(20)),
        ]
        .into(),
        ..Fake::default()
    };
    let (report, _) = run.apply(&fake, &opts());
    assert!(report.ok(), "{report:?}");
    assert_eq!(fake.runs().len(), run.plan.steps.len());
    for step in &run.plan.steps {
        let (start, _) = fake.interval(&step.id);
        for dep in &step.deps {
            let (_, dep_end) = fake.interval(dep);
            assert!(
                dep_end <= start,
                "{} started before {dep} finished",
                step.id
            );
        }
    }
}

#[test]
fn independent_slow_steps_overlap_and_builds_do_not() {
    let run = Run::new();
    let fake = Fake {
        delay: [
            ("git-clone", Duration::from_millis(150)),
            ("model-resolve", Duration::from_millis(150)),
            ("cmake-build", Duration::from_millis(100)),
        ]
        .into(),
        ..Fake::default()
    };
    let (report, _) = run.apply(&fake, &opts());
    assert!(report.ok());
    let clone = fake.interval("git-clone:llama.cpp@v1");
    let model = fake.interval("model-resolve:tiny.gguf");
    assert!(
        clone.0 < model.1 && model.0 < clone.1,
        "clone and model resolve should overlap"
    );
    let builds: Vec<_> = run
        .plan
        .steps
        .iter()
        .filter(|s| s.kind() == "cmake-build")
        .map(|s| fake.interval(&s.id))
        .collect();
    assert_eq!(builds.len(), 2);
    assert!(
        builds[0].1 <= builds[1].0 || builds[1].1 <= builds[0].0,
        "two builds ran at once"
    );
}

#[test]
fn jobs_bounds_concurrency() {
    let run = Run::new();
    let fake = Fake {
        delay: [
            ("spawn", Duration::from_millis(40)),
            ("model-resolve", Duration::from_millis(40)),
        ]
        .into(),
        ..Fake::default()
    };
    let (report, _) = run.apply(&fake, &ApplyOptions { jobs: 1, ..opts() });
    assert!(report.ok());
    let mut intervals: Vec<_> = fake
        .runs
        .lock()
        .unwrap()
        .iter()
        .map(|r| (r.1, r.2))
        .collect();
    intervals.sort();
    for pair in intervals.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "with --jobs 1 steps overlapped");
    }
}

#[test]
fn a_failure_stops_exactly_its_dependents() {
    let run = Run::new();
    let fake = Fake::default();
    fake.fail
        .lock()
        .unwrap()
        .insert("model-resolve:tiny.gguf".into());
    let (report, events) = run.apply(&fake, &opts());
    assert!(!report.ok());
    assert_eq!(
        ids_where(&report, |r| matches!(r, StepResult::Failed(_))),
        ["model-resolve:tiny.gguf"]
    );
    let blocked = ids_where(&report, |r| matches!(r, StepResult::Blocked(_)));
    let mut expected: Vec<String> = run
        .plan
        .steps
        .iter()
        .filter(|s| {
            s.pools == ["cpu"] && s.kind() != "cmake-configure" && s.kind() != "cmake-build"
        })
        .map(|s| s.id.clone())
        .filter(|id| id != "model-resolve:tiny.gguf")
        .collect();
    expected.sort();
    let mut blocked_sorted = blocked.clone();
    blocked_sorted.sort();
    assert_eq!(blocked_sorted, expected);
    // The independent GPU pool finished.
    assert!(report
        .results
        .iter()
        .filter(|(id, _)| id.contains("gpu"))
        .all(|(_, r)| r.passed()));
    let failed = events
        .iter()
        .find(|e| matches!(e, Event::Failed { .. }))
        .unwrap();
    let Event::Failed { error, hint, .. } = failed else {
        unreachable!()
    };
    assert_eq!(
        (error.as_str(), hint.as_deref()),
        ("model-resolve:tiny.gguf broke", Some("fix it"))
    );
    assert_eq!(
        run.state().steps["model-resolve:tiny.gguf"].status,
        StepStatus::Failed
    );
    assert!(run.state().steps["model-resolve:tiny.gguf"]
        .fingerprint
        .is_none());
}

#[test]
fn fail_fast_stops_everything() {
    let run = Run::new();
    let fake = Fake {
        delay: [("cmake-build", Duration::from_millis(300))].into(),
        ..Fake::default()
    };
    fake.fail
        .lock()
        .unwrap()
        .insert("model-resolve:tiny.gguf".into());
    let (report, _) = run.apply(
        &fake,
        &ApplyOptions {
            fail_fast: true,
            ..opts()
        },
    );
    assert!(report.cancelled);
    assert!(report.count(|r| matches!(r, StepResult::NotStarted)) > 0);
    assert!(
        !fake.runs().iter().any(|id| id.starts_with("spawn:")),
        "nothing after the failure started"
    );
}

#[test]
fn first_apply_runs_everything_second_skips_everything() {
    let run = Run::new();
    let fake = Fake::default();
    let (first, _) = run.apply(&fake, &opts());
    assert_eq!(first.count(|r| *r == StepResult::Ran), run.plan.steps.len());
    insta::assert_snapshot!(
        "first_apply_reasons",
        reasons(&run, &ids_where(&first, |_| true))
    );
    fake.reset_runs();
    let (second, events) = run.apply(&fake, &opts());
    assert!(fake.runs().is_empty(), "ran again: {:?}", fake.runs());
    assert_eq!(
        second.count(|r| *r == StepResult::Fresh) + second.count(|r| *r == StepResult::Kept),
        run.plan.steps.len()
    );
    let kept = ids_where(&second, |r| *r == StepResult::Kept);
    assert!(
        kept.iter()
            .all(|id| ["gpu-check", "vram-fit:", "spawn:", "probe:"]
                .iter()
                .any(|p| id.starts_with(p))),
        "{kept:?}"
    );
    assert!(events.iter().all(|e| matches!(e, Event::Skipped { .. })));
}

#[test]
fn a_changed_fact_dirties_exactly_that_step_and_its_dependents() {
    let run = Run::new();
    let fake = Fake::default();
    run.apply(&fake, &opts());
    fake.reset_runs();
    // The branch moved.
    fake.facts.lock().unwrap().insert(
        "git-clone:llama.cpp@v1".into(),
        [("commit".to_string(), "b".repeat(40))].into(),
    );
    let (report, _) = run.apply(&fake, &opts());
    let ran = ids_where(&report, |r| *r == StepResult::Ran);
    // Everything downstream of the clone, nothing else.
    let mut downstream: HashSet<String> = ["git-clone:llama.cpp@v1".to_string()].into();
    for step in &run.plan.steps {
        if step.deps.iter().any(|d| downstream.contains(d)) {
            downstream.insert(step.id.clone());
        }
    }
    let mut expected: Vec<String> = run
        .plan
        .steps
        .iter()
        .map(|s| s.id.clone())
        .filter(|id| downstream.contains(id))
        .collect();
    expected.sort();
    let mut ran_sorted = ran.clone();
    ran_sorted.sort();
    assert_eq!(ran_sorted, expected);
    insta::assert_snapshot!("moved_branch_reasons", reasons(&run, &ran));
}

/// A gate (vram-fit) that runs again — free memory read anew, the pools beside it changed —
/// and records something else dirties none of its dependents: no server restarts.
#[test]
fn a_gate_that_runs_again_restarts_nothing() {
    let run = Run::new();
    let fake = Fake::default();
    run.apply(&fake, &opts());
    fake.reset_runs();
    fake.facts.lock().unwrap().insert(
        "vram-fit:gpu".into(),
        [("free".to_string(), "1 MiB less".to_string())].into(),
    );
    let (report, _) = run.apply(&fake, &opts());
    let ran = ids_where(&report, |r| *r == StepResult::Ran);
    assert_eq!(ran, ["vram-fit:gpu"], "{:?}", report.results);
    assert!(
        depends_on(&run.plan, "spawn:gpu/r0", "vram-fit:gpu"),
        "the servers wait for it"
    );
    // A failing gate stops its dependents; a running server is left alone.
    fake.facts.lock().unwrap().insert(
        "vram-fit:gpu".into(),
        [("free".to_string(), "none".to_string())].into(),
    );
    fake.fail.lock().unwrap().insert("vram-fit:gpu".into());
    let (report, _) = run.apply(&fake, &opts());
    assert!(ids_where(&report, |r| *r == StepResult::Ran).is_empty());
    let failed: Vec<&str> = report.failures().iter().map(|(id, _)| *id).collect();
    assert_eq!(failed, ["vram-fit:gpu"]);
    assert!(ids_where(&report, |r| matches!(r, StepResult::Blocked(_)))
        .contains(&"spawn:gpu/r0".to_string()));
}

#[test]
fn a_changed_spec_names_the_field() {
    let run = Run::new();
    let fake = Fake::default();
    run.apply(&fake, &opts());
    // Same config, one replica-level flag changed for the cpu pool.
    let mut plan = run.plan.clone();
    for step in &mut plan.steps {
        if let provision_plan::StepSpec::Spawn(s) = &mut step.spec {
            if s.pool == "cpu" {
                s.argv.push("--threads".into());
                s.argv.push("2".into());
            }
        }
    }
    let mut state = run.file.load().unwrap();
    let report = apply(
        &plan,
        &fake,
        &run.file,
        &mut state,
        &opts(),
        &Recorder::default(),
        &Cancel::new(),
    )
    .unwrap();
    let ran = ids_where(&report, |r| *r == StepResult::Ran);
    assert_eq!(
        ran,
        [
            "spawn:cpu/r0",
            "probe:cpu/r0",
            "handoff:cpu/r0",
            "spawn:cpu/r1",
            "probe:cpu/r1",
            "handoff:cpu/r1"
        ]
    );
    insta::assert_snapshot!("changed_flag_reasons", reasons(&run, &ran));
}

#[test]
fn a_failure_at_step_k_resumes_at_k() {
    let run = Run::new();
    let fake = Fake::default();
    let k = "cmake-build:llama.cpp@v1#".to_string();
    let build = run
        .plan
        .steps
        .iter()
        .find(|s| s.id.starts_with(&k) && s.pools == ["cpu"])
        .unwrap()
        .id
        .clone();
    fake.fail.lock().unwrap().insert(build.clone());
    let (first, _) = run.apply(&fake, &opts());
    assert!(!first.ok());
    let passed_before: Vec<String> = ids_where(&first, |r| r.passed());
    fake.fail.lock().unwrap().clear();
    fake.reset_runs();
    let (second, _) = run.apply(&fake, &opts());
    assert!(second.ok());
    let ran = fake.runs();
    assert_eq!(ran.first(), Some(&build), "resumed at the failed step");
    assert!(ran.iter().all(|id| !passed_before.contains(id)
        || id.starts_with("spawn:")
        || id.starts_with("probe:")));
    assert!(reasons(&run, &[build]).ends_with("last run failed"));
}

/// Whether step `id` depends on `on`, directly or not.
fn depends_on(plan: &Plan, id: &str, on: &str) -> bool {
    let mut todo = vec![id.to_string()];
    let mut seen = HashSet::new();
    while let Some(next) = todo.pop() {
        if !seen.insert(next.clone()) {
            continue;
        }
        if let Some(step) = plan.step(&next) {
            for dep in &step.deps {
                if dep == on {
                    return true;
                }
                todo.push(dep.clone());
            }
        }
    }
    false
}

#[test]
fn cancelling_stops_running_steps_and_the_next_apply_reruns_them() {
    let run = Run::new();
    let fake = Fake {
        delay: [("git-clone", Duration::from_secs(30))].into(),
        ..Fake::default()
    };
    let cancel = Cancel::new();
    // Cancelled once the quick steps are done and only the clone runs (not after a fixed
    // delay: on a loaded machine the quick ones may still be running then).
    let clone = "git-clone:llama.cpp@v1";
    let quick = run
        .plan
        .steps
        .iter()
        .filter(|s| !depends_on(&run.plan, &s.id, clone) && s.id != clone)
        .count();
    let (report, cancelled_after) = std::thread::scope(|scope| {
        let canceller = scope.spawn(|| {
            let since = Instant::now();
            while fake.runs().len() < quick && since.elapsed() < Duration::from_secs(25) {
                std::thread::sleep(Duration::from_millis(2));
            }
            cancel.cancel();
            Instant::now()
        });
        let (report, _) = run.apply_with(&fake, &opts(), &cancel);
        (report, canceller.join().unwrap())
    });
    assert!(
        cancelled_after.elapsed() < Duration::from_secs(5),
        "cancellation took too long"
    );
    assert!(report.cancelled);
    assert_eq!(
        ids_where(&report, |r| *r == StepResult::Cancelled),
        ["git-clone:llama.cpp@v1"]
    );
    assert_eq!(
        run.state().steps["git-clone:llama.cpp@v1"].status,
        StepStatus::Cancelled
    );

    let fake = Fake::default();
    let (again, _) = run.apply(&fake, &opts());
    assert!(again.ok());
    assert!(reasons(&run, &["git-clone:llama.cpp@v1".into()]).ends_with("last run was cancelled"));
}

#[test]
fn a_dead_server_is_restarted_alone() {
    let run = Run::new();
    let fake = Fake::default();
    run.apply(&fake, &opts());
    fake.reset_runs();
    fake.dead.lock().unwrap().insert("spawn:cpu/r1".into());
    let (report, _) = run.apply(&fake, &opts());
    fake.dead.lock().unwrap().clear();
    assert_eq!(
        ids_where(&report, |r| *r == StepResult::Ran),
        ["spawn:cpu/r1", "probe:cpu/r1", "handoff:cpu/r1"]
    );
    insta::assert_snapshot!(
        "dead_server_reasons",
        reasons(
            &run,
            &[
                "spawn:cpu/r1".into(),
                "probe:cpu/r1".into(),
                "handoff:cpu/r1".into()
            ]
        )
    );
}

#[test]
fn a_missing_output_reruns_the_step() {
    let run = Run::new();
    let dir = tempfile::tempdir().unwrap();
    let artifact = dir.path().join("llama-server");
    std::fs::write(&artifact, "bin").unwrap();
    struct WithArtifact<'a>(&'a Fake, std::path::PathBuf);
    impl Dispatch for WithArtifact<'_> {
        fn run(&self, cx: &StepContext<'_>) -> Result<Outcome, StepError> {
            let mut o = self.0.run(cx)?;
            if cx.step.kind() == "cmake-build" {
                o.artifacts.push(self.1.clone());
            }
            Ok(o)
        }
    }
    let fake = Fake::default();
    let d = WithArtifact(&fake, artifact.clone());
    let mut state = run.file.load().unwrap();
    apply(
        &run.plan,
        &d,
        &run.file,
        &mut state,
        &opts(),
        &Recorder::default(),
        &Cancel::new(),
    )
    .unwrap();
    std::fs::remove_file(&artifact).unwrap();
    let report = apply(
        &run.plan,
        &d,
        &run.file,
        &mut state,
        &opts(),
        &Recorder::default(),
        &Cancel::new(),
    )
    .unwrap();
    let ran = ids_where(&report, |r| *r == StepResult::Ran);
    assert!(
        ran.iter()
            .filter(|id| id.starts_with("cmake-build"))
            .count()
            == 2,
        "{ran:?}"
    );
    let build = ran.iter().find(|id| id.starts_with("cmake-build")).unwrap();
    assert!(reasons(&run, std::slice::from_ref(build)).contains("output missing"));
}

#[test]
fn preview_says_what_would_run_and_why() {
    let run = Run::new();
    let fake = Fake::default();
    let empty = preview(&run.plan, &fake, &State::default(), false);
    assert!(empty.iter().all(|(_, p)| matches!(p, Preview::Run(_))));
    run.apply(&fake, &opts());
    let state = run.state();
    assert!(preview(&run.plan, &fake, &state, false)
        .iter()
        .all(|(_, p)| matches!(p, Preview::Skip { .. })));
    fake.dead.lock().unwrap().insert("spawn:gpu/r0".into());
    let shown: Vec<String> = preview(&run.plan, &fake, &state, false)
        .into_iter()
        .filter_map(|(id, p)| match p {
            Preview::Run(r) => Some(format!("{id}: {r}")),
            Preview::Skip { .. } => None,
        })
        .collect();
    insta::assert_snapshot!("preview_dead_server", shown.join("\n"));
    assert!(
        fake.runs().len() == run.plan.steps.len(),
        "preview ran nothing"
    );
}

#[test]
fn steps_of_a_removed_replica_are_retired_endpoints_first() {
    struct Retirer(Fake, Mutex<Vec<String>>, Mutex<HashSet<String>>);
    impl Dispatch for Retirer {
        fn run(&self, cx: &StepContext<'_>) -> Result<Outcome, StepError> {
            self.0.run(cx)
        }
        fn retire(
            &self,
            id: &str,
            _record: &provision_executor::StepRecord,
        ) -> Result<(), StepError> {
            self.1.lock().unwrap().push(id.to_string());
            match self.2.lock().unwrap().contains(id) {
                true => Err(StepError::new("cannot stop it")),
                false => Ok(()),
            }
        }
    }
    let run = Run::new();
    let d = Retirer(Fake::default(), Mutex::default(), Mutex::default());
    let mut state = run.file.load().unwrap();
    apply(
        &run.plan,
        &d,
        &run.file,
        &mut state,
        &opts(),
        &Recorder::default(),
        &Cancel::new(),
    )
    .unwrap();
    // The config now has one cpu replica: r1's steps are no longer known.
    let known: std::collections::BTreeSet<String> = run
        .plan
        .steps
        .iter()
        .map(|s| s.id.clone())
        .filter(|id| !id.ends_with("cpu/r1"))
        .collect();
    d.2.lock().unwrap().insert("spawn:cpu/r1".into());
    let failures =
        provision_executor::retire_removed(&known, &d, &run.file, &mut state, &Recorder::default())
            .unwrap();
    assert_eq!(
        *d.1.lock().unwrap(),
        ["handoff:cpu/r1", "probe:cpu/r1", "spawn:cpu/r1"]
    );
    assert_eq!(
        failures.len(),
        1,
        "the server that could not be stopped is reported"
    );
    let saved = run.file.load().unwrap();
    assert!(
        !saved.steps.contains_key("handoff:cpu/r1") && !saved.steps.contains_key("probe:cpu/r1")
    );
    assert!(
        saved.steps.contains_key("spawn:cpu/r1"),
        "kept to retry next apply"
    );
    assert!(saved.steps.contains_key("spawn:cpu/r0"));
}

/// Writes of the state file during `f`.
fn saves_during(run: &Run, f: impl FnOnce()) -> SaveCounts {
    let before = run.file.save_counts();
    f();
    let after = run.file.save_counts();
    SaveCounts {
        saves: after.saves - before.saves,
        synced: after.synced - before.synced,
    }
}

#[test]
fn restarted_servers_are_recorded_once_per_pass_without_fsync() {
    let run = Run::new();
    let fake = Fake::default();
    run.apply(&fake, &opts());
    fake.reset_runs();
    // Every server died: 3 spawns, 3 probes, 3 handoffs rerun, nothing else.
    fake.dead.lock().unwrap().extend(
        run.plan
            .steps
            .iter()
            .filter(|s| s.kind() == "spawn")
            .map(|s| s.id.clone()),
    );
    let mut report = None;
    let counts = saves_during(&run, || report = Some(run.apply(&fake, &opts()).0));
    let ran = ids_where(&report.unwrap(), |r| *r == StepResult::Ran);
    assert_eq!(ran.len(), 9, "{ran:?}");
    // A write per pass that starts steps (the spawns may each start in a pass of their own: a
    // dirty step does not wait for the other liveness checks), recording every result taken
    // by then; a result that starts nothing (a handoff's) may take a write of its own. So at
    // most one write per step run, one per handoff and the last: 13. A write per start and per
    // finish would be 18.
    let handoffs = ran.iter().filter(|id| id.starts_with("handoff:")).count() as u64;
    assert!(
        counts.saves <= ran.len() as u64 + handoffs + 1,
        "{counts:?} for {} steps run",
        ran.len()
    );
    assert_eq!(counts.synced, 0, "records of servers are not fsynced");
}

#[test]
fn one_write_per_pass_fsynced_exactly_when_a_durable_record_changed() {
    let run = Run::new();
    let fake = Fake::default();
    // One step at a time: each pass records one result and starts the next step, so the
    // writes are known exactly from the order the steps ran in.
    let counts = saves_during(&run, || {
        let (report, _) = run.apply(&fake, &ApplyOptions { jobs: 1, ..opts() });
        assert!(report.ok());
    });
    let by_id: HashMap<&str, &provision_plan::Step> =
        run.plan.steps.iter().map(|s| (s.id.as_str(), s)).collect();
    let volatile: Vec<bool> = fake
        .runs()
        .iter()
        .map(|id| is_volatile(by_id[id.as_str()]))
        .collect();
    let n = volatile.len();
    assert_eq!(n, run.plan.steps.len());
    assert!(volatile.iter().any(|v| *v) && volatile.iter().any(|v| !*v));
    // Write k records the result of step k (k >= 1) and the start of step k + 1 (k < n).
    let synced = (0..=n)
        .filter(|&k| (k >= 1 && !volatile[k - 1]) || (k < n && !volatile[k]))
        .count() as u64;
    assert_eq!(
        counts,
        SaveCounts {
            saves: n as u64 + 1,
            synced
        },
        "volatile by run order: {volatile:?}"
    );
}

/// Reads the state file when a step starts running and when an event is emitted: what they
/// announce must already be on disk (a killed apply leaves no step running that the state
/// file does not show as running, with its old fingerprint cleared).
struct OnDisk<'a> {
    fake: &'a Fake,
    file: StateFile,
    plan: &'a Plan,
    violations: Mutex<Vec<String>>,
    checked: AtomicU64,
}

impl OnDisk<'_> {
    fn check(&self, what: &str, id: &str, want: StepStatus) {
        self.checked.fetch_add(1, Ordering::SeqCst);
        let state = self.file.load().unwrap();
        let mut bad = Vec::new();
        match state.steps.get(id) {
            Some(r)
                if r.status == want && r.fingerprint.is_some() == (want == StepStatus::Passed) => {}
            r => bad.push(format!(
                "{what} {id}: on disk {:?}",
                r.map(|r| (r.status, r.fingerprint.clone()))
            )),
        }
        if want == StepStatus::Running {
            let step = self.plan.steps.iter().find(|s| s.id == id).unwrap();
            for dep in &step.deps {
                if state.steps.get(dep).map(|r| r.status) != Some(StepStatus::Passed) {
                    bad.push(format!("{what} {id}: dependency {dep} not passed on disk"));
                }
            }
        }
        self.violations.lock().unwrap().extend(bad);
    }
}

impl Dispatch for OnDisk<'_> {
    fn run(&self, cx: &StepContext<'_>) -> Result<Outcome, StepError> {
        self.check("run", &cx.step.id, StepStatus::Running);
        self.fake.run(cx)
    }
}

impl EventSink for OnDisk<'_> {
    fn emit(&self, event: Event) {
        match &event {
            Event::Started { step, .. } => self.check("started", step, StepStatus::Running),
            Event::Finished { step, .. } => self.check("finished", step, StepStatus::Passed),
            Event::Failed { step, .. } => self.check("failed", step, StepStatus::Failed),
            _ => {}
        }
    }
}

#[test]
fn a_step_runs_and_its_events_are_emitted_only_after_the_state_says_so() {
    let run = Run::new();
    let fake = Fake {
        delay: [("git-clone", Duration::from_millis(20))].into(),
        ..Fake::default()
    };
    fake.fail.lock().unwrap().insert("probe:cpu/r1".into());
    let d = OnDisk {
        fake: &fake,
        file: run.file.clone(),
        plan: &run.plan,
        violations: Mutex::default(),
        checked: AtomicU64::new(0),
    };
    let mut state = run.file.load().unwrap();
    let report = apply(
        &run.plan,
        &d,
        &run.file,
        &mut state,
        &opts(),
        &d,
        &Cancel::new(),
    )
    .unwrap();
    assert_eq!(report.failures().len(), 1);
    assert_eq!(run.file.load().unwrap(), state);
    // Every step ran and started (2 checks each) and finished or failed (1 more).
    assert_eq!(
        d.checked.load(Ordering::SeqCst),
        3 * run.plan.steps.len() as u64 - 3,
        "handoff:cpu/r1 never ran"
    );
    assert_eq!(*d.violations.lock().unwrap(), Vec::<String>::new());
}

/// Two steps whose liveness checks each wait for the other: they pass only if the checks
/// run at the same time (on the old scheduler, one after another on its own thread, the
/// first one waited alone and gave up).
struct Meeting<'a> {
    fake: &'a Fake,
    pair: [String; 2],
    arrived: Mutex<usize>,
    met: std::sync::Condvar,
}

impl Dispatch for Meeting<'_> {
    fn facts(&self, cx: &StepContext<'_>) -> Result<Facts, StepError> {
        self.fake.facts(cx)
    }
    fn run(&self, cx: &StepContext<'_>) -> Result<Outcome, StepError> {
        self.fake.run(cx)
    }
    fn check_alive(&self, cx: &StepContext<'_>) -> Result<(), String> {
        if !self.pair.contains(&cx.step.id) {
            return Ok(());
        }
        let mut arrived = self.arrived.lock().unwrap();
        *arrived += 1;
        self.met.notify_all();
        let (arrived, _) = self
            .met
            .wait_timeout_while(arrived, Duration::from_secs(5), |n| *n < 2)
            .unwrap();
        match *arrived >= 2 {
            true => Ok(()),
            false => Err(format!("{} was checked alone", cx.step.id)),
        }
    }
}

#[test]
fn liveness_checks_of_independent_steps_run_at_the_same_time() {
    let run = Run::new();
    let fake = Fake::default();
    assert!(run.apply(&fake, &opts()).0.ok());
    fake.reset_runs();
    let meeting = Meeting {
        fake: &fake,
        pair: ["spawn:cpu/r0".into(), "spawn:cpu/r1".into()],
        arrived: Mutex::new(0),
        met: std::sync::Condvar::new(),
    };
    let mut state = run.file.load().unwrap();
    let report = apply(
        &run.plan,
        &meeting,
        &run.file,
        &mut state,
        &opts(),
        &Recorder::default(),
        &Cancel::new(),
    )
    .unwrap();
    assert!(report.ok());
    assert_eq!(
        fake.runs(),
        Vec::<String>::new(),
        "{}",
        reasons(&run, &fake.runs())
    );
}

#[test]
fn the_scheduler_wakes_only_when_a_step_reports() {
    let run = Run::new();
    let fake = Fake {
        delay: [("cmake-build", Duration::from_millis(2000))].into(),
        ..Fake::default()
    };
    let (report, _) = run.apply(&fake, &opts());
    assert!(report.ok());
    // Each step reports at most twice (its freshness check, its run); a pass follows at least
    // one report. A scheduler that polls would pass about every 50 ms of the 4 s of builds.
    let bound = 2 * run.plan.steps.len() as u64 + 1;
    assert!(
        report.passes <= bound,
        "{} passes for {} steps",
        report.passes,
        run.plan.steps.len()
    );
}

/// Counts the freshness checks (facts, liveness) in flight at once.
#[derive(Default)]
struct Checks<'a> {
    fake: Fake,
    in_flight: AtomicU64,
    most: AtomicU64,
    _p: std::marker::PhantomData<&'a ()>,
}

impl Checks<'_> {
    fn check<T>(&self, f: impl FnOnce() -> T) -> T {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(5));
        let out = f();
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        out
    }
}

impl Dispatch for Checks<'_> {
    fn facts(&self, cx: &StepContext<'_>) -> Result<Facts, StepError> {
        self.check(|| self.fake.facts(cx))
    }
    fn run(&self, cx: &StepContext<'_>) -> Result<Outcome, StepError> {
        self.fake.run(cx)
    }
    fn check_alive(&self, cx: &StepContext<'_>) -> Result<(), String> {
        self.check(|| self.fake.check_alive(cx))
    }
}

#[test]
fn freshness_checks_are_bounded_by_jobs() {
    let run = Run::new();
    let checks = Checks::default();
    let mut state = run.file.load().unwrap();
    let mut apply_once = |jobs| {
        let opts = ApplyOptions { jobs, ..opts() };
        let events = Recorder::default();
        apply(
            &run.plan,
            &checks,
            &run.file,
            &mut state,
            &opts,
            &events,
            &Cancel::new(),
        )
        .unwrap()
    };
    assert!(apply_once(8).ok());
    checks.most.store(0, Ordering::SeqCst);
    let report = apply_once(2);
    assert_eq!(report.count(|r| *r == StepResult::Ran), 0);
    let most = checks.most.load(Ordering::SeqCst);
    assert!(most <= 2, "{most} checks at once with --jobs 2");
}
