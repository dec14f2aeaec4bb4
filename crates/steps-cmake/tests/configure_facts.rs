//! The configure's facts reuse the tool version cache the preflight-tools step fills: with
//! cmake and ccache unchanged, a warm plan runs neither of them.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use provision_plan::StepSpec;
use provision_steps_cmake::configure_facts_on;
use provision_steps_testkit::{cpu_pool_config, Workspace};
use provision_steps_tools::Host;

/// A tool printing `version` that logs each run to `runs`.
fn counting_tool(bin: &Path, name: &str, version: &str, runs: &Path) {
    let p = bin.join(name);
    fs::write(
        &p,
        format!(
            "#!/bin/sh\necho {name} >> '{}'\necho '{version}'\n",
            runs.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn configure_facts_read_versions_from_the_tool_cache() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let runs = dir.path().join("runs");
    for (name, version) in [
        ("git", "git version 2.43.0"),
        ("cmake", "cmake version 3.28.3"),
        ("cc", "cc (Ubuntu 13.3.0) 13.3.0"),
        ("c++", "c++ (Ubuntu 13.3.0) 13.3.0"),
        ("ninja", "1.11.1"),
        ("ccache", "ccache version 4.9.1"),
    ] {
        counting_tool(&bin, name, version, &runs);
    }
    let ran = |name: &str| {
        fs::read_to_string(&runs)
            .unwrap_or_default()
            .lines()
            .filter(|l| *l == name)
            .count()
    };
    let host = Host {
        path: bin.clone().into_os_string(),
        os_release: dir.path().join("os-release"),
        is_root: true,
        fs_root: dir.path().join("root"),
    };
    let ws = Workspace::new(&cpu_pool_config(
        "file:///srv/git/llama.cpp",
        "v1",
        false,
        "",
    ));
    let StepSpec::PreflightTools(tools) = &ws.step("preflight-tools").spec else {
        unreachable!()
    };
    let StepSpec::CmakeConfigure(configure) = &ws.step("cmake-configure").spec else {
        unreachable!()
    };

    // The preflight runs cmake once; the configure's facts then run only ccache, once.
    provision_steps_tools::facts(tools, &host, &ws.cx("preflight-tools", BTreeMap::new())).unwrap();
    assert_eq!(ran("cmake"), 1);
    let cx = ws.cx("cmake-configure", BTreeMap::new());
    let facts = configure_facts_on(configure, &cx, &host).unwrap();
    assert_eq!(facts["cmake_version"], "cmake version 3.28.3");
    assert_eq!(facts["generator"], "Ninja");
    assert_eq!(
        facts["compiler_launcher"],
        format!("{} (ccache version 4.9.1)", bin.join("ccache").display())
    );
    assert_eq!((ran("cmake"), ran("ccache")), (1, 1));
    assert_eq!(configure_facts_on(configure, &cx, &host).unwrap(), facts);
    assert_eq!((ran("cmake"), ran("ccache")), (1, 1));
    assert!(!ws.log_text().contains("--version"), "{}", ws.log_text());

    // Without cmake: an error naming it, not a panic or an empty fact.
    fs::remove_file(bin.join("cmake")).unwrap();
    let err = configure_facts_on(configure, &cx, &host).unwrap_err();
    assert!(
        err.message.contains("`cmake` is not on PATH"),
        "{}",
        err.message
    );
}
