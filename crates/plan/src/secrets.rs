//! The secrets of a plan: a table keyed by step id and a name (`env.LLAMA_API_KEY`,
//! `repo.userinfo`, `source.X-Amz-Signature`, `url.userinfo`, `api_key`), and reading a plan
//! back from JSON.
//!
//! The planner writes each secret it meets into this table and a `${secret:NAME}` placeholder
//! into the step's spec ([`crate::secret_placeholder`]); the executor hands each step its own
//! entry ([`StepSecrets`]) without knowing what is in it, and the step expands the placeholders
//! at the moment of use. The table is never serialised: a plan's JSON holds the placeholders,
//! so a plan read back from JSON has no values. It gets them again from their sources — the
//! config, the environment and the files the config names — by planning the config again
//! (what apply does) and copying its secrets in by step id ([`read_back`]); the derived
//! replica inputs are linked again ([`crate::replica_inputs::link`]). A secret is copied only
//! where every string of the saved step that holds its placeholder is the same in the step the
//! config plans (credentials for another host are not this step's: its id need not name the
//! host). What is still missing then is refused, naming each step and secret, never the value.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::plan::{Plan, PLAN_VERSION};
use crate::redact::{url_secrets, REDACTED};
use crate::secret_placeholder::names_in;
use crate::step::Step;

/// The secret values of one step, by name. Its `Debug` shows the names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StepSecrets {
    values: BTreeMap<String, String>,
}

impl std::fmt::Debug for StepSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.values.keys().map(|k| (k, REDACTED)))
            .finish()
    }
}

impl FromIterator<(String, String)> for StepSecrets {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        StepSecrets {
            values: iter.into_iter().collect(),
        }
    }
}

/// No secrets: the entry of a step the table has none for.
static NONE: StepSecrets = StepSecrets {
    values: BTreeMap::new(),
};

impl StepSecrets {
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.values.insert(name.into(), value.into());
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The secret `name`, when the step has it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// The names of the step's secrets, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// `text` of step `step` with its `${secret:NAME}` placeholders filled in: only for the
    /// moment of use (an environment, a request), never for anything shown or stored. An
    /// unknown name is an error naming the step and the secret.
    pub fn expand(&self, step: &str, text: &str) -> Result<String, UnknownSecret> {
        crate::secret_placeholder::expand(text, |n| self.get(n)).map_err(|name| UnknownSecret {
            step: step.to_string(),
            name,
        })
    }

    /// `text` with the placeholders this step has values for filled in, the others left: for a
    /// digest that must match whatever the step later fails on.
    pub fn expand_known(&self, text: &str) -> String {
        crate::secret_placeholder::expand_known(text, |n| self.get(n))
    }
}

/// A step uses a secret its entry in the plan's secrets table does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("step {step}: the secret `{name}` is not in the plan's secrets")]
pub struct UnknownSecret {
    pub step: String,
    pub name: String,
}

impl UnknownSecret {
    /// What to do about it.
    pub const HINT: &'static str = "secrets are never written into a plan: apply from the \
        config (or plan again from it and read the saved plan back with its secrets), not from \
        a saved plan alone";
}

/// The secret values of a plan: step id → name → value. Never serialised; its `Debug` shows
/// names only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    table: BTreeMap<String, StepSecrets>,
}

impl Secrets {
    /// The secrets of `plan`: what the planner put in its table.
    pub fn of(plan: &Plan) -> &Secrets {
        &plan.secrets
    }

    /// The entry of step `id` (empty when it has none).
    pub fn for_step(&self, id: &str) -> &StepSecrets {
        self.table.get(id).unwrap_or(&NONE)
    }

    /// Set the entry of step `id` (an empty one is not kept).
    pub fn set(&mut self, id: impl Into<String>, secrets: StepSecrets) {
        let id = id.into();
        if secrets.is_empty() {
            self.table.remove(&id);
        } else {
            self.table.insert(id, secrets);
        }
    }

    /// `(step id, name)` of every secret, sorted.
    pub fn names(&self) -> Vec<(String, String)> {
        self.table
            .iter()
            .flat_map(|(id, v)| v.names().map(move |n| (id.clone(), n.to_string())))
            .collect()
    }

    /// What the redactor replaces: each value whole, a userinfo's password on its own, and the
    /// credentials of a URL inside a value (which may be quoted on their own).
    pub(crate) fn redaction_values(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, value) in self.table.values().flat_map(|s| &s.values) {
            out.push(value.clone());
            if let (true, Some((_, password))) =
                (name.ends_with(".userinfo"), value.split_once(':'))
            {
                out.push(password.to_string());
            }
            out.extend(url_secrets(value));
        }
        out
    }

    /// The secrets of `sources` for the steps of `plan` (see the module docs), the replica
    /// inputs of `plan` linked again; an error naming every secret still missing.
    pub fn attach_to(&self, sources: &Plan, plan: &mut Plan) -> Result<(), MissingSecrets> {
        crate::replica_inputs::link(&mut plan.steps);
        let mut table = Secrets::default();
        for step in &plan.steps {
            let Some(source) = sources.steps.iter().find(|s| s.id == step.id) else {
                continue;
            };
            let (mine, theirs) = (holders(step), holders(source));
            let mut entry = StepSecrets::default();
            for (name, value) in &self.for_step(&step.id).values {
                let same = |(ptr, text): &(String, String)| {
                    !names_in(text).contains(&name.as_str())
                        || theirs.contains(&(ptr.clone(), text.clone()))
                };
                if mine.iter().all(same) {
                    entry.insert(name.clone(), value.clone());
                }
            }
            table.set(step.id.clone(), entry);
        }
        plan.secrets = table;
        let lacking = missing(plan);
        if lacking.is_empty() {
            Ok(())
        } else {
            Err(MissingSecrets(lacking))
        }
    }
}

/// The strings of a step's spec that hold a placeholder, by JSON pointer.
fn holders(step: &Step) -> Vec<(String, String)> {
    fn walk(v: &Value, at: String, out: &mut Vec<(String, String)>) {
        match v {
            Value::String(s) if !names_in(s).is_empty() => out.push((at, s.clone())),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(item, format!("{at}/{i}"), out);
                }
            }
            Value::Object(map) => {
                for (k, item) in map {
                    walk(
                        item,
                        format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                        out,
                    );
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(
        &serde_json::to_value(&step.spec).expect("step specs serialise"),
        String::new(),
        &mut out,
    );
    out
}

/// A secret a step's spec names in a placeholder and the plan's secrets lack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingSecret {
    pub step: String,
    /// The placeholder's name (`env.LLAMA_API_KEY`, `repo.userinfo`, …).
    pub what: String,
}

impl std::fmt::Display for MissingSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "step {}: secret `{}`", self.step, self.what)
    }
}

/// The secrets each step of `plan` names and its secrets table lacks (a plan read back from
/// JSON lacks them all).
pub fn missing(plan: &Plan) -> Vec<MissingSecret> {
    let mut out = Vec::new();
    for step in &plan.steps {
        let has = plan.secrets.for_step(&step.id);
        let mut named: Vec<String> = holders(step)
            .iter()
            .flat_map(|(_, text)| {
                names_in(text)
                    .into_iter()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        named.sort();
        named.dedup();
        for name in named {
            if has.get(&name).is_none() {
                out.push(MissingSecret {
                    step: step.id.clone(),
                    what: name,
                });
            }
        }
    }
    out
}

/// Secrets a plan needs and its sources did not give.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the plan lacks secrets its steps need:\n  {}\nsecrets are never written into a plan; they \
     come from the config, the environment and key files: plan again from the config that \
     gives them (`provision plan`), or apply from it",
    .0.iter().map(|m| m.to_string()).collect::<Vec<_>>().join("\n  ")
)]
pub struct MissingSecrets(pub Vec<MissingSecret>);

/// Reading a plan back from JSON failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadBackError {
    #[error("the plan JSON is not a provision plan: {0}")]
    Json(#[from] serde_json::Error),
    #[error(
        "the plan has plan_version {0}; this provision reads plan_version {PLAN_VERSION}: plan \
         again from the config"
    )]
    Version(u32),
    #[error(transparent)]
    Missing(#[from] MissingSecrets),
}

/// A plan read back from its JSON, given its secrets from `sources` (the in-memory plan of
/// the config, which read them from the config, the environment and files) and its replica
/// inputs linked again: exactly the in-memory plan it was written from. Refused, naming each
/// step and secret, when a secret it needs is not in `sources`; refused when it is of another
/// plan version.
pub fn read_back(json: &str, sources: &Plan) -> Result<Plan, ReadBackError> {
    let mut plan: Plan = serde_json::from_str(json)?;
    if plan.plan_version != PLAN_VERSION {
        return Err(ReadBackError::Version(plan.plan_version));
    }
    Secrets::of(sources).attach_to(sources, &mut plan)?;
    Ok(plan)
}
