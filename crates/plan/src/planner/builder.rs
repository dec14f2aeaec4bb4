//! The steps while the plan is built, and the steps of one pool among them.

use std::collections::HashMap;

use crate::secrets::{Secrets, StepSecrets};
use crate::step::{Step, StepSpec};

/// The steps while the plan is built, in the order they are first added. Deps are positions
/// and pools borrowed ids until the end, when they are sorted and deduplicated once: a node
/// every pool shares (`preflight-tools`, `gpu-check`) costs one push per pool, and no id is
/// copied per use.
#[derive(Default)]
pub(super) struct Builder<'a> {
    /// Each step's position, by id.
    ids: HashMap<String, usize>,
    /// The steps, their ids, deps and pools still empty.
    steps: Vec<Step>,
    deps: Vec<Vec<usize>>,
    pools: Vec<Vec<&'a str>>,
    /// The values of each step's `${secret:NAME}` placeholders.
    secrets: Vec<StepSecrets>,
}

impl<'a> Builder<'a> {
    /// Add step `id` for `pool` (or add `pool` and `deps` to it), with the values of its
    /// spec's secret placeholders; its position. The first pool to add a shared step makes it.
    pub(super) fn add(
        &mut self,
        pool: &'a str,
        id: String,
        deps: impl IntoIterator<Item = usize>,
        spec: impl FnOnce() -> (StepSpec, StepSecrets),
    ) -> usize {
        let next = self.steps.len();
        let at = *self.ids.entry(id).or_insert(next);
        if at == next {
            let (spec, secrets) = spec();
            self.steps.push(Step {
                id: String::new(),
                deps: Vec::new(),
                pools: Vec::new(),
                spec,
            });
            self.deps.push(Vec::new());
            self.pools.push(Vec::new());
            self.secrets.push(secrets);
        }
        self.deps[at].extend(deps);
        if self.pools[at].last() != Some(&pool) {
            self.pools[at].push(pool);
        }
        at
    }

    /// The steps in the order they were added, deps and pools sorted, and their secrets.
    pub(super) fn into_steps(self) -> (Vec<Step>, Secrets) {
        let mut steps = self.steps;
        let mut secrets = Secrets::default();
        let mut values = self.secrets;
        for (id, at) in self.ids {
            secrets.set(id.clone(), std::mem::take(&mut values[at]));
            steps[at].id = id;
        }
        for (at, (deps, mut pools)) in self.deps.into_iter().zip(self.pools).enumerate() {
            let mut deps: Vec<&str> = deps.iter().map(|&d| steps[d].id.as_str()).collect();
            deps.sort_unstable();
            deps.dedup();
            let deps = deps.into_iter().map(str::to_string).collect();
            pools.sort_unstable();
            pools.dedup();
            let step = &mut steps[at];
            step.deps = deps;
            step.pools = pools.into_iter().map(str::to_string).collect();
        }
        (steps, secrets)
    }
}

/// The builder while one pool is planned: each step added is the pool's.
pub(super) struct PoolSteps<'a, 'b> {
    builder: &'b mut Builder<'a>,
    pool: &'a str,
    /// The pool's steps, as builder positions.
    steps: Vec<usize>,
}

impl<'a, 'b> PoolSteps<'a, 'b> {
    pub(super) fn new(builder: &'b mut Builder<'a>, pool: &'a str) -> Self {
        PoolSteps {
            builder,
            pool,
            steps: Vec::new(),
        }
    }

    /// Add step `id` for the pool (see [`Builder::add`]), a step without secrets; its
    /// position.
    pub(super) fn add(
        &mut self,
        id: String,
        deps: impl IntoIterator<Item = usize>,
        spec: impl FnOnce() -> StepSpec,
    ) -> usize {
        self.add_with_secrets(id, deps, || (spec(), StepSecrets::default()))
    }

    /// Add step `id` for the pool with the values of its spec's secret placeholders (see
    /// [`Builder::add`]); its position.
    pub(super) fn add_with_secrets(
        &mut self,
        id: String,
        deps: impl IntoIterator<Item = usize>,
        spec: impl FnOnce() -> (StepSpec, StepSecrets),
    ) -> usize {
        let at = self.builder.add(self.pool, id, deps, spec);
        self.steps.push(at);
        at
    }

    /// The pool's steps, as builder positions.
    pub(super) fn into_positions(self) -> Vec<usize> {
        self.steps
    }
}
