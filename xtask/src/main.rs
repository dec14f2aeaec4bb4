//! Project automation: `cargo xtask <task>`.
//!
//! - `regen-schema`: write `schemas/*.schema.json` from the Rust types.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn regen_schema() -> Result<()> {
    let dir = workspace_root().join("schemas");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in provision_plan::schemas::all() {
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

fn main() -> Result<()> {
    let task = std::env::args().nth(1);
    match task.as_deref() {
        Some("regen-schema") => regen_schema(),
        Some(other) => bail!("unknown task `{other}`; tasks: regen-schema"),
        None => bail!("usage: cargo xtask <task>; tasks: regen-schema"),
    }
}
