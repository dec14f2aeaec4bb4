//! The boundary between the executor and the steps. The executor does not know what a step
//! does: it hands each step to a [`Dispatch`], which the cli crate implements in one place by
//! calling the step crates.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::failed_command::FailedCommand;
use provision_plan::outputs::{KindOutputs, StepOutputs};
use provision_plan::plan::Roots;
use provision_plan::redact::Redactor;
use provision_plan::secrets::{StepSecrets, UnknownSecret};
use provision_plan::{Step, StepId};

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
    /// Typed outputs of the step's dependencies, direct and indirect (a handoff reads its
    /// spawn through its probe) but not through a gate (a gate is there, its own
    /// dependencies are not), by step id. Their fingerprints are in this step's.
    pub deps: BTreeMap<String, StepOutputs>,
    /// Outputs this step recorded when it last passed (for liveness checks and reuse).
    pub previous: Option<StepOutputs>,
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
    /// dependency whose outputs give it (model-resolve's `path`): a direct dependency first.
    pub fn expand(&self, s: &str) -> String {
        let mut out = self
            .roots
            .expand(s)
            .replace("${jobs}", &self.jobs.to_string());
        if out.contains("${model_path}") {
            let placeholder = |o: &'_ StepOutputs| o.placeholder("model_path").map(str::to_string);
            let direct = self
                .step
                .deps
                .iter()
                .filter_map(|d| self.deps.get(d))
                .find_map(placeholder);
            if let Some(path) = direct.or_else(|| self.deps.values().find_map(placeholder)) {
                out = out.replace("${model_path}", &path);
            }
        }
        out
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

    /// The outputs of dependency `id`, of its kind. `Err` when `id` is not a dependency of
    /// this step, has no outputs, or is of another kind.
    pub fn dep<T: KindOutputs>(&self, id: &StepId) -> Result<&T, StepError> {
        self.maybe_dep(id)?.ok_or_else(|| {
            StepError::new(format!(
                "{}: `{id}` is not a dependency of this step, or recorded no outputs",
                self.step.id
            ))
            .hint("a plan bug; rerun apply with --force, and report it if it persists")
        })
    }

    /// The outputs of `id` when it is a dependency with outputs; `Err` when they are of
    /// another kind than `T`'s.
    pub fn maybe_dep<T: KindOutputs>(&self, id: &StepId) -> Result<Option<&T>, StepError> {
        let Some(outputs) = self.deps.get(&id.to_string()) else {
            return Ok(None);
        };
        T::of(outputs).map(Some).ok_or_else(|| {
            StepError::new(format!(
                "{}: the outputs of `{id}` are {} outputs, not {}",
                self.step.id,
                outputs.kind(),
                T::KIND
            ))
            .hint("a plan bug; rerun apply with --force, and report it if it persists")
        })
    }

    /// The one dependency of `T`'s kind (its id, as the plan names it nowhere else this step
    /// could read: the model a fit is for, the build a server runs), `None` when there is
    /// none; `Err` when there are several.
    pub fn the_dep<T: KindOutputs>(&self) -> Result<Option<&T>, StepError> {
        let mut found = self.deps.iter().filter_map(|(id, o)| Some((id, T::of(o)?)));
        let first = found.next();
        if let Some((other, _)) = found.next() {
            return Err(StepError::new(format!(
                "{}: two {} dependencies (`{}`, `{other}`); it reads one",
                self.step.id,
                T::KIND,
                first.map(|(id, _)| id.as_str()).unwrap_or_default()
            )));
        }
        Ok(first.map(|(_, o)| o))
    }

    /// What this step recorded when it last passed, when of its kind.
    pub fn previous<T: KindOutputs>(&self) -> Option<&T> {
        self.previous.as_ref().and_then(T::of)
    }
}

/// What a passed step produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Typed by the step's kind; `None` for a step that produces none (test dispatches).
    pub outputs: Option<StepOutputs>,
    /// Files or directories that must still exist for the step to stay fresh.
    pub artifacts: Vec<PathBuf>,
    /// Facts the step could only learn by running, because a check must stay cheap (a model's
    /// digest, hashed while the build runs, never before it). They replace the check's facts
    /// of the same names in the step's record, and the fingerprint recorded is computed with
    /// them: the next check, which finds them cheaply (a digest cached by file identity),
    /// finds the step fresh.
    pub settled: Facts,
}

impl Outcome {
    /// A passed step's outputs, no artifacts.
    pub fn new(outputs: impl Into<StepOutputs>) -> Self {
        Outcome {
            outputs: Some(outputs.into()),
            ..Outcome::default()
        }
    }

    /// The outcome with `facts` settled by the run (see [`Outcome::settled`]).
    pub fn settle(mut self, facts: Facts) -> Self {
        self.settled.extend(facts);
        self
    }

    /// The outcome with `path` as an artifact too.
    pub fn artifact(mut self, path: impl Into<PathBuf>) -> Self {
        self.artifacts.push(path.into());
        self
    }
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
    /// commit a branch points at now, tool versions). A fact too costly to learn here is given
    /// a placeholder, and the run settles it ([`Outcome::settled`]).
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
mod tests;
