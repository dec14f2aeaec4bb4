//! What the tests and the end-to-end run need on a fresh machine, installed when missing:
//! Debian packages (cmake, ninja, ccache, OpenSSL's headers) and a Python venv with the pinned
//! `gguf` writer.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// PyPI packages for the tiny-model writer, pinned.
pub const PY_PACKAGES: &[&str] = &["gguf==0.19.0", "numpy==2.4.6"];

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("running {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

/// `apt-get install` the packages whose command is missing (as root, or with `sudo -n`).
pub fn ensure_apt(packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(cmd, _)| !have(cmd))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    apt_install(&missing)
}

/// `apt-get update` and `apt-get install` (as root, or with `sudo -n`).
pub fn apt_install(missing: &[&str]) -> Result<()> {
    eprintln!("== installing {}", missing.join(" "));
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    let apt = |args: &[&str]| {
        let mut c = if root {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.args(["-n", "apt-get"]);
            c
        };
        c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    run(&mut apt(&["update", "-qq"]))?;
    let mut install = apt(&["install", "-y", "-qq"]);
    install.args(missing);
    run(&mut install)
}

/// Where libssl-dev puts OpenSSL's main header.
const OPENSSL_HEADER: &str = "/usr/include/openssl/ssl.h";

/// The build-step tests' tools, OpenSSL's headers (for a llama-server with TLS), and python3 with venv (the kubernetes-validate test).
pub fn ensure_build_tools() -> Result<()> {
    ensure_apt(&[
        ("git", "git"),
        ("cmake", "cmake"),
        ("ninja", "ninja-build"),
        ("ccache", "ccache"),
        ("c++", "g++"),
        ("pkg-config", "pkg-config"),
    ])?;
    // llama-server serves TLS (`--ssl-cert-file`, `listen.tls`) only when built against
    // OpenSSL: LLAMA_OPENSSL is on by default but silently off without the headers.
    if !Path::new(OPENSSL_HEADER).exists() {
        apt_install(&["libssl-dev"])?;
    }
    let venv_ok = Command::new("python3")
        .args(["-c", "import venv, ensurepip"])
        .status()
        .is_ok_and(|s| s.success());
    if !venv_ok {
        apt_install(&["python3-venv"])?;
    }
    Ok(())
}

/// A venv under `target/` with [`PY_PACKAGES`]; returns its python.
pub fn ensure_venv(root: &Path) -> Result<PathBuf> {
    let venv = root.join("target/py-venv");
    let python = venv.join("bin/python");
    let stamp = venv.join(".provision-packages");
    let wanted = PY_PACKAGES.join("\n");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) && python.exists() {
        return Ok(python);
    }
    if !python.exists() {
        eprintln!("== creating {}", venv.display());
        if run(Command::new("python3").args(["-m", "venv"]).arg(&venv)).is_err() {
            apt_install(&["python3-venv"])?;
            run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        }
    }
    eprintln!("== pip install {}", PY_PACKAGES.join(" "));
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(PY_PACKAGES))?;
    std::fs::write(&stamp, wanted)?;
    Ok(python)
}
