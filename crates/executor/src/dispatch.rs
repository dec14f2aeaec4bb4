//! The boundary between the executor and the steps. The executor does not know what a step
//! does: it hands each step to a [`Dispatch`], which the cli crate implements in one place by
//! calling the step crates.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::failed_command::FailedCommand;
use provision_plan::plan::Roots;
use provision_plan::redact::Redactor;
use provision_plan::secrets::{StepSecrets, UnknownSecret};
use provision_plan::{Step, StepId};
use serde_json::Value;

/// Outputs of a step, by name (`commit`, `binary`, `engine_digest`, `path`, `digest`, `pid`,
/// `url`, …). Recorded in the state file and given to dependent steps.
pub type Outputs = BTreeMap<String, Value>;

/// Facts a step resolves about the world, by name (`commit`, `cmake_version`, …). They are part
/// of the step's fingerprint: a changed fact makes the step dirty.
pub type Facts = BTreeMap<String, String>;

/// Shared cancellation flag: set on Ctrl-C / SIGTERM or `--fail-fast`. Long-running steps poll
/// it and stop their child processes.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Everything a step may use while it runs. Not the plan: whatever a step reads of the
/// world's configuration is in its spec (and so in its fingerprint), or is one of the plan-wide
/// values here.
pub struct StepContext<'a> {
    /// What `${cache}`, `${runtime}` and `${config_dir}` stand for.
    pub roots: &'a Roots,
    /// Redacts every secret of the plan (built once per apply): for what a step logs or says.
    pub redactor: Arc<Redactor>,
    pub step: &'a Step,
    /// Outputs of the step's dependencies, by step id.
    pub deps: BTreeMap<String, Outputs>,
    /// Outputs this step recorded when it last passed (for liveness checks and reuse).
    pub previous: Option<Outputs>,
    /// This step's own log file (under `<runtime>/logs/steps/`); its tail goes into errors.
    pub log: PathBuf,
    /// Build parallelism (`${jobs}`).
    pub jobs: usize,
    pub cancel: Cancel,
    /// The step's entry of the plan's secrets table: the values of its spec's
    /// `${secret:NAME}` placeholders, for the step to fill in at the moment of use
    /// ([`StepContext::secret`], [`StepContext::expand_secrets`]). The executor passes it on
    /// without looking in.
    pub secrets: &'a StepSecrets,
}

impl StepContext<'_> {
    /// Expand the plan's placeholders: the roots, `${jobs}`, and `${model_path}` from the
    /// dependency whose kind provides it.
    pub fn expand(&self, s: &str) -> String {
        let mut out = self
            .roots
            .expand(s)
            .replace("${jobs}", &self.jobs.to_string());
        if out.contains("${model_path}") {
            if let Some(path) = self.provided("model_path") {
                out = out.replace("${model_path}", path);
            }
        }
        out
    }

    /// The value a dependency's outputs give `${placeholder}` (the kinds say which output:
    /// [`provision_plan::StepKind::provides`]): a dependency that makes it (model-resolve's `path`) before one
    /// that passes it on (a `model_path` output).
    fn provided(&self, placeholder: &str) -> Option<&str> {
        let value = |origin: bool| {
            self.deps.iter().find_map(|(id, outputs)| {
                let p = StepId::kind_of(id)?.provided(placeholder)?;
                (p.origin == origin)
                    .then(|| outputs.get(p.output).and_then(Value::as_str))
                    .flatten()
            })
        };
        value(true).or_else(|| value(false))
    }

    /// `text` with the step's `${secret:NAME}` placeholders filled in: only for the moment of
    /// use (a server's environment, a request, git's URL), never for what is logged, stored or
    /// shown. A secret the step does not have is an error naming the step and the secret.
    pub fn expand_secrets(&self, text: &str) -> Result<String, StepError> {
        self.secrets
            .expand(&self.step.id, text)
            .map_err(StepError::from)
    }

    /// The step's secret `name`, when it has it.
    pub fn secret(&self, name: &str) -> Option<&str> {
        self.secrets.get(name)
    }

    /// Expand a path placeholder string into a path.
    pub fn path(&self, s: &str) -> PathBuf {
        PathBuf::from(self.expand(s))
    }

    /// An output of the first dependency that has it.
    pub fn dep_output(&self, name: &str) -> Option<&Value> {
        self.deps.values().find_map(|o| o.get(name))
    }
}

/// What a passed step produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub outputs: Outputs,
    /// Files or directories that must still exist for the step to stay fresh.
    pub artifacts: Vec<PathBuf>,
}

/// A failed step: what failed, what to do, the tail of its output and, when one of its
/// commands failed (or its server exited), that command as typed fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    pub message: String,
    /// What the user can do about it.
    pub hint: Option<String>,
    /// The last lines of the step's log or of a failed command's stderr.
    pub tail: Option<String>,
    /// The step stopped because apply was cancelled.
    pub cancelled: bool,
    /// The command that failed: argv as shown, cwd, exit code or signal, its output's log
    /// (boxed: most errors have none, and a step's result stays small).
    pub command: Option<Box<FailedCommand>>,
}

impl StepError {
    pub fn new(message: impl Into<String>) -> Self {
        StepError {
            message: message.into(),
            hint: None,
            tail: None,
            cancelled: false,
            command: None,
        }
    }

    /// The error with every secret of the plan and every URL credential redacted, in its
    /// message, hint, tail and command: what the state file, the events and the terminal get.
    pub fn redacted(self, r: &provision_plan::redact::Redactor) -> Self {
        StepError {
            message: r.redact(&self.message),
            hint: self.hint.map(|h| r.redact(&h)),
            tail: self.tail.map(|t| r.redact(&t)),
            cancelled: self.cancelled,
            command: self.command.map(|c| Box::new(c.redacted(r))),
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn tail(mut self, tail: impl Into<String>) -> Self {
        self.tail = Some(tail.into());
        self
    }

    /// The command that failed.
    pub fn command(self, command: FailedCommand) -> Self {
        self.with_command(Some(Box::new(command)))
    }

    /// The command that failed, if one did.
    pub fn with_command(mut self, command: Option<Box<FailedCommand>>) -> Self {
        self.command = command;
        self
    }

    pub fn cancelled() -> Self {
        StepError {
            cancelled: true,
            ..StepError::new("cancelled")
        }
    }
}

impl From<UnknownSecret> for StepError {
    fn from(e: UnknownSecret) -> Self {
        StepError::new(e.to_string()).hint(UnknownSecret::HINT)
    }
}

/// The last `n` lines of a log file (empty when it cannot be read).
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs steps. Implemented once, in the cli crate, over the step crates.
pub trait Dispatch: Sync {
    /// Facts that decide whether the step is fresh, resolved before it runs (cheap: e.g. the
    /// commit a branch points at now, tool versions).
    fn facts(&self, _cx: &StepContext<'_>) -> Result<Facts, StepError> {
        Ok(Facts::new())
    }

    /// Run the step.
    fn run(&self, cx: &StepContext<'_>) -> Result<Outcome, StepError>;

    /// For liveness steps (gpu-check, spawn, probe): is what the step recorded (`cx.previous`)
    /// still true in the world? `Err` says why not.
    fn check_alive(&self, _cx: &StepContext<'_>) -> Result<(), String> {
        Ok(())
    }

    /// A step recorded in the state file that is no longer in the config (a removed pool or
    /// replica): undo what it left in the world (stop its server, remove its handoff file).
    fn retire(&self, _id: &str, _record: &crate::state::StepRecord) -> Result<(), StepError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use provision_plan::step::{GpuCheck, StepSpec};
    use serde_json::json;

    fn expand_with(deps: &[(&str, &str, &str)]) -> String {
        let step = Step {
            id: "gpu-check".into(),
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
        let cx = StepContext {
            roots: &roots,
            redactor: std::sync::Arc::new(Redactor::default()),
            step: &step,
            deps: deps
                .iter()
                .map(|(id, k, v)| (id.to_string(), Outputs::from([(k.to_string(), json!(v))])))
                .collect(),
            previous: None,
            log: PathBuf::new(),
            jobs: 3,
            cancel: Cancel::new(),
            secrets: &StepSecrets::default(),
        };
        cx.expand("${cache}/m ${model_path} -j${jobs}")
    }

    #[test]
    fn a_step_fills_in_its_own_secrets_and_a_missing_one_names_step_and_secret() {
        let step = Step {
            id: "spawn:a/r0".into(),
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
            redactor: std::sync::Arc::new(Redactor::default()),
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

    #[test]
    fn model_path_comes_from_the_kind_that_provides_it() {
        // The model-resolve step makes it: preferred to one passed on, whatever the id order.
        let deps = [
            ("model-resolve:m.gguf", "path", "/made.gguf"),
            ("cmake-build:x", "model_path", "/not-a-provider.gguf"),
            ("spawn:a/r0", "model_path", "/passed.gguf"),
        ];
        assert_eq!(expand_with(&deps), "/c/m /made.gguf -j3");
        assert_eq!(expand_with(&deps[1..]), "/c/m /passed.gguf -j3");
        // A `path` output of another kind is not the model; nothing provides it: left as is.
        assert_eq!(
            expand_with(&[("cmake-build:x", "path", "/bin")]),
            "/c/m ${model_path} -j3"
        );
        assert_eq!(
            expand_with(&[("vram-fit:a", "model_path", "/fit.gguf")]),
            "/c/m /fit.gguf -j3"
        );
    }
}
