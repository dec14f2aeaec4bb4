//! A rig for the spawn/probe/handoff tests: a real plan (mode binary, the fake llama-server as
//! the binary, a CPU pool), a state file, and a small runner that gives each step its
//! dependencies' outputs and its previous outputs the way the executor does.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use provision_executor::{
    Outcome, State, StateFile, StepContext, StepError, StepRecord, StepStatus,
};
use provision_plan::config::Backend;
use provision_plan::outputs::{
    HandoffOutputs, KindOutputs, ModelResolveOutputs, ProbeOutputs, ServerIdentity, SpawnOutputs,
};
use provision_plan::redact::Redactor;
use provision_plan::{Step, StepOutputs, StepSpec};
use provision_steps_spawn as spawn;
use provision_steps_spawn::identity;
use provision_steps_spawn::process::{group_members, ServerProcess};
use provision_steps_testkit::Workspace;
use serde_json::Value;

pub const FAKE: &str = env!("CARGO_BIN_EXE_fake-llama-server");

/// What the test pool looks like.
pub struct Pool<'a> {
    pub replicas: u32,
    pub ports: Option<Vec<u16>>,
    pub env: &'a [(&'a str, &'a str)],
    pub flags: &'a [&'a str],
    pub timeout_ms: u64,
    pub handoff_path: Option<&'a str>,
    /// `handoff_group_readable: true`.
    pub group_readable: bool,
}

impl Default for Pool<'_> {
    fn default() -> Self {
        Pool {
            replicas: 1,
            ports: None,
            env: &[],
            flags: &["--threads", "1"],
            timeout_ms: 30_000,
            handoff_path: None,
            group_readable: false,
        }
    }
}

pub fn config(p: &Pool<'_>) -> String {
    let env: Vec<String> = p.env.iter().map(|(k, v)| format!("{k}: \"{v}\"")).collect();
    let flags: Vec<String> = p.flags.iter().map(|f| format!("\"{f}\"")).collect();
    let ports = p
        .ports
        .as_ref()
        .map(|ps| format!("      ports: {ps:?}\n"))
        .unwrap_or_default();
    let handoff = p
        .handoff_path
        .map(|h| format!("    handoff_path: {h}\n"))
        .unwrap_or_default()
        + if p.group_readable {
            "    handoff_group_readable: true\n"
        } else {
            ""
        };
    format!(
        "pools:
  - id: fake
    engine: llamacpp
    model: tiny
    backend: cpu
    devices: []
    replicas: {replicas}
    readiness_timeout_ms: {timeout}
{handoff}    provisioning:
      mode: binary
      binary: {{path: \"{FAKE}\"}}
      model: {{ref: ./models/tiny.gguf}}
{ports}      env: {{{env}}}
      flags: [{flags}]
",
        replicas = p.replicas,
        timeout = p.timeout_ms,
        env = env.join(", "),
        flags = flags.join(", "),
    )
}

pub struct Rig {
    pub ws: Workspace,
    pub file: StateFile,
    pub state: State,
    pub model: PathBuf,
    /// Held for the rig's life (dropped last, after its servers are stopped).
    _ports: PortsTurn,
}

/// Every rig's automatic ports come from the same base (8080), and a replica restarted on its
/// previous port races with any other test of this binary choosing a port in the window
/// between the old server's exit and the new choice (the preference is best effort, as for a
/// real host shared by two applies). The tests of one binary take turns with the ports, so a
/// test that checks "the same port again" is not decided by the scheduler. Re-entrant within
/// a thread: a test with two rigs takes one turn.
struct PortsTurn(Option<std::sync::MutexGuard<'static, ()>>);

static PORTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

thread_local! {
    static TURNS_HELD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl PortsTurn {
    fn take() -> PortsTurn {
        let held = TURNS_HELD.with(|c| c.get());
        TURNS_HELD.with(|c| c.set(held + 1));
        if held > 0 {
            return PortsTurn(None);
        }
        // A test that failed while holding it poisoned it: the ports are free all the same.
        PortsTurn(Some(PORTS.lock().unwrap_or_else(|e| e.into_inner())))
    }
}

impl Drop for PortsTurn {
    fn drop(&mut self) {
        TURNS_HELD.with(|c| c.set(c.get().saturating_sub(1)));
    }
}

impl Rig {
    pub fn new(p: &Pool<'_>) -> Rig {
        Rig::with_config(&config(p))
    }

    /// A rig over a config text of its own (a [`config`] edited by the test).
    pub fn with_config(config: &str) -> Rig {
        let turn = PortsTurn::take();
        let ws = Workspace::new(config);
        let model = ws.dir.path().join("config/models/tiny.gguf");
        std::fs::create_dir_all(model.parent().unwrap()).unwrap();
        std::fs::write(&model, b"GGUF fake model").unwrap();
        let file = StateFile::new(ws.dir.path().join("runtime/state.json"));
        Rig {
            ws,
            file,
            state: State::default(),
            model,
            _ports: turn,
        }
    }

    pub fn runtime(&self) -> PathBuf {
        self.ws.dir.path().join("runtime")
    }

    pub fn step(&self, id: &str) -> &Step {
        self.ws
            .plan
            .steps
            .iter()
            .find(|s| s.id == id)
            .unwrap_or_else(|| panic!("no step {id}"))
    }

    /// The context the executor would build for step `id`: the outputs of its dependencies,
    /// direct and indirect.
    pub fn cx(&self, id: &str) -> StepContext<'_> {
        let step = self.step(id);
        let mut deps = BTreeMap::new();
        let mut todo: Vec<&String> = step.deps.iter().collect();
        while let Some(d) = todo.pop() {
            if deps.contains_key(d) {
                continue;
            }
            todo.extend(self.step(d).deps.iter());
            let outputs = if d.starts_with("model-resolve:") {
                Some(StepOutputs::from(ModelResolveOutputs {
                    path: self.model.display().to_string(),
                    digest: "sha256:00".into(),
                    size: 0,
                    architecture: "llama".into(),
                }))
            } else {
                self.outputs(d)
            };
            if let Some(o) = outputs {
                deps.insert(d.clone(), o);
            }
        }
        StepContext {
            roots: &self.ws.plan.roots,
            redactor: std::sync::Arc::new(Redactor::for_plan(&self.ws.plan)),
            step,
            secrets: self.ws.plan.secrets.for_step(id),
            deps,
            previous: self.state.steps.get(id).and_then(|r| r.outputs.clone()),
            log: self.ws.log.clone(),
            jobs: 2,
            cancel: self.ws.cancel.clone(),
        }
    }

    pub fn outputs(&self, id: &str) -> Option<StepOutputs> {
        self.state.steps.get(id).and_then(|r| r.outputs.clone())
    }

    /// The outputs step `id` recorded, of its kind `T`.
    pub fn typed<T: KindOutputs + Clone>(&self, id: &str) -> T {
        self.outputs(id)
            .as_ref()
            .and_then(StepOutputs::get::<T>)
            .unwrap_or_else(|| panic!("{id} recorded no {} outputs", T::KIND))
            .clone()
    }

    /// What the spawn step of replica `r` recorded.
    pub fn spawned(&self, r: u32) -> SpawnOutputs {
        self.typed(&format!("spawn:fake/r{r}"))
    }

    /// What the probe step of replica `r` recorded.
    pub fn probed(&self, r: u32) -> ProbeOutputs {
        self.typed(&format!("probe:fake/r{r}"))
    }

    /// What the handoff step of replica `r` recorded.
    pub fn handed_off(&self, r: u32) -> HandoffOutputs {
        self.typed(&format!("handoff:fake/r{r}"))
    }

    /// Run step `id` with the step crate and record it, as the executor does.
    pub fn run(&mut self, id: &str) -> Result<Outcome, StepError> {
        let result = {
            let cx = self.cx(id);
            match &cx.step.spec {
                StepSpec::Spawn(s) => spawn::spawn(s, &cx),
                StepSpec::Probe(p) => spawn::probe(p, &cx),
                StepSpec::Handoff(h) => spawn::handoff(h, &cx),
                other => panic!("not a replica step: {}", other.kind()),
            }
        };
        let step = self.step(id).clone();
        let record = StepRecord {
            kind: step.kind().into(),
            status: if result.is_ok() {
                StepStatus::Passed
            } else {
                StepStatus::Failed
            },
            fingerprint: result.is_ok().then(|| "fp".to_string()),
            spec: provision_executor::fingerprint::spec_value(&step),
            facts: BTreeMap::new(),
            deps: BTreeMap::new(),
            outputs: result.as_ref().ok().and_then(|o| o.outputs.clone()),
            artifacts: result
                .as_ref()
                .map(|o| {
                    o.artifacts
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect()
                })
                .unwrap_or_default(),
            started_at: None,
            finished_at: None,
            duration_ms: None,
            reason: None,
            error: result.as_ref().err().map(|e| e.message.clone()),
        };
        self.state.steps.insert(id.to_string(), record);
        self.file.save(&self.state).unwrap();
        result
    }

    /// spawn, probe, handoff of replica `r`.
    pub fn up(&mut self, r: u32) -> Result<(), StepError> {
        self.run(&format!("spawn:fake/r{r}"))?;
        self.run(&format!("probe:fake/r{r}"))?;
        self.run(&format!("handoff:fake/r{r}"))?;
        Ok(())
    }

    pub fn server(&self, r: u32) -> ServerProcess {
        ServerProcess::of_record(self.outputs(&format!("spawn:fake/r{r}")).as_ref())
            .expect("a recorded server")
    }

    pub fn handoff_file(&self, r: u32) -> PathBuf {
        let StepSpec::Handoff(h) = &self.step(&format!("handoff:fake/r{r}")).spec else {
            unreachable!()
        };
        PathBuf::from(self.ws.plan.roots.expand(&h.path))
    }

    pub fn server_log(&self, r: u32) -> PathBuf {
        self.runtime().join(format!("logs/fake-r{r}.log"))
    }

    pub fn reload(&mut self) {
        self.state = self.file.load().unwrap();
    }

    /// Everything provision wrote: state, step log, server logs, handoffs, pid files.
    pub fn everything_written(&self) -> String {
        let mut out = String::new();
        collect(&self.runtime(), &mut out);
        out
    }
}

fn collect(dir: &std::path::Path, out: &mut String) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if let Ok(t) = std::fs::read_to_string(&p) {
            out.push_str(&format!("==> {}\n{t}\n", p.display()));
        }
    }
}

/// How long a test waits for a stopped process to be gone. Generous, for a loaded machine: the
/// fake server never exits by itself, so one that was not stopped is still there after it.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The process and its whole group are gone (no orphans).
pub fn assert_gone(server: &ServerProcess) {
    let started = std::time::Instant::now();
    while started.elapsed() < PATIENCE {
        if !server.is_running() && group_members(server.pgid).is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!(
        "pid {} or its group is still running: {:?}",
        server.pid,
        group_members(server.pgid)
    );
}

/// Stop every replica the rig started (tests clean up after themselves, even on success or
/// failure): the servers the state records, then every server carrying this runtime dir's
/// marker, which the state no longer names once a later run of a spawn step failed (a failed
/// step records no outputs, as the executor's does) while its previous server kept running.
impl Drop for Rig {
    fn drop(&mut self) {
        let grace = Duration::from_millis(200);
        for r in self.state.steps.values() {
            if let (true, Some(outputs)) = (r.kind == "spawn", &r.outputs) {
                let _ = spawn::stop_server(outputs, grace);
            }
        }
        let roots = &self.ws.plan.roots;
        spawn::down::stop_unrecorded(&State::default(), roots, &|_| true, grace);
        let left = identity::find_by_marker(&roots.runtime, None);
        if !left.is_empty() && !std::thread::panicking() {
            panic!("the test left servers running: {left:?}");
        }
    }
}

pub fn json_file(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A spawn step's record of the server `server`, with its pid file at `pid_file` (the rest
/// as a spawn records it, naming nothing that exists).
pub fn spawn_record(server: ServerIdentity, pid_file: &str) -> StepOutputs {
    StepOutputs::from(SpawnOutputs {
        server,
        port: 1,
        host: "127.0.0.1".into(),
        url: "http://127.0.0.1:1".into(),
        log: String::new(),
        pid_file: pid_file.into(),
        binary: "llama-server".into(),
        binary_digest: "sha256:00".into(),
        backend: Backend::Cpu,
        devices: Vec::new(),
        started_at: String::new(),
        handoff_path: None,
        gpu_layers: None,
    })
}
