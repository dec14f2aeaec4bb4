//! The cmake-build step: build only the target the plan names, then hand on the binary with
//! its digest, the commit it was built from and the flags.

use provision_executor::command::StepCommand;
use provision_executor::{Outcome, StepContext, StepError};
use provision_plan::outputs::{CmakeBuildOutputs, CmakeConfigureOutputs, GitCloneOutputs};
use provision_plan::step::CmakeBuild;

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
    let configured = cx.the_dep::<CmakeConfigureOutputs>()?;
    if let Some(base) = configured.and_then(|c| c.ccache_basedir.as_deref()) {
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

    let outputs = CmakeBuildOutputs {
        binary: binary.display().to_string(),
        engine_digest: digest,
        build_ref: build_ref(cx, configured)?,
    };
    Ok(Outcome::new(outputs).artifact(binary))
}

/// The commit the git-clone step checked out, else the source checkout's HEAD.
fn build_ref(
    cx: &StepContext<'_>,
    configured: Option<&CmakeConfigureOutputs>,
) -> Result<Option<String>, StepError> {
    if let Some(clone) = cx.the_dep::<GitCloneOutputs>()? {
        return Ok(Some(clone.commit.clone()));
    }
    Ok(configured
        .and_then(|c| {
            StepCommand::new(["git", "-C", &c.source_dir, "rev-parse", "HEAD"])
                .read(cx)
                .ok()
        })
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty()))
}
