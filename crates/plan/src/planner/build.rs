//! Source mode's steps: preflight-tools, git-clone, cmake-configure and cmake-build make the
//! pool's `llama-server`.

use crate::cmake_flags::CmakeFlags;
use crate::config::SourceConfig;
use crate::secret_placeholder::url_with_placeholders;
use crate::secrets::StepSecrets;
use crate::step::*;
use crate::step_id::StepId;
use crate::validate::PoolInput;

use super::builder::PoolSteps;
use super::checks::Checks;
use super::names::{checkout_base, repo_name, source_root, Names};
use super::{config_path, short_hash};

/// The steps that build a source pool's server: its binary, and the step that makes it.
pub(super) fn source(
    steps: &mut PoolSteps,
    input: &PoolInput,
    names: &Names,
    checks: &Checks,
) -> (String, usize) {
    let prov = &input.pool.provisioning;
    let source = prov
        .source
        .as_ref()
        .expect("validated: source mode has source");
    let cmake = input
        .cmake
        .as_ref()
        .expect("validated: source mode has cmake flags");
    let pre = steps.add(
        checks.preflight.clone().expect("source pools need tools"),
        vec![],
        || {
            StepSpec::PreflightTools(PreflightTools {
                tools: checks.tools.to_vec(),
                allow_package_installs: checks.allow_installs,
            })
        },
    );
    let (clone, src_dir) = clone(steps, input, source, names, checks, pre);

    let k = names.keys(&input.pool.id);
    let (build_base, build_key) = k.build.as_ref().expect("source pool");
    let build_name = names.builds.id(build_base, build_key);
    let root = source_root(input);
    let name = repo_name(&source.repo);
    let build_dir = format!("{root}/build/{name}-{}", short_hash(build_key));
    let dirs = (src_dir.as_str(), build_dir.as_str());
    let configure = configure(steps, &build_name, source, cmake, dirs, vec![clone, pre]);
    let target = crate::engine::planned(input.pool.engine).build_target();
    let binary = format!("{build_dir}/bin/{target}");
    let build = steps.add(
        StepId::CmakeBuild(build_name).into(),
        vec![configure],
        || {
            StepSpec::CmakeBuild(CmakeBuild {
                build_dir: build_dir.clone(),
                target: target.into(),
                argv: [
                    "cmake",
                    "--build",
                    &build_dir,
                    "--target",
                    target,
                    "--parallel",
                    "${jobs}",
                ]
                .map(String::from)
                .to_vec(),
                binary: binary.clone(),
            })
        },
    );
    (binary, build)
}

/// The git-clone step of a source pool, after preflight `pre`; its position and checkout
/// directory.
fn clone(
    steps: &mut PoolSteps,
    input: &PoolInput,
    source: &SourceConfig,
    names: &Names,
    checks: &Checks,
    pre: usize,
) -> (usize, String) {
    let k = names.keys(&input.pool.id);
    let (clone_base, clone_key) = k.clone.as_ref().expect("source pool");
    let clone_name = names.clones.id(clone_base, clone_key);
    let git_ref = source.git_ref.trim().to_string();
    let src_dir = checkout_base(input, &source.repo);
    let src_dir = if names
        .checkout_refs
        .get(&src_dir)
        .is_some_and(|r| r.len() > 1)
    {
        format!("{src_dir}-{}", short_hash(&git_ref))
    } else {
        src_dir
    };
    let with_submodules = checks.submodules.get(&clone_name).copied().unwrap_or(false);
    let clone = steps.add_with_secrets(StepId::GitClone(clone_name).into(), vec![pre], || {
        let (spec, secrets) = git_clone(
            &repo_location(&source.repo),
            &git_ref,
            with_submodules,
            &src_dir,
        );
        (StepSpec::GitClone(spec), secrets)
    });
    (clone, src_dir)
}

/// The cmake-configure step of build `build_name` from `src_dir` into `build_dir`.
fn configure(
    steps: &mut PoolSteps,
    build_name: &str,
    source: &SourceConfig,
    cmake: &CmakeFlags,
    (src_dir, build_dir): (&str, &str),
    deps: Vec<usize>,
) -> usize {
    steps.add(
        StepId::CmakeConfigure(build_name.to_string()).into(),
        deps,
        || {
            let mut argv: Vec<String> = vec![
                "cmake".into(),
                "-S".into(),
                src_dir.to_string(),
                "-B".into(),
                build_dir.to_string(),
            ];
            if let Some(g) = &source.build.generator {
                argv.extend(["-G".to_string(), g.clone()]);
            }
            argv.extend(cmake.to_args());
            StepSpec::CmakeConfigure(CmakeConfigure {
                source_dir: src_dir.to_string(),
                build_dir: build_dir.to_string(),
                generator: source.build.generator.clone(),
                defines: cmake.defines.clone(),
                extra_args: cmake.extra.clone(),
                cuda: cmake.cuda(),
                argv,
            })
        },
    )
}

/// A repo as git gets it: relative paths (`./`, `../`) are relative to the config file.
fn repo_location(repo: &str) -> String {
    let r = repo.trim();
    if r.starts_with("./") || r.starts_with("../") {
        config_path(r)
    } else {
        r.to_string()
    }
}

/// The clone step of `repo`, its credentials placeholders, and their values.
fn git_clone(repo: &str, git_ref: &str, submodules: bool, dir: &str) -> (GitClone, StepSecrets) {
    let (shown, credentials) = url_with_placeholders(repo, "repo");
    let mut commands: Vec<Vec<String>> = vec![
        vec![
            "git".into(),
            "clone".into(),
            "--no-checkout".into(),
            shown.clone(),
            dir.into(),
        ],
        ["git", "-C", dir, "fetch", "--force", "--tags", "origin"]
            .map(String::from)
            .to_vec(),
        ["git", "-C", dir, "checkout", "--force", "--detach", git_ref]
            .map(String::from)
            .to_vec(),
    ];
    if submodules {
        commands.push(
            [
                "git",
                "-C",
                dir,
                "submodule",
                "update",
                "--init",
                "--recursive",
                "--force",
            ]
            .map(String::from)
            .to_vec(),
        );
    }
    let spec = GitClone {
        repo: shown,
        git_ref: git_ref.into(),
        submodules,
        dir: dir.into(),
        commands,
    };
    (spec, credentials.into_iter().collect())
}
