//! cmake-configure and cmake-build on a real CMake project (`fixtures/cmake-hello`), cloned
//! from a real git repository by the git-clone step.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::*;
use provision_steps_cmake::{build, configure_facts};
use provision_steps_tools::Host;

fn host_path_only(dir: &Path) -> Host {
    Host {
        path: dir.join("bin").into_os_string(),
        os_release: dir.join("os-release"),
        is_root: true,
        fs_root: dir.join("root"),
    }
}

fn stub(path: &Path) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, "#!/bin/sh\n").unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn ninja_build_of_the_server_target_with_digest_ref_and_flags() {
    assert!(
        Host::current().find("ninja").is_some(),
        "ninja is not installed (see .ci/run)"
    );
    let repo = hello_repo();
    let ws = workspace(&repo, "");
    let (configured, built) = clone_configure_build(&ws);
    let build_dir = ws.dir.path().join("cache/build");
    assert_eq!(cfg(&configured).generator, "Ninja");
    let planned_dir = cfg(&configured).build_dir.as_str();
    assert!(Path::new(planned_dir).starts_with(&build_dir));
    assert!(Path::new(planned_dir).join("build.ninja").is_file());

    let binary = bin(&built).binary.as_str();
    assert_eq!(binary, format!("{planned_dir}/bin/llama-server"));
    assert_eq!(built.artifacts, [Path::new(binary).to_path_buf()]);
    assert!(run_binary(binary).contains("hello from llama-server"));
    // Only the target: the project's other executable is not built.
    assert!(!Path::new(planned_dir).join("bin/other-tool").exists());

    let sha = Command::new("sha256sum").arg(binary).output().unwrap();
    let sha = String::from_utf8_lossy(&sha.stdout);
    assert_eq!(
        bin(&built).engine_digest,
        format!("sha256:{}", sha.split_whitespace().next().unwrap())
    );
    assert_eq!(bin(&built).build_ref, Some(repo.head()));
    let flags = &cfg(&configured).flags;
    assert!(flags.iter().any(|f| f == "-DGGML_NATIVE=OFF"), "{flags:?}");
    assert!(flags.iter().any(|f| f == "-DCMAKE_BUILD_TYPE=Release"));
    let log = ws.log_text();
    assert!(log.contains("--target llama-server --parallel 2"), "{log}");
    assert!(log.contains("-G Ninja"));
}

#[test]
fn makefiles_when_configured_or_when_ninja_is_missing() {
    let repo = hello_repo();
    let ws = workspace(&repo, "          generator: Unix Makefiles\n");
    let (configured, built) = clone_configure_build(&ws);
    assert_eq!(cfg(&configured).generator, "Unix Makefiles");
    let dir = cfg(&configured).build_dir.as_str();
    assert!(Path::new(dir).join("Makefile").is_file());
    assert!(run_binary(bin(&built).binary.as_str()).contains("hello"));

    // Automatic: no ninja on this host's PATH gives Makefiles; then, with ninja, the same
    // build dir is reconfigured for Ninja (the old CMake cache is dropped).
    let ws = workspace(&repo, "");
    let bare = tempfile::tempdir().unwrap();
    let spec = configure_spec(&ws);
    let out = configure_with(&ws, &spec, &host_path_only(bare.path())).unwrap();
    assert_eq!(cfg(&out).generator, "Unix Makefiles");
    assert_eq!(cfg(&out).compiler_launcher, None);
    let out = configure_with(&ws, &spec, &Host::current()).unwrap();
    assert_eq!(cfg(&out).generator, "Ninja");
    assert!(ws
        .log_text()
        .contains("it was configured for the generator Unix Makefiles, now Ninja"));
    build_after(&ws, &out).unwrap();
}

#[test]
fn ccache_is_the_compiler_launcher_when_installed() {
    let ccache = Host::current()
        .find("ccache")
        .expect("ccache is not installed (see .ci/run)");
    let repo = hello_repo();
    let ws = workspace(&repo, "");
    let (configured, _) = clone_configure_build(&ws);
    assert_eq!(
        cfg(&configured).compiler_launcher,
        Some(ccache.display().to_string())
    );
    // ${cache} holds both the checkout (${cache}/src/…) and the build (${cache}/build/…).
    assert_eq!(
        cfg(&configured).ccache_basedir,
        Some(ws.cache().display().to_string())
    );
    let dir = cfg(&configured).build_dir.as_str();
    let cache = fs::read_to_string(Path::new(dir).join("CMakeCache.txt")).unwrap();
    for lang in ["C", "CXX"] {
        let line = format!(
            "CMAKE_{lang}_COMPILER_LAUNCHER:UNINITIALIZED={}",
            ccache.display()
        );
        assert!(cache.contains(&line), "{line} not in the CMake cache");
    }
    let facts = configure_facts(
        &configure_spec(&ws),
        &ws.cx("cmake-configure", BTreeMap::new()),
    )
    .unwrap();
    assert!(facts["cmake_version"].starts_with("cmake version "));
    assert_eq!(facts["generator"], "Ninja");
    assert!(facts["compiler_launcher"].contains("ccache version"));
}

#[test]
fn build_dirs_are_keyed_by_the_normalised_flags() {
    let repo = hello_repo();
    let flags_a = "          cmake_flags: [-DHELLO_FLAG=a, -DGGML_NATIVE=OFF]\n";
    let flags_a_reordered = "          cmake_flags: [-DGGML_NATIVE=OFF, -DHELLO_FLAG=a]\n";
    let flags_b = "          cmake_flags: [-DGGML_NATIVE=OFF, -DHELLO_FLAG=b]\n";
    let mut ws = workspace(&repo, flags_a);
    let dir_a = build_spec(&ws).build_dir;
    let (_, built_a) = clone_configure_build(&ws);
    ws.replan(&provision_steps_testkit::cpu_pool_config(
        &repo.url(),
        "v1",
        false,
        flags_a_reordered,
    ));
    assert_eq!(
        build_spec(&ws).build_dir,
        dir_a,
        "same flags, same build dir"
    );
    ws.replan(&provision_steps_testkit::cpu_pool_config(
        &repo.url(),
        "v1",
        false,
        flags_b,
    ));
    assert_ne!(
        build_spec(&ws).build_dir,
        dir_a,
        "other flags, other build dir"
    );
    let (_, built_b) = clone_configure_build(&ws);
    // Both builds stay side by side, each with its own flags.
    let a = bin(&built_a).binary.as_str();
    let b = bin(&built_b).binary.as_str();
    assert_ne!(a, b);
    assert!(run_binary(a).contains("flag: a"));
    assert!(run_binary(b).contains("flag: b"));
    assert_ne!(bin(&built_a).engine_digest, bin(&built_b).engine_digest);
}

#[test]
fn a_failing_configure_quotes_cmakes_error() {
    let repo = hello_repo();
    let ws = workspace(
        &repo,
        "          cmake_flags: [-DGGML_NATIVE=OFF, -DHELLO_FAIL=ON]\n",
    );
    let err = configure_with(&ws, &configure_spec(&ws), &Host::current()).unwrap_err();
    assert!(
        err.message.starts_with("CMake configure of "),
        "{}",
        err.message
    );
    assert!(err
        .message
        .contains("failed (exit status 1):\nCMake Error at CMakeLists.txt:"));
    assert!(err
        .message
        .contains("HELLO_FAIL is set: this configure fails on purpose"));
    assert!(err.hint.unwrap().contains("cmake_flags"));
    assert!(err.tail.unwrap().contains("Configuring incomplete"));
}

#[test]
fn the_binary_must_exist_and_the_build_needs_a_configure() {
    let repo = hello_repo();
    let ws = workspace(&repo, "");
    let mut spec = build_spec(&ws);
    let err = build(&spec, &ws.cx("cmake-build", BTreeMap::new())).unwrap_err();
    assert!(
        err.message
            .ends_with("is not configured (no CMakeCache.txt)"),
        "{}",
        err.message
    );

    let configured = configure_with(&ws, &configure_spec(&ws), &Host::current()).unwrap();
    spec.binary = spec.binary.replace("bin/llama-server", "bin/not-there");
    let id = ws.step("cmake-configure").id.clone();
    let deps = BTreeMap::from([(id, configured.outputs.expect("configure outputs"))]);
    let err = build(&spec, &ws.cx("cmake-build", deps)).unwrap_err();
    assert!(
        err.message.contains("bin/not-there does not exist"),
        "{}",
        err.message
    );

    // An unknown target fails with the build tool's words.
    spec.target = "no-such-target".into();
    spec.argv = spec
        .argv
        .iter()
        .map(|a| a.replace("llama-server", "no-such-target"))
        .collect();
    let err = build(&spec, &ws.cx("cmake-build", BTreeMap::new())).unwrap_err();
    assert!(err
        .message
        .starts_with("building the no-such-target target in "));
    assert!(err.tail.unwrap().contains("no-such-target"));
}

#[test]
fn a_cuda_configure_without_nvcc_fails_fast() {
    let repo = hello_repo();
    let ws = workspace(&repo, "");
    let mut spec = configure_spec(&ws);
    spec.cuda = true;
    let bare = tempfile::tempdir().unwrap();
    let err = configure_with(&ws, &spec, &host_path_only(bare.path())).unwrap_err();
    assert!(err.message.contains("needs nvcc"), "{}", err.message);
    let hint = err.hint.unwrap();
    assert!(hint.contains("never falls back to a CPU build"), "{hint}");
    assert!(hint.contains("root/usr/local/cuda"), "{hint}");
    assert!(!ws.log_text().contains("$ cmake"), "cmake did not run");
}

#[test]
fn a_cuda_toolkit_outside_path_is_passed_and_a_failed_configure_is_retried_once() {
    let repo = hello_repo();
    let ws = workspace(
        &repo,
        "          cmake_flags: [-DGGML_NATIVE=OFF, -DHELLO_NEEDS_HOST_COMPILER=ON]\n",
    );
    let mut spec = configure_spec(&ws);
    spec.cuda = true;
    let fake = tempfile::tempdir().unwrap();
    let host = host_path_only(fake.path());
    let root = host.fs_root.join("opt/cuda");
    stub(&root.join("bin/nvcc"));
    // No compatible host compiler: the CUDA configure fails at once, quoting CMake.
    let err = configure_with(&ws, &spec, &host).unwrap_err();
    assert!(
        err.message.contains("unsupported GNU version!"),
        "{}",
        err.message
    );
    assert!(err
        .hint
        .unwrap()
        .contains("never falls back to a CPU build"));

    // With g++-13 on PATH: one retry with it as the CUDA host compiler, which passes.
    let gxx13 = fake.path().join("bin/g++-13");
    stub(&gxx13);
    let out = configure_with(&ws, &spec, &host).unwrap();
    assert_eq!(cfg(&out).cuda_root, Some(root.display().to_string()));
    let log = ws.log_text();
    assert!(log.contains(&format!(
        "retrying once with the host compiler {}",
        gxx13.display()
    )));
    let dir = cfg(&out).build_dir.as_str();
    let cache = fs::read_to_string(Path::new(dir).join("CMakeCache.txt")).unwrap();
    assert!(cache.contains(&format!(
        "CUDAToolkit_ROOT:UNINITIALIZED={}",
        root.display()
    )));
    assert!(cache.contains(&format!(
        "CMAKE_CUDA_COMPILER:UNINITIALIZED={}",
        root.join("bin/nvcc").display()
    )));
    assert!(cache.contains(&format!(
        "CMAKE_CUDA_HOST_COMPILER:UNINITIALIZED={}",
        gxx13.display()
    )));
}
