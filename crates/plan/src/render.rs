//! The plan as readable text: per pool, its steps in order with the commands they run.

use std::collections::HashMap;
use std::fmt::Write;

use crate::plan::Plan;
use crate::secret_placeholder;
use crate::step::{PortSpec, Step, StepSpec, VramFit};

fn quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+%${}<>".contains(c))
    {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

fn command(plan: &Plan, argv: &[String]) -> String {
    argv.iter()
        .map(|a| quote(&plan.roots.expand(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn detail(plan: &Plan, step: &Step) -> Vec<String> {
    let x = |s: &str| plan.roots.expand(s);
    match &step.spec {
        StepSpec::PreflightTools(p) => {
            let mut lines: Vec<String> = p
                .tools
                .iter()
                .map(|t| {
                    format!(
                        "need {} ({}) for {}",
                        t.name,
                        t.any_of.join(" | "),
                        t.needed_for
                    )
                })
                .collect();
            lines.push(if p.allow_package_installs {
                "missing tools: installed with pacman on Arch-like hosts, an error elsewhere".into()
            } else {
                "missing tools: an error naming the install command (allow_package_installs is false)".into()
            });
            lines
        }
        StepSpec::GpuCheck(g) => vec![
            format!("devices {:?} must exist", g.devices),
            format!("$ {}", command(plan, &g.argv)),
        ],
        StepSpec::GitClone(g) => {
            let mut lines = vec![format!(
                "into {} (ref {}, submodules {})",
                x(&g.dir),
                g.git_ref,
                g.submodules
            )];
            lines.extend(g.commands.iter().map(|c| format!("$ {}", command(plan, c))));
            lines
        }
        StepSpec::CmakeConfigure(c) => {
            let generator = match &c.generator {
                Some(g) => g.clone(),
                None => "Ninja when installed, else Unix Makefiles".into(),
            };
            vec![
                format!("generator: {generator}"),
                format!("$ {}", command(plan, &c.argv)),
            ]
        }
        StepSpec::CmakeBuild(c) => vec![
            format!("$ {}", command(plan, &c.argv)),
            format!("produces {}", x(&c.binary)),
        ],
        StepSpec::ModelResolve(m) => {
            let mut lines = vec![
                format!("ref {}", m.model_ref),
                format!("file {}", x(&m.path)),
            ];
            if let Some(c) = &m.checksum {
                lines.push(format!("verify {c}"));
            }
            lines
        }
        StepSpec::VramFit(v) => vram_fit_lines(v),
        StepSpec::Spawn(s) => {
            let mut lines = Vec::new();
            if !s.env.is_empty() {
                let env: Vec<String> = s
                    .env
                    .iter()
                    .map(|(k, v)| format!("{k}={}", quote(v)))
                    .collect();
                lines.push(format!("env {}", env.join(" ")));
            }
            if let PortSpec::Auto { base } = s.port {
                lines.push(format!("${{port}}: the first free port from {base}"));
            }
            lines.push(format!("$ {}", command(plan, &s.argv)));
            for flag in &s.unless_unknown {
                lines.push(format!(
                    "{flag} is left out for a binary that does not accept it"
                ));
            }
            lines.push(format!("log {}", x(&s.log)));
            lines
        }
        StepSpec::Probe(p) => {
            let mut lines = vec![format!(
                "GET {}{} until 200, within {} ms",
                p.url, p.health_path, p.timeout_ms
            )];
            if p.metrics {
                lines.push(format!("GET {}/metrics must answer 200", p.url));
            }
            lines
        }
        StepSpec::Handoff(h) => vec![format!(
            "write {} ({} at {})",
            x(&h.path),
            h.model.id,
            h.url
        )],
    }
}

/// The most pools named in a "shared with" note; more are counted. Every pool's shared steps
/// name the others, so a full list made the text quadratic in the pools.
const SHARED_NAMED: usize = 3;

/// `  (shared with a, b)`, `  (shared with 9999 pools (a, b, c, …))`, or nothing: the pools of
/// a step other than `pool` (which is one of them).
fn shared_with(pools: &[String], pool: &str) -> String {
    let others = pools.len().saturating_sub(1);
    if others == 0 {
        return String::new();
    }
    let named: Vec<&str> = pools
        .iter()
        .filter(|p| *p != pool)
        .take(SHARED_NAMED)
        .map(String::as_str)
        .collect();
    if others <= SHARED_NAMED {
        format!("  (shared with {})", named.join(", "))
    } else {
        format!("  (shared with {others} pools ({}, …))", named.join(", "))
    }
}

/// Render `plan` as text.
pub fn render_text(plan: &Plan) -> String {
    let mut out = String::new();
    let pools = plan.pools.len();
    let _ = writeln!(
        out,
        "Plan: {} steps for {pools} {}",
        plan.steps.len(),
        if pools == 1 { "pool" } else { "pools" }
    );
    let _ = writeln!(out, "  cache:   {}", plan.roots.cache);
    let _ = writeln!(out, "  runtime: {}", plan.roots.runtime);
    if let Some(changes) = &plan.changes {
        let run = changes
            .iter()
            .filter(|c| c.action == crate::plan::Action::Run)
            .count();
        let _ = writeln!(
            out,
            "  against the state file: {run} to run, {} unchanged",
            changes.len() - run
        );
    }
    let mut shown: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    // Looked up once per pool's step: `Plan::step` and `Plan::change` search the whole list,
    // which made 10,000 pools 40,000 searches of 30,000 steps.
    let steps: HashMap<&str, &Step> = plan.steps.iter().map(|s| (s.id.as_str(), s)).collect();
    let changes: HashMap<&str, &crate::plan::Change> = plan
        .changes
        .iter()
        .flatten()
        .map(|c| (c.step.as_str(), c))
        .rev()
        .collect();
    for pool in &plan.pools {
        let _ = writeln!(
            out,
            "\npool {} ({} {}, mode {}, {} {}, model {})",
            pool.id,
            pool.engine,
            pool.backend.as_str(),
            pool.provisioning_mode,
            pool.replicas,
            if pool.replicas == 1 {
                "replica"
            } else {
                "replicas"
            },
            pool.model
        );
        let _ = writeln!(out, "  flags: {}", pool.flags.join(" "));
        for (n, id) in pool.steps.iter().enumerate() {
            let Some(&step) = steps.get(id.as_str()) else {
                continue;
            };
            let shared = shared_with(&step.pools, &pool.id);
            let after = if step.deps.is_empty() {
                String::new()
            } else {
                format!("  after {}", step.deps.join(", "))
            };
            let mark = match changes.get(id.as_str()) {
                Some(c) => match (c.action, &c.reason) {
                    (crate::plan::Action::Run, Some(r)) => format!("+ run ({r}) "),
                    (crate::plan::Action::Run, None) => "+ run ".into(),
                    (crate::plan::Action::Skip, _) => "= skip ".into(),
                    (crate::plan::Action::Keep, _) => "= keep ".into(),
                },
                None => String::new(),
            };
            if !shown.insert(step.id.as_str()) {
                let _ = writeln!(
                    out,
                    "  {:>2}. {mark}{}{shared}, shown above",
                    n + 1,
                    step.id
                );
                continue;
            }
            let _ = writeln!(out, "  {:>2}. {mark}{}{after}{shared}", n + 1, step.id);
            // A secret reads `<redacted>` here (the JSON names it: `${secret:NAME}`).
            for line in detail(plan, step) {
                let _ = writeln!(out, "        {}", secret_placeholder::shown(&line));
            }
        }
    }
    out
}

/// A vram-fit step: what must fit, and the device ledger it is checked on.
fn vram_fit_lines(v: &VramFit) -> Vec<String> {
    let servers = if v.replicas == 1 {
        String::new()
    } else {
        format!("{} replicas × ", v.replicas)
    };
    let mut lines = vec![format!(
        "{servers}(weights + KV cache (ctx {}, parallel {}) + activations) must fit devices {:?} beside what else is on them, else POOL_UNAVAILABLE",
        v.memory.ctx.map_or("from model".to_string(), |c| c.to_string()),
        v.memory.parallel,
        v.devices
    )];
    if !v.placed_before.is_empty() {
        // At most 3 named, as for the pools that share a step.
        let mut before: Vec<String> = v
            .placed_before
            .iter()
            .take(3)
            .map(|p| format!("`{}` ({} × devices {:?})", p.pool, p.replicas, p.devices))
            .collect();
        if v.placed_before.len() > 3 {
            before.push(format!("{} more", v.placed_before.len() - 3));
        }
        lines.push(format!("ledger: placed after {}", before.join(", ")));
    }
    lines
}
