//! The one place where step kinds meet the crates that run them.

use provision_executor::{Dispatch, Facts, Outcome, StepContext, StepError, StepRecord};
use provision_plan::StepSpec;
use provision_steps_git::RefLookup;
use provision_steps_model::ModelEnv;
use provision_steps_tools::Host;

use crate::gpu_reading::GpuReadings;

/// Runs every step kind with its step crate.
pub struct StepDispatch {
    host: Host,
    model_env: ModelEnv,
    refs: RefLookup,
    gpus: GpuReadings,
}

impl StepDispatch {
    pub fn new() -> Self {
        StepDispatch {
            host: Host::current(),
            model_env: ModelEnv::from_env(),
            refs: RefLookup::Cached,
            gpus: GpuReadings::default(),
        }
    }

    /// For an apply (or a preview) over `state`: its recorded servers that are alive count as
    /// running in the GPU fit.
    pub fn over(mut self, state: &provision_executor::State) -> Self {
        self.gpus = GpuReadings::over(state);
        self
    }

    /// `--refresh-refs`: ask the repository again for tags resolved before.
    pub fn refresh_refs(mut self, refresh: bool) -> Self {
        if refresh {
            self.refs = RefLookup::Refresh;
        }
        self
    }
}

impl Dispatch for StepDispatch {
    fn facts(&self, cx: &StepContext<'_>) -> Result<Facts, StepError> {
        match &cx.step.spec {
            StepSpec::PreflightTools(s) => provision_steps_tools::facts(s, &self.host, cx),
            StepSpec::GitClone(s) => provision_steps_git::facts(s, cx, self.refs),
            StepSpec::CmakeConfigure(s) => provision_steps_cmake::configure_facts(s, cx),
            StepSpec::ModelResolve(s) => provision_steps_model::facts(s, cx, &self.model_env),
            StepSpec::GpuCheck(s) => provision_steps_gpu::facts(s, cx, &self.host),
            StepSpec::Spawn(s) => provision_steps_spawn::spawn_facts(s, cx),
            _ => Ok(Facts::new()),
        }
    }

    fn run(&self, cx: &StepContext<'_>) -> Result<Outcome, StepError> {
        match &cx.step.spec {
            StepSpec::PreflightTools(s) => provision_steps_tools::run(s, &self.host, cx),
            StepSpec::GitClone(s) => provision_steps_git::run(s, cx),
            StepSpec::CmakeConfigure(s) => provision_steps_cmake::configure(s, cx),
            StepSpec::CmakeBuild(s) => provision_steps_cmake::build(s, cx),
            StepSpec::ModelResolve(s) => provision_steps_model::run(s, cx, &self.model_env),
            StepSpec::GpuCheck(s) => provision_steps_gpu::run(s, cx, &self.host),
            StepSpec::VramFit(s) => {
                let reading = self.gpus.get(&self.host, &cx.roots.runtime, &cx.cancel)?;
                provision_steps_model::vram_fit::run(s, cx, &reading)
            }
            StepSpec::Spawn(s) => provision_steps_spawn::spawn(s, cx),
            StepSpec::Probe(s) => provision_steps_spawn::probe(s, cx),
            StepSpec::Handoff(s) => provision_steps_spawn::handoff(s, cx),
        }
    }

    fn check_alive(&self, cx: &StepContext<'_>) -> Result<(), String> {
        match &cx.step.spec {
            StepSpec::GpuCheck(s) => provision_steps_gpu::check_alive(s, cx, &self.host),
            StepSpec::VramFit(s) => {
                let reading = self
                    .gpus
                    .get(&self.host, &cx.roots.runtime, &cx.cancel)
                    .map_err(|e| e.message)?;
                provision_steps_model::vram_fit::check_alive(s, cx, &reading)
            }
            StepSpec::Spawn(s) => provision_steps_spawn::check_spawn(s, cx),
            StepSpec::Probe(s) => provision_steps_spawn::check_probe(s, cx),
            _ => Ok(()),
        }
    }

    fn retire(&self, id: &str, record: &StepRecord) -> Result<(), StepError> {
        provision_steps_spawn::retire(id, record)
    }
}
