//! Project automation: `cargo xtask <task>`.
//!
//! - `regen-schema`: write `schemas/*.schema.json` from the Rust types. A test here fails when
//!   the committed files are stale.
//! - `e2e`: the end-to-end run on real llama.cpp (the README's main job).
//! - `test`: install what the tests need when missing (cmake, ninja, ccache), then run
//!   `cargo test --workspace`.
//! - `bench [--quick] [--build]`: the benchmark table (BENCHMARKS.md).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

mod bench;
mod e2e;
mod setup;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// `(file name, contents)` of every generated schema.
fn schemas() -> Vec<(&'static str, String)> {
    [
        ("config.schema.json", provision_plan::config_schema()),
        ("plan.schema.json", provision_plan::plan_schema()),
        ("state.schema.json", provision_executor::state_schema()),
        (
            "handoff.schema.json",
            provision_steps_spawn::handoff_schema(),
        ),
        ("status.schema.json", provision_steps_spawn::status_schema()),
    ]
    .into_iter()
    .map(|(name, schema)| {
        let mut text = serde_json::to_string_pretty(&schema).expect("a schema serialises");
        text.push('\n');
        (name, text)
    })
    .collect()
}

fn regen_schema() -> Result<()> {
    let dir = workspace_root().join("schemas");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in schemas() {
        let path = dir.join(name);
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        if old == text {
            println!("unchanged {}", path.display());
            continue;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, &text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn test(args: &[String]) -> Result<()> {
    setup::ensure_build_tools()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    setup::run(
        std::process::Command::new(cargo)
            .args(["test", "--workspace"])
            .args(args)
            .current_dir(workspace_root()),
    )
}

const TASKS: &str = "bench, e2e, regen-schema, test";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("regen-schema") => regen_schema(),
        Some("test") => test(&args[1..]),
        Some("e2e") => e2e::run(&workspace_root()),
        Some("bench") => bench::run(&workspace_root(), &args[1..]),
        Some(other) => bail!("unknown task `{other}`; tasks: {TASKS}"),
        None => bail!("usage: cargo xtask <task>; tasks: {TASKS}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn committed_schemas_are_up_to_date() {
        let dir = super::workspace_root().join("schemas");
        let stale: Vec<&str> = super::schemas()
            .into_iter()
            .filter(|(name, expected)| {
                std::fs::read_to_string(dir.join(name)).unwrap_or_default() != *expected
            })
            .map(|(name, _)| name)
            .collect();
        assert!(
            stale.is_empty(),
            "schemas/{} {} stale: run `cargo xtask regen-schema` and commit the result",
            stale.join(", schemas/"),
            if stale.len() == 1 { "is" } else { "are" }
        );
    }
}
