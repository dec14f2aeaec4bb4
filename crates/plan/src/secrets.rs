//! The secrets of a plan as a table keyed by step id and a name (`env:LLAMA_API_KEY`, `url`,
//! `source`, `api_key`), and reading a plan back from JSON.
//!
//! A plan's JSON never holds a secret value: specs show `<redacted>` where one goes, and the
//! values live only in memory. So a plan read back from JSON has none. It gets them again from
//! their sources — the config, the environment and the files the config names — by planning
//! the config again (what apply does) and copying its secrets in by step id
//! ([`read_back`]); the derived replica inputs are linked again
//! ([`crate::replica_inputs::link`]). What is still missing then (a step the config no longer
//! plans, a secret removed from it) is refused, naming each step and secret, never the value:
//! such a plan never runs with `<redacted>` as a credential.

use std::collections::BTreeMap;

use crate::model_ref::ModelRef;
use crate::plan::{Plan, PLAN_VERSION};
use crate::redact::{redact_url, url_secrets, REDACTED};
use crate::step::StepSpec;

/// One secret value. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
enum Value {
    Text(String),
    Source(ModelRef),
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

/// The secret values of a plan: step id → name → value. Never serialised; its `Debug` shows
/// names only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    table: BTreeMap<String, BTreeMap<String, Value>>,
}

impl Secrets {
    /// The secrets `plan` carries.
    pub fn of(plan: &Plan) -> Secrets {
        let mut table = BTreeMap::new();
        for step in &plan.steps {
            let mut values = BTreeMap::new();
            collect(&step.spec, &mut values);
            if !values.is_empty() {
                table.insert(step.id.clone(), values);
            }
        }
        Secrets { table }
    }

    /// `(step id, name)` of every secret, sorted.
    pub fn names(&self) -> Vec<(String, String)> {
        self.table
            .iter()
            .flat_map(|(id, v)| v.keys().map(move |n| (id.clone(), n.clone())))
            .collect()
    }

    /// What the redactor replaces: each env value and API key whole (and a URL's credentials
    /// in it, which may be quoted on their own), and the credentials of each URL.
    pub(crate) fn redaction_values(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, value) in self.table.values().flatten() {
            match value {
                Value::Text(t) if name == "url" => out.extend(url_secrets(t)),
                Value::Text(t) => {
                    out.push(t.clone());
                    out.extend(url_secrets(t));
                }
                Value::Source(ModelRef::Url { url }) => out.extend(url_secrets(url)),
                Value::Source(_) => {}
            }
        }
        out
    }

    /// Put the secrets into the steps of `plan` with the same id (those it has no step for
    /// are ignored; a step with none gets its secret fields as the planner sets them without
    /// secrets), link the replica inputs again, and check that none is missing.
    pub fn attach(&self, plan: &mut Plan) -> Result<(), MissingSecrets> {
        let none = BTreeMap::new();
        for step in &mut plan.steps {
            restore(&mut step.spec, self.table.get(&step.id).unwrap_or(&none));
        }
        crate::replica_inputs::link(&mut plan.steps);
        let lacking = missing(plan);
        if lacking.is_empty() {
            Ok(())
        } else {
            Err(MissingSecrets(lacking))
        }
    }
}

fn collect(spec: &StepSpec, out: &mut BTreeMap<String, Value>) {
    let text = |s: &str| Value::Text(s.to_string());
    match spec {
        StepSpec::GitClone(g) if !g.repo_url.is_empty() && g.repo_url != g.repo => {
            out.insert("url".into(), text(&g.repo_url));
        }
        StepSpec::ModelResolve(m) => {
            if let Some(source) = &m.secret_source {
                out.insert("source".into(), Value::Source(source.clone()));
            }
        }
        StepSpec::Spawn(sp) => {
            for (k, v) in &sp.secret_env {
                if sp.env.get(k) != Some(v) {
                    out.insert(format!("env:{k}"), text(v));
                }
            }
        }
        StepSpec::Probe(p) => {
            if !p.secret_url.is_empty() && p.secret_url != p.url {
                out.insert("url".into(), text(&p.secret_url));
            }
            if let Some(key) = &p.secret_api_key {
                out.insert("api_key".into(), text(key));
            }
        }
        _ => {}
    }
}

fn restore(spec: &mut StepSpec, values: &BTreeMap<String, Value>) {
    let text = |name: &str| match values.get(name) {
        Some(Value::Text(t)) => Some(t.clone()),
        _ => None,
    };
    match spec {
        // A URL's credentials are taken only for the address the plan shows: credentials for
        // another host are not this step's (its id need not name the host).
        // Without credentials, the URL is the one shown (as the planner sets it).
        StepSpec::GitClone(g) => {
            g.repo_url = match text("url").filter(|u| redact_url(u) == g.repo) {
                Some(url) => url,
                None if g.repo.contains(REDACTED) => String::new(),
                None => g.repo.clone(),
            };
        }
        StepSpec::ModelResolve(m) => {
            if let Some(Value::Source(s)) = values.get("source") {
                if shown(s) == m.source {
                    m.secret_source = Some(s.clone());
                }
            }
        }
        StepSpec::Spawn(sp) => {
            // The planner's `secret_env` is the whole environment, secrets filled in.
            sp.secret_env = sp.env.clone();
            for (name, v) in values {
                if let (Some(k), Value::Text(t)) = (name.strip_prefix("env:"), v) {
                    if sp.env.contains_key(k) {
                        sp.secret_env.insert(k.to_string(), t.clone());
                    }
                }
            }
        }
        StepSpec::Probe(p) => {
            if let Some(url) = text("url").filter(|u| redact_url(u) == p.url) {
                p.secret_url = url;
            }
        }
        _ => {}
    }
}

/// A secret a step needs and does not have: the spec shows `<redacted>` where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingSecret {
    pub step: String,
    /// What: `env NAME`, `the repository URL's credentials`, ….
    pub what: String,
}

impl std::fmt::Display for MissingSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "step {}: {}", self.step, self.what)
    }
}

/// The secrets each step of `plan` lacks (a plan read back from JSON lacks them all).
pub fn missing(plan: &Plan) -> Vec<MissingSecret> {
    let mut out = Vec::new();
    for step in &plan.steps {
        let mut lack = |what: String| {
            out.push(MissingSecret {
                step: step.id.clone(),
                what,
            })
        };
        match &step.spec {
            StepSpec::GitClone(g) if g.repo.contains(REDACTED) && g.repo_url.is_empty() => {
                lack("the repository URL's credentials".into())
            }
            StepSpec::ModelResolve(m) if m.secret_source.is_none() && shows_redacted(&m.source) => {
                lack("the model URL's credentials".into())
            }
            StepSpec::Spawn(sp) => {
                for (k, v) in &sp.env {
                    if v == REDACTED && sp.secret_env.get(k).is_none_or(|s| s == REDACTED) {
                        lack(format!("env {k}"));
                    }
                }
            }
            StepSpec::Probe(p) if p.url.contains(REDACTED) && p.secret_url.is_empty() => {
                lack("the server URL's credentials".into())
            }
            _ => {}
        }
    }
    out
}

/// A model source as plans show it.
fn shown(source: &ModelRef) -> ModelRef {
    match source {
        ModelRef::Url { url } => ModelRef::Url {
            url: redact_url(url),
        },
        other => other.clone(),
    }
}

fn shows_redacted(source: &ModelRef) -> bool {
    matches!(source, ModelRef::Url { url } if url.contains(REDACTED))
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
    Secrets::of(sources).attach(&mut plan)?;
    Ok(plan)
}
