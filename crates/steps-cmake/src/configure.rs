//! The cmake-configure step: the plan's configure command, completed for this machine
//! (generator, ccache launcher, CUDA toolkit and architectures), run in the build directory
//! the plan keyed by the normalised flags.

use std::path::Path;

use provision_executor::command::{CommandError, StepCommand};
use provision_executor::{log_tail, Facts, Outcome, StepContext, StepError};
use provision_plan::outputs::CmakeConfigureOutputs;
use provision_plan::step::CmakeConfigure;
use provision_steps_tools::{Host, ToolVersions};

use crate::cmake_cache;
use crate::cmake_error;
use crate::cuda;
use crate::generator;
use crate::launcher::{self, Launcher};

/// Facts of the configure on this machine: see [`configure_facts_on`].
pub fn configure_facts(spec: &CmakeConfigure, cx: &StepContext<'_>) -> Result<Facts, StepError> {
    configure_facts_on(spec, cx, &Host::current())
}

/// Facts of the configure: `cmake_version`, `generator` (the one that will be used) and
/// `compiler_launcher` (ccache's path and version, or `none`); for CUDA builds also
/// `cuda_toolkit` (the nvcc used). The versions come from the tool version cache the
/// preflight-tools step fills (`${cache}/tools.json`): no process runs while cmake and ccache
/// are unchanged.
pub fn configure_facts_on(
    spec: &CmakeConfigure,
    cx: &StepContext<'_>,
    host: &Host,
) -> Result<Facts, StepError> {
    let cmake = host.find("cmake").ok_or_else(|| {
        StepError::new("`cmake` is not on PATH")
            .hint("install CMake; the preflight-tools step names the package for this host")
    })?;
    let ccache = host.find("ccache");
    let mut exes = vec![cmake.as_path()];
    exes.extend(ccache.as_deref());
    let mut versions = ToolVersions::in_cache(cx)
        .versions(&exes, host.path())
        .into_iter();
    let cmake_version = versions.next().flatten().ok_or_else(|| {
        StepError::new(format!(
            "`{} --version` did not run or printed nothing",
            cmake.display()
        ))
        .hint("check the CMake installation: run the command by hand")
    })?;
    let mut facts = Facts::new();
    facts.insert("cmake_version".into(), cmake_version);
    facts.insert(
        "generator".into(),
        generator::resolve(spec.generator.as_deref(), host),
    );
    let launcher = match &ccache {
        Some(ccache) => format!(
            "{} ({})",
            ccache.display(),
            versions.next().flatten().unwrap_or_default()
        ),
        None => "none".into(),
    };
    facts.insert("compiler_launcher".into(), launcher);
    if spec.cuda {
        let nvcc = provision_steps_tools::find_cuda(host.path(), host.fs_root())
            .map_or("missing".into(), |t| t.nvcc.display().to_string());
        facts.insert("cuda_toolkit".into(), nvcc);
    }
    Ok(facts)
}

/// Run the configure on this machine.
pub fn configure(spec: &CmakeConfigure, cx: &StepContext<'_>) -> Result<Outcome, StepError> {
    configure_on(spec, cx, &Host::current())
}

/// Run the configure, deciding generator, launcher and CUDA toolkit from `host`.
///
/// Outputs: `build_dir`, `source_dir`, `generator`, `compiler_launcher` (ccache or null),
/// `ccache_basedir` (or null), `cuda_root` (CUDA builds), `flags` (the normalised `-D`
/// definitions) and `commit` (from the git-clone dependency), which cmake-build hands on.
pub fn configure_on(
    spec: &CmakeConfigure,
    cx: &StepContext<'_>,
    host: &Host,
) -> Result<Outcome, StepError> {
    let source_dir = cx.path(&spec.source_dir);
    let build_dir = cx.path(&spec.build_dir);
    if !source_dir.join("CMakeLists.txt").is_file() {
        return Err(StepError::new(format!(
            "no CMakeLists.txt in {}: nothing to configure",
            source_dir.display()
        ))
        .hint("the git-clone step should have checked out llama.cpp there; run apply again"));
    }
    let generator = generator::resolve(spec.generator.as_deref(), host);
    let launcher = launcher::find(host, &source_dir, &build_dir);

    let mut added: Vec<(String, String)> = Vec::new();
    if let Some(l) = &launcher {
        let langs: &[&str] = if spec.cuda {
            &["C", "CXX", "CUDA"]
        } else {
            &["C", "CXX"]
        };
        added.extend(launcher::defines(l, langs));
    }
    let mut cuda_root = None;
    if spec.cuda {
        let caps = cuda::query_compute_caps(host);
        let cuda_defines = cuda::defines(&spec.defines, host, &caps).map_err(|e| {
            StepError::new("a CUDA build needs nvcc, and it is neither on PATH nor in a CUDA root")
                .hint(format!(
                    "install the CUDA toolkit or put its bin/ on PATH (looked in {}); a GPU pool \
                 never falls back to a CPU build",
                    e.searched
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
        })?;
        cuda_root = cuda_defines
            .iter()
            .find(|(k, _)| k == "CUDAToolkit_ROOT")
            .map(|(_, v)| v.clone());
        added.extend(cuda_defines);
    }
    added.retain(|(k, _)| !spec.defines.contains_key(k));

    let mut argv: Vec<String> = spec.argv.iter().map(|a| cx.expand(a)).collect();
    argv = generator::with_generator(argv, &generator);
    argv.extend(added.iter().map(|(k, v)| format!("-D{k}={v}")));

    prepare_build_dir(&build_dir, &generator, &source_dir, cx)?;
    let command = |argv: &[String]| {
        let mut c = StepCommand::new(argv.to_vec()).cwd(&source_dir);
        if let Some(l) = &launcher {
            c = c.env("CCACHE_BASEDIR", l.base_dir.display().to_string());
        }
        c
    };
    if let Err(first) = command(&argv).run(cx) {
        let retry = spec
            .cuda
            .then(|| cuda::retry_host_compiler(host))
            .flatten()
            .filter(|_| !spec.defines.contains_key("CMAKE_CUDA_HOST_COMPILER"))
            .filter(|_| !matches!(first, CommandError::Cancelled { .. }));
        let Some(host_compiler) = retry else {
            return Err(configure_error(first, spec, &source_dir, &build_dir, cx));
        };
        note(
            cx,
            &format!(
                "the CUDA configure failed; retrying once with the host compiler {}",
                host_compiler.display()
            ),
        );
        clear_cache(&build_dir)?;
        argv.push(format!(
            "-DCMAKE_CUDA_HOST_COMPILER={}",
            host_compiler.display()
        ));
        command(&argv)
            .run(cx)
            .map_err(|e| configure_error(e, spec, &source_dir, &build_dir, cx))?;
    }

    let shown = |p: &Path| p.display().to_string();
    let outputs = CmakeConfigureOutputs {
        build_dir: shown(&build_dir),
        source_dir: shown(&source_dir),
        generator,
        compiler_launcher: launcher.as_ref().map(|l: &Launcher| shown(&l.ccache)),
        ccache_basedir: launcher.as_ref().map(|l| shown(&l.base_dir)),
        cuda_root,
        flags: flags_value(spec),
    };
    Ok(Outcome::new(outputs).artifact(build_dir.join("CMakeCache.txt")))
}

/// The normalised definitions as `-DNAME=VALUE`, in order.
pub(crate) fn flags_value(spec: &CmakeConfigure) -> Vec<String> {
    spec.defines
        .iter()
        .map(|(k, v)| format!("-D{k}={v}"))
        .collect()
}

/// Create the build directory; drop a CMake cache made for another generator or source.
fn prepare_build_dir(
    build_dir: &Path,
    generator: &str,
    source_dir: &Path,
    cx: &StepContext<'_>,
) -> Result<(), StepError> {
    std::fs::create_dir_all(build_dir).map_err(|e| {
        StepError::new(format!(
            "cannot create the build directory {}: {e}",
            build_dir.display()
        ))
        .hint("check the permissions of the cache directory (build.cache_dir or --cache-dir)")
    })?;
    if let Some(reason) = cmake_cache::stale_reason(build_dir, generator, source_dir) {
        note(
            cx,
            &format!(
                "removing the CMake cache of {}: {reason}",
                build_dir.display()
            ),
        );
        clear_cache(build_dir)?;
    }
    Ok(())
}

fn clear_cache(build_dir: &Path) -> Result<(), StepError> {
    cmake_cache::clear(build_dir).map_err(|e| {
        StepError::new(format!(
            "cannot remove the CMake cache in {}: {e}",
            build_dir.display()
        ))
        .hint("delete the build directory by hand")
    })
}

fn configure_error(
    e: CommandError,
    spec: &CmakeConfigure,
    source_dir: &Path,
    build_dir: &Path,
    cx: &StepContext<'_>,
) -> StepError {
    let CommandError::Failed { status, tail, .. } = &e else {
        return e.into();
    };
    let command = e.failed_command();
    // Quote CMake's own error from this configure's part of the log.
    let log = std::fs::read_to_string(&cx.log).unwrap_or_default();
    let this_run = log.rsplit("\n$ cmake ").next().unwrap_or(&log);
    let quoted = cmake_error::quote(this_run, 20)
        .or_else(|| cmake_error::quote(&log_tail(&cx.log, 200), 20));
    let mut message = format!(
        "CMake configure of {} in {} failed ({status})",
        source_dir.display(),
        build_dir.display()
    );
    if let Some(q) = quoted {
        message.push_str(":\n");
        message.push_str(&q);
    }
    let hint = if spec.cuda {
        "fix the CUDA toolkit or host compiler (nvcc supports only some GCC versions; \
         install gcc-13 or clang), or the CMake flags; a GPU pool never falls back to a CPU build"
    } else {
        "fix `provisioning.source.build.cmake_flags`, or the tools CMake names above"
    };
    let err = StepError::new(message)
        .hint(format!(
            "{hint}; the full output is in {}",
            cx.log.display()
        ))
        .tail(tail.clone());
    err.with_command(command)
}

pub(crate) fn note(cx: &StepContext<'_>, message: &str) {
    // 0600, never through a symbolic link.
    let _ = provision_executor::private_file::append(&cx.log, &format!("[provision] {message}\n"));
}
