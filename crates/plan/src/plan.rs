//! The plan: a versioned, serialisable DAG of steps in a deterministic topological order.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use petgraph::graph::{DiGraph, NodeIndex};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::Backend;
use crate::step::Step;

/// Bumped whenever the plan JSON changes incompatibly (2: vram-fit carries typed memory
/// settings; `parallel` a number, `n_gpu_layers` `all` or `{"count": N}`).
pub const PLAN_VERSION: u32 = 2;

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
    /// The values of the `${secret:NAME}` placeholders of the steps, by step id; never
    /// serialised (a plan read back from JSON gets them with
    /// [`crate::secrets::read_back`]).
    #[serde(skip)]
    #[schemars(skip)]
    pub secrets: crate::secrets::Secrets,
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

/// Order `steps` topologically, ties broken by id, so the same steps always give the same
/// order. Ids are unique; a dependency on an id that is not among `steps` is ignored.
pub fn topological_order(mut steps: Vec<Step>) -> Result<Vec<Step>, CycleError> {
    let order = topological_positions(&steps)?;
    arrange(&mut steps, &order);
    Ok(steps)
}

/// Put the step at `order[0]` first, and so on (`order` a permutation), in place: the steps are
/// large, and a second vector of them would double the plan's size while it is built.
pub(crate) fn arrange(steps: &mut [Step], order: &[usize]) {
    // `target[i]`: where the step now at `i` goes; each swap puts one step in its place.
    let mut target = vec![0; order.len()];
    for (to, &from) in order.iter().enumerate() {
        target[from] = to;
    }
    for i in 0..steps.len() {
        while target[i] != i {
            let to = target[i];
            steps.swap(i, to);
            target.swap(i, to);
        }
    }
}

/// The positions in `steps` of the steps of [`topological_order`], in that order: Kahn's
/// algorithm over positions, with a ready set ordered by id rank.
pub(crate) fn topological_positions(steps: &[Step]) -> Result<Vec<usize>, CycleError> {
    let n = steps.len();
    // Positions sorted by id; `rank[i]`: where step `i` is in that order.
    let mut by_id: Vec<usize> = (0..n).collect();
    by_id.sort_by(|&a, &b| steps[a].id.cmp(&steps[b].id));
    let mut rank = vec![0; n];
    for (r, &i) in by_id.iter().enumerate() {
        rank[i] = r;
    }
    let position = |id: &str| {
        by_id
            .binary_search_by(|&i| steps[i].id.as_str().cmp(id))
            .ok()
            .map(|r| by_id[r])
    };
    // Edges dependency → dependent, grouped by dependency: `dependents[start[d]..start[d + 1]]`.
    let edges: Vec<(usize, usize)> = steps
        .iter()
        .enumerate()
        .flat_map(|(i, step)| {
            step.deps
                .iter()
                .filter_map(move |d| Some((position(d)?, i)))
        })
        .collect();
    let mut start = vec![0; n + 1];
    let mut indegree = vec![0usize; n];
    for &(from, to) in &edges {
        start[from + 1] += 1;
        indegree[to] += 1;
    }
    for i in 0..n {
        start[i + 1] += start[i];
    }
    let mut fill = start.clone();
    let mut dependents = vec![0; edges.len()];
    for (from, to) in edges {
        dependents[fill[from]] = to;
        fill[from] += 1;
    }

    // Ready steps by id rank.
    let mut ready: BinaryHeap<Reverse<usize>> = (0..n)
        .filter(|&i| indegree[i] == 0)
        .map(|i| Reverse(rank[i]))
        .collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse(r)) = ready.pop() {
        let i = by_id[r];
        for &next in &dependents[start[i]..start[i + 1]] {
            indegree[next] -= 1;
            if indegree[next] == 0 {
                ready.push(Reverse(rank[next]));
            }
        }
        order.push(i);
    }
    if order.len() != n {
        return Err(CycleError(
            steps
                .iter()
                .zip(&indegree)
                .filter(|(_, d)| **d > 0)
                .map(|(s, _)| s.id.clone())
                .collect(),
        ));
    }
    Ok(order)
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
