//! preflight-tools against injected PATHs (temp dirs of stub executables) and os-release files.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use provision_plan::outputs::PreflightToolsOutputs;
use provision_plan::step::{PreflightTools, ToolRequirement};
use provision_plan::StepSpec;
use provision_steps_testkit::{cpu_pool_config, Workspace};
use provision_steps_tools::{check, facts, run, Host};
use tempfile::TempDir;

const ARCH: &str = "NAME=\"Arch Linux\"\nPRETTY_NAME=\"Arch Linux\"\nID=arch\n";
const DEBIAN: &str = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
const FEDORA: &str = "PRETTY_NAME=\"Fedora Linux 40\"\nID=fedora\n";

/// A temp dir with a `bin/` of stubs and an os-release file.
struct FakeHost {
    dir: TempDir,
}

impl FakeHost {
    fn new(os_release: &str, tools: &[&str]) -> FakeHost {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("bin")).unwrap();
        fs::write(dir.path().join("os-release"), os_release).unwrap();
        let h = FakeHost { dir };
        for t in tools {
            h.stub(t, &format!("echo '{t} version 1.2.3'"));
        }
        h
    }

    fn bin(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    fn stub(&self, name: &str, body: &str) {
        let p = self.bin().join(name);
        fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A `pacman` (or `sudo`) that records its argv and then "installs" `installs`.
    fn recording(&self, name: &str, installs: &[&str]) {
        let record = self.dir.path().join(format!("{name}.argv"));
        let mut body = format!("printf '%s\\n' \"$*\" >> '{}'\n", record.display());
        if name == "sudo" {
            body.push_str("shift; exec \"$@\"\n");
        }
        for t in installs {
            let p = self.bin().join(t);
            body.push_str(&format!(
                "printf '#!/bin/sh\\necho {t} 9\\n' > '{0}'; /bin/chmod +x '{0}'\n",
                p.display()
            ));
        }
        self.stub(name, &body);
    }

    fn recorded(&self, name: &str) -> String {
        fs::read_to_string(self.dir.path().join(format!("{name}.argv"))).unwrap_or_default()
    }

    fn host(&self, is_root: bool) -> Host {
        Host {
            path: self.bin().into_os_string(),
            os_release: self.dir.path().join("os-release"),
            is_root,
            fs_root: self.dir.path().join("root"),
        }
    }
}

fn tool(name: &str, any_of: &[&str]) -> ToolRequirement {
    ToolRequirement {
        name: name.into(),
        any_of: any_of.iter().map(|s| s.to_string()).collect(),
        needed_for: "testing".into(),
    }
}

/// The preflight spec of a real plan (git, cmake, cc, c++, ninja) and a workspace for contexts.
fn planned(allow: bool) -> (Workspace, PreflightTools) {
    let ws = Workspace::new(&cpu_pool_config(
        "file:///srv/git/llama.cpp",
        "v1",
        false,
        "          generator: Ninja\n",
    ));
    let StepSpec::PreflightTools(mut spec) = ws.step("preflight-tools").spec.clone() else {
        unreachable!()
    };
    spec.allow_package_installs = allow;
    (ws, spec)
}

#[test]
fn everything_present_passes_with_paths() {
    let h = FakeHost::new(DEBIAN, &["git", "cmake", "gcc", "g++", "ninja"]);
    let (ws, spec) = planned(false);
    let out = run(
        &spec,
        &h.host(true),
        &ws.cx("preflight-tools", BTreeMap::new()),
    )
    .unwrap();
    let tools = &tools_of(&out);
    assert_eq!(tools["git"], h.bin().join("git").display().to_string());
    // `cc` is absent: the next command of any_of is used.
    assert_eq!(
        tools["C compiler"],
        h.bin().join("gcc").display().to_string()
    );
    assert_eq!(
        tools["C++ compiler"],
        h.bin().join("g++").display().to_string()
    );
}

#[test]
fn facts_hold_path_and_version_and_missing() {
    let h = FakeHost::new(DEBIAN, &["git", "cmake"]);
    let (ws, spec) = planned(false);
    let cx = ws.cx("preflight-tools", BTreeMap::new());
    let f = facts(&spec, &h.host(true), &cx).unwrap();
    assert_eq!(
        f["tool.git"],
        format!("{} (git version 1.2.3)", h.bin().join("git").display())
    );
    assert_eq!(f["tool.C compiler"], "missing");
    assert_eq!(f["tool.build tool"], "missing");
    // A changed version is a changed fact.
    h.stub("git", "echo 'git version 2.0'");
    assert_ne!(
        facts(&spec, &h.host(true), &cx).unwrap()["tool.git"],
        f["tool.git"]
    );
}

#[test]
fn facts_run_each_tool_once_while_it_is_unchanged() {
    let h = FakeHost::new(DEBIAN, &[]);
    let runs = h.dir.path().join("runs");
    for t in ["git", "cmake", "cc", "c++", "ninja"] {
        h.stub(
            t,
            &format!("echo {t} >> '{}'; echo '{t} version 1'", runs.display()),
        );
    }
    let (ws, spec) = planned(false);
    let cx = ws.cx("preflight-tools", BTreeMap::new());
    let ran = || {
        fs::read_to_string(&runs)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let first = facts(&spec, &h.host(true), &cx).unwrap();
    assert_eq!(ran(), 5);
    assert!(ws.cache().join("tools.json").is_file());
    // Warm: the same facts, no process.
    assert_eq!(facts(&spec, &h.host(true), &cx).unwrap(), first);
    assert_eq!(ran(), 5);
    // An upgraded compiler runs again, and only it. (Rewritten in place within one clock
    // tick, only the size tells: real upgrades also replace the file, a new inode.)
    h.stub(
        "cc",
        &format!("echo cc >> '{}'; echo 'cc version 2.0'", runs.display()),
    );
    let upgraded = facts(&spec, &h.host(true), &cx).unwrap();
    assert_eq!(ran(), 6);
    assert_eq!(
        upgraded["tool.C compiler"],
        format!("{} (cc version 2.0)", h.bin().join("cc").display())
    );
    assert_eq!(upgraded["tool.git"], first["tool.git"]);
}

#[test]
fn one_error_lists_everything_missing_with_the_apt_command() {
    let h = FakeHost::new(DEBIAN, &["git"]);
    let (ws, spec) = planned(true);
    let err = run(
        &spec,
        &h.host(true),
        &ws.cx("preflight-tools", BTreeMap::new()),
    )
    .unwrap_err();
    assert!(
        err.message
            .starts_with("4 required tools are not found on PATH:"),
        "{}",
        err.message
    );
    for name in ["cmake", "C compiler", "C++ compiler", "build tool"] {
        assert!(
            err.message.contains(&format!("  - {name} (")),
            "{}",
            err.message
        );
    }
    assert!(err.message.contains("one of `cc`, `gcc`, `clang`"));
    let hint = err.hint.unwrap();
    assert!(
        hint.starts_with("install them: sudo apt-get install -y cmake gcc g++ ninja-build"),
        "{hint}"
    );
    assert!(hint.contains("only on Arch-like hosts"), "{hint}");
    // Never an install on Debian, even when allowed.
    assert!(ws.log_text().is_empty());
}

#[test]
fn dnf_command_on_fedora() {
    let h = FakeHost::new(FEDORA, &["git", "cmake", "gcc", "ninja"]);
    let (ws, spec) = planned(false);
    let err = run(
        &spec,
        &h.host(true),
        &ws.cx("preflight-tools", BTreeMap::new()),
    )
    .unwrap_err();
    assert!(err.message.starts_with("1 required tool is not found"));
    assert_eq!(
        err.hint.unwrap(),
        "install them: sudo dnf install -y gcc-c++"
    );
}

#[test]
fn arch_without_permission_names_pacman_and_the_setting_but_installs_nothing() {
    let h = FakeHost::new(ARCH, &["git", "gcc", "g++", "ninja"]);
    h.recording("pacman", &["cmake"]);
    let (ws, spec) = planned(false);
    let err = run(
        &spec,
        &h.host(true),
        &ws.cx("preflight-tools", BTreeMap::new()),
    )
    .unwrap_err();
    let hint = err.hint.unwrap();
    assert!(hint.contains("sudo pacman -S --needed cmake"), "{hint}");
    assert!(hint.contains("allow_package_installs: true"), "{hint}");
    assert_eq!(h.recorded("pacman"), "");
}

#[test]
fn arch_with_permission_installs_with_pacman_as_root_then_rechecks() {
    let h = FakeHost::new(ARCH, &["git", "gcc", "g++"]);
    h.recording("pacman", &["cmake", "ninja"]);
    let (ws, spec) = planned(true);
    let out = run(
        &spec,
        &h.host(true),
        &ws.cx("preflight-tools", BTreeMap::new()),
    )
    .unwrap();
    assert_eq!(
        h.recorded("pacman"),
        "-S --needed --noconfirm cmake ninja\n"
    );
    assert_eq!(
        tools_of(&out)["cmake"],
        h.bin().join("cmake").display().to_string()
    );
    assert!(ws
        .log_text()
        .contains("pacman -S --needed --noconfirm cmake ninja"));
}

#[test]
fn arch_not_root_uses_sudo_n() {
    let h = FakeHost::new(ARCH, &["git", "cmake", "gcc", "g++"]);
    h.recording("pacman", &["ninja"]);
    h.recording("sudo", &[]);
    let (ws, spec) = planned(true);
    run(
        &spec,
        &h.host(false),
        &ws.cx("preflight-tools", BTreeMap::new()),
    )
    .unwrap();
    let sudo = h.recorded("sudo");
    assert!(
        sudo.starts_with(&format!("-n {}", h.bin().join("pacman").display())),
        "{sudo}"
    );
    assert!(sudo.trim_end().ends_with("-S --needed --noconfirm ninja"));
    assert_eq!(h.recorded("pacman"), "-S --needed --noconfirm ninja\n");
}

#[test]
fn a_failing_install_is_reported_with_the_manual_command() {
    let h = FakeHost::new(ARCH, &["git", "cmake", "gcc", "g++"]);
    h.stub(
        "pacman",
        "echo 'error: you cannot perform this operation' >&2; exit 1",
    );
    let (ws, spec) = planned(true);
    let err = run(
        &spec,
        &h.host(true),
        &ws.cx("preflight-tools", BTreeMap::new()),
    )
    .unwrap_err();
    assert!(
        err.message.contains("failed with exit status 1"),
        "{}",
        err.message
    );
    assert!(err
        .tail
        .unwrap()
        .contains("you cannot perform this operation"));
    assert!(err
        .hint
        .unwrap()
        .contains("install by hand: sudo pacman -S --needed ninja"));
}

#[test]
fn an_install_that_does_not_provide_the_tool_fails() {
    let h = FakeHost::new(ARCH, &["git", "cmake", "gcc", "g++"]);
    h.recording("pacman", &[]);
    let (ws, spec) = planned(true);
    let err = run(
        &spec,
        &h.host(true),
        &ws.cx("preflight-tools", BTreeMap::new()),
    )
    .unwrap_err();
    assert!(err.message.contains("build tool"));
    assert!(err.hint.unwrap().contains("still not on PATH"));
}

#[test]
fn nvcc_is_found_in_a_cuda_root_when_not_on_path() {
    let h = FakeHost::new(DEBIAN, &[]);
    let spec = PreflightTools {
        tools: vec![tool("CUDA compiler", &["nvcc"])],
        allow_package_installs: false,
    };
    let host = h.host(true);
    assert_eq!(check(&spec, &host).missing.len(), 1);
    let nvcc = host.fs_root.join("opt/cuda/bin/nvcc");
    fs::create_dir_all(nvcc.parent().unwrap()).unwrap();
    fs::write(
        &nvcc,
        "#!/bin/sh\necho 'Cuda compilation tools, release 12.4'\n",
    )
    .unwrap();
    fs::set_permissions(&nvcc, fs::Permissions::from_mode(0o755)).unwrap();
    let checked = check(&spec, &host);
    assert!(checked.missing.is_empty());
    assert_eq!(checked.found[0].1, nvcc);
}

#[test]
fn missing_nvcc_on_debian_suggests_the_toolkit() {
    let h = FakeHost::new(DEBIAN, &[]);
    let spec = PreflightTools {
        tools: vec![tool("CUDA compiler", &["nvcc"])],
        allow_package_installs: false,
    };
    let (ws, _) = planned(false);
    let err = run(
        &spec,
        &h.host(true),
        &ws.cx("preflight-tools", BTreeMap::new()),
    )
    .unwrap_err();
    let hint = err.hint.unwrap();
    assert!(
        hint.contains("sudo apt-get install -y nvidia-cuda-toolkit"),
        "{hint}"
    );
    assert!(hint.contains("/usr/local/cuda"));
}

#[test]
fn unknown_distribution_and_missing_os_release() {
    let h = FakeHost::new("ID=alpine\nPRETTY_NAME=\"Alpine Linux\"\n", &[]);
    let spec = PreflightTools {
        tools: vec![tool("git", &["git"])],
        allow_package_installs: false,
    };
    let (ws, _) = planned(false);
    let err = run(
        &spec,
        &h.host(true),
        &ws.cx("preflight-tools", BTreeMap::new()),
    )
    .unwrap_err();
    assert!(err
        .hint
        .unwrap()
        .contains("package manager of Alpine Linux"));
    let mut host = h.host(true);
    host.os_release = Path::new("/nonexistent/os-release").to_path_buf();
    let err = run(&spec, &host, &ws.cx("preflight-tools", BTreeMap::new())).unwrap_err();
    assert!(err.hint.unwrap().contains("package manager of unknown"));
}

#[test]
fn the_current_host_has_this_machines_tools() {
    // This machine runs the tests with git (the git tests need it): the real lookup finds it.
    let host = Host::current();
    assert!(host.find("git").is_some());
    assert!(host.os_release.ends_with("os-release"));
}

/// The tools a passed preflight recorded.
fn tools_of(out: &provision_executor::Outcome) -> BTreeMap<String, String> {
    let outputs = out.outputs.as_ref().expect("outputs");
    let tools = outputs
        .get::<PreflightToolsOutputs>()
        .expect("preflight outputs");
    tools.tools.clone()
}
