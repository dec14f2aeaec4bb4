//! The cmake-build step: build only the target the plan names, then hand on the binary with
//! its digest, the commit it was built from and the flags.

use provision_executor::command::StepCommand;
use provision_executor::{Outcome, StepContext, StepError};
use provision_plan::step::CmakeBuild;
use serde_json::Value;

use crate::digest::sha256_file;

/// Build `spec.target` with the plan's command (`--parallel ${jobs}`). Outputs `binary`,
/// `engine_digest` (`sha256:<hex>`), `build_ref` (the commit) and `flags`; the artifact is
/// the binary, which must exist afterwards.
pub fn build(spec: &CmakeBuild, cx: &StepContext<'_>) -> Result<Outcome, StepError> {
    let build_dir = cx.path(&spec.build_dir);
    if !build_dir.join("CMakeCache.txt").is_file() {
        return Err(StepError::new(format!(
            "{} is not configured (no CMakeCache.txt)",
            build_dir.display()
        ))
        .hint("the cmake-configure step must pass first; run apply again"));
    }
    let argv: Vec<String> = spec.argv.iter().map(|a| cx.expand(a)).collect();
    let mut command = StepCommand::new(argv).cwd(&build_dir);
    if let Some(base) = cx.dep_output("ccache_basedir").and_then(Value::as_str) {
        command = command.env("CCACHE_BASEDIR", base);
    }
    command.run(cx).map_err(|e| {
        let cancelled = matches!(
            e,
            provision_executor::command::CommandError::Cancelled { .. }
        );
        let err = StepError::from(e);
        if cancelled {
            return err;
        }
        StepError {
            message: format!(
                "building the {} target in {} failed: {}",
                spec.target,
                build_dir.display(),
                err.message
            ),
            ..err
        }
        .hint(format!(
            "the compiler's error is in the output below; the full log is {}",
            cx.log.display()
        ))
    })?;

    let binary = cx.path(&spec.binary);
    if !binary.is_file() {
        return Err(StepError::new(format!(
            "the build of {} passed but {} does not exist",
            spec.target,
            binary.display()
        ))
        .hint("the source tree does not put llama-server in <build>/bin; is it llama.cpp?"));
    }
    let digest = sha256_file(&binary).map_err(|e| {
        StepError::new(format!("cannot read {}: {e}", binary.display()))
            .hint("check the permissions of the build directory")
    })?;

    let mut outcome = Outcome::default();
    let o = &mut outcome.outputs;
    o.insert("binary".into(), Value::String(binary.display().to_string()));
    o.insert("engine_digest".into(), Value::String(digest));
    o.insert("build_ref".into(), build_ref(cx));
    o.insert("flags".into(), flags(cx));
    outcome.artifacts.push(binary);
    Ok(outcome)
}

/// The commit the configure handed on (from git-clone), else the source checkout's HEAD.
fn build_ref(cx: &StepContext<'_>) -> Value {
    if let Some(commit) = cx.dep_output("commit") {
        return commit.clone();
    }
    cx.dep_output("source_dir")
        .and_then(Value::as_str)
        .and_then(|dir| {
            StepCommand::new(["git", "-C", dir, "rev-parse", "HEAD"])
                .read(cx)
                .ok()
        })
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .map_or(Value::Null, Value::String)
}

/// The configure's `flags` output (the normalised definitions): the build reads no other
/// step's spec, only what its dependency passed on.
fn flags(cx: &StepContext<'_>) -> Value {
    cx.dep_output("flags").cloned().unwrap_or(Value::Null)
}
