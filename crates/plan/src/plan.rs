//! The plan: a versioned, serialisable DAG of steps in a deterministic topological order.

use std::collections::{BTreeMap, BTreeSet};

use petgraph::graph::{DiGraph, NodeIndex};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::Backend;
use crate::step::Step;

/// Bumped whenever the plan JSON changes incompatibly.
pub const PLAN_VERSION: u32 = 1;

/// What the `${cache}`, `${runtime}` and `${config_dir}` placeholders stand for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Roots {
    /// Sources, builds and models (default `$XDG_CACHE_HOME/provision`).
    pub cache: String,
    /// Logs, pid files, handoff files and state (default `.runtime`).
    pub runtime: String,
    /// The directory of the config file; relative paths in the config are relative to it.
    pub config_dir: String,
}

impl Roots {
    /// Replace the root placeholders in `s`.
    pub fn expand(&self, s: &str) -> String {
        s.replace("${cache}", &self.cache)
            .replace("${runtime}", &self.runtime)
            .replace("${config_dir}", &self.config_dir)
    }
}

/// A summary of one pool and the steps it needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PoolSummary {
    pub id: String,
    pub engine: String,
    pub backend: Backend,
    pub provisioning_mode: String,
    pub replicas: u32,
    pub model: String,
    /// Normalised llama-server flags, secrets redacted.
    pub flags: Vec<String>,
    /// The steps this pool needs, in plan order.
    pub steps: Vec<String>,
}

/// What `apply` will do, step by step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "provision plan")]
pub struct Plan {
    pub plan_version: u32,
    pub roots: Roots,
    pub pools: Vec<PoolSummary>,
    /// Every step once, in topological order with ties broken by id.
    pub steps: Vec<Step>,
    /// With a state file: what apply would do with each step, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<Vec<Change>>,
}

/// What apply would do with a step, given the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Change {
    pub step: String,
    pub action: Action,
    /// Why it would run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Dirty: it runs.
    Run,
    /// Fresh: skipped.
    Skip,
    /// A liveness step whose world still matches: kept (a healthy server is not restarted).
    Keep,
}

/// A dependency cycle (a planner bug: plans are acyclic by construction).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the plan has a dependency cycle among steps: {}", .0.join(", "))]
pub struct CycleError(pub Vec<String>);

impl Plan {
    pub fn change(&self, id: &str) -> Option<&Change> {
        self.changes.as_ref()?.iter().find(|c| c.step == id)
    }

    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// The DAG as a petgraph graph (edge: dependency → dependent), with each node's id.
    pub fn graph(&self) -> (DiGraph<String, ()>, BTreeMap<String, NodeIndex>) {
        graph_of(&self.steps)
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a plan serialises");
        s.push('\n');
        s
    }
}

fn graph_of(steps: &[Step]) -> (DiGraph<String, ()>, BTreeMap<String, NodeIndex>) {
    let mut graph = DiGraph::new();
    let mut index = BTreeMap::new();
    for step in steps {
        index.insert(step.id.clone(), graph.add_node(step.id.clone()));
    }
    for step in steps {
        for dep in &step.deps {
            if let Some(&from) = index.get(dep) {
                graph.add_edge(from, index[&step.id], ());
            }
        }
    }
    (graph, index)
}

/// Order `steps` topologically, ties broken by id (Kahn's algorithm over the petgraph DAG with
/// a sorted ready set), so the same steps always give the same order.
pub fn topological_order(steps: Vec<Step>) -> Result<Vec<Step>, CycleError> {
    let (graph, index) = graph_of(&steps);
    let mut indegree: BTreeMap<&str, usize> = steps.iter().map(|s| (s.id.as_str(), 0)).collect();
    for step in &steps {
        for dep in &step.deps {
            if index.contains_key(dep) {
                *indegree.get_mut(step.id.as_str()).expect("known id") += 1;
            }
        }
    }
    let mut ready: BTreeSet<String> = indegree
        .iter()
        .filter(|(_, d)| **d == 0)
        .map(|(id, _)| id.to_string())
        .collect();
    let mut order = Vec::with_capacity(steps.len());
    while let Some(id) = ready.pop_first() {
        for next in graph.neighbors(index[&id]) {
            let next_id = &graph[next];
            let d = indegree.get_mut(next_id.as_str()).expect("known id");
            *d -= 1;
            if *d == 0 {
                ready.insert(next_id.clone());
            }
        }
        order.push(id);
    }
    if order.len() != steps.len() {
        let done: BTreeSet<&String> = order.iter().collect();
        return Err(CycleError(
            steps
                .iter()
                .map(|s| s.id.clone())
                .filter(|id| !done.contains(id))
                .collect(),
        ));
    }
    let mut by_id: BTreeMap<String, Step> = steps.into_iter().map(|s| (s.id.clone(), s)).collect();
    Ok(order
        .into_iter()
        .map(|id| by_id.remove(&id).expect("known id"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::step::{StepSpec, ToolRequirement};

    fn step(id: &str, deps: &[&str]) -> Step {
        Step {
            id: id.into(),
            deps: deps.iter().map(|d| d.to_string()).collect(),
            pools: vec![],
            spec: StepSpec::PreflightTools(crate::step::PreflightTools {
                tools: Vec::<ToolRequirement>::new(),
                allow_package_installs: false,
            }),
        }
    }

    #[test]
    fn order_respects_edges_and_breaks_ties_by_id() {
        let steps = vec![
            step("c", &["b"]),
            step("b", &[]),
            step("a", &[]),
            step("d", &["a", "c"]),
        ];
        let ids: Vec<_> = topological_order(steps)
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(ids, ["a", "b", "c", "d"]);
    }

    #[test]
    fn cycles_are_reported() {
        let err = topological_order(vec![step("a", &["b"]), step("b", &["a"]), step("c", &[])])
            .unwrap_err();
        assert_eq!(err.0, ["a", "b"]);
    }
}
