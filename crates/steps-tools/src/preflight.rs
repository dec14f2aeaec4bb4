//! The preflight-tools step: every tool the plan runs is found, or one error lists everything
//! missing with the install command for this distribution. Packages are installed only with
//! `allow_package_installs: true` on an Arch-like host (pacman); never anywhere else.

use std::path::{Path, PathBuf};

use provision_executor::command::StepCommand;
use provision_executor::{Facts, Outcome, StepContext, StepError};
use provision_plan::outputs::PreflightToolsOutputs;
use provision_plan::step::{PreflightTools, ToolRequirement};

use crate::cuda::{candidate_roots, find_cuda};
use crate::distro::{OsRelease, PackageManager};
use crate::host::Host;
use crate::tool_versions::ToolVersions;

/// What was found and what is missing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ToolCheck {
    /// Each satisfied requirement with the command that satisfies it.
    pub found: Vec<(ToolRequirement, PathBuf)>,
    pub missing: Vec<ToolRequirement>,
}

/// Look for every tool of `spec` on `host`.
pub fn check(spec: &PreflightTools, host: &Host) -> ToolCheck {
    let mut result = ToolCheck::default();
    for tool in &spec.tools {
        match locate(tool, host) {
            Some(path) => result.found.push((tool.clone(), path)),
            None => result.missing.push(tool.clone()),
        }
    }
    result
}

/// The first command of `tool.any_of` on PATH; `nvcc` is also looked for in the CUDA roots.
fn locate(tool: &ToolRequirement, host: &Host) -> Option<PathBuf> {
    tool.any_of.iter().find_map(|cmd| {
        host.find(cmd).or_else(|| {
            (cmd == "nvcc")
                .then(|| find_cuda(host.path(), host.fs_root()))
                .flatten()
                .map(|cuda| cuda.nvcc)
        })
    })
}

/// The path and version of each tool (`tool.<name>` → `<path> (<first line of --version>)`),
/// or `missing`. Part of the fingerprint: an upgraded compiler rebuilds. Versions come from
/// `${cache}/tools.json` while each executable's identity is unchanged ([`ToolVersions`]).
pub fn facts(spec: &PreflightTools, host: &Host, cx: &StepContext<'_>) -> Result<Facts, StepError> {
    let checked = check(spec, host);
    let paths: Vec<&Path> = checked.found.iter().map(|(_, p)| p.as_path()).collect();
    let versions = ToolVersions::in_cache(cx).versions(&paths, host.path());
    let mut facts = Facts::new();
    for ((tool, path), version) in checked.found.iter().zip(versions) {
        let value = match version {
            Some(v) => format!("{} ({v})", path.display()),
            None => path.display().to_string(),
        };
        facts.insert(format!("tool.{}", tool.name), value);
    }
    for tool in &checked.missing {
        facts.insert(format!("tool.{}", tool.name), "missing".into());
    }
    Ok(facts)
}

/// Check the tools; install missing ones with pacman where allowed; else fail listing
/// everything missing and how to install it.
pub fn run(spec: &PreflightTools, host: &Host, cx: &StepContext<'_>) -> Result<Outcome, StepError> {
    let mut checked = check(spec, host);
    if !checked.missing.is_empty() {
        let os = host.os_release().unwrap_or_default();
        if !(spec.allow_package_installs && os.is_arch_like()) {
            return Err(missing_error(
                &checked.missing,
                &os,
                spec.allow_package_installs,
            ));
        }
        install_with_pacman(&checked.missing, host, cx)?;
        checked = check(spec, host);
        if !checked.missing.is_empty() {
            return Err(missing_error(&checked.missing, &os, true).hint(format!(
                "pacman ran but these are still not on PATH ({}); install them by hand: {}",
                std::env::split_paths(&host.path)
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":"),
                install_hint(&checked.missing, &os)
            )));
        }
    }
    let tools = checked
        .found
        .iter()
        .map(|(t, p)| (t.name.clone(), p.display().to_string()))
        .collect();
    Ok(Outcome::new(PreflightToolsOutputs { tools }))
}

/// Packages that provide `missing` with `pm`, deduplicated, in order.
fn packages(missing: &[ToolRequirement], pm: PackageManager) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for tool in missing {
        if let Some(p) = tool.any_of.iter().find_map(|c| pm.package_for(c)) {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

fn install_hint(missing: &[ToolRequirement], os: &OsRelease) -> String {
    match os.package_manager() {
        Some(pm) => {
            let mut hint = pm.install_command(&packages(missing, pm));
            if missing.iter().any(|t| t.any_of.iter().any(|c| c == "nvcc")) {
                hint.push_str(
                    " (for nvcc, NVIDIA's CUDA toolkit installed under /usr/local/cuda or /opt/cuda also works)",
                );
            }
            hint
        }
        None => format!(
            "install them with the package manager of {} (provision names install commands for apt, pacman and dnf)",
            os.name()
        ),
    }
}

fn missing_error(missing: &[ToolRequirement], os: &OsRelease, allowed: bool) -> StepError {
    let list: Vec<String> = missing
        .iter()
        .map(|t| {
            let which = if t.any_of.len() == 1 {
                format!("`{}`", t.any_of[0])
            } else {
                format!("one of `{}`", t.any_of.join("`, `"))
            };
            format!("  - {} ({which}), needed for {}", t.name, t.needed_for)
        })
        .collect();
    let mut hint = format!("install them: {}", install_hint(missing, os));
    if os.is_arch_like() && !allowed {
        hint.push_str(
            ", or set `provisioning.allow_package_installs: true` to let provision run pacman",
        );
    } else if !os.is_arch_like() && allowed {
        hint.push_str(&format!(
            " (provision installs packages itself only on Arch-like hosts; this is {})",
            os.name()
        ));
    }
    StepError::new(format!(
        "{} required tool{} not found on PATH:\n{}",
        missing.len(),
        if missing.len() == 1 { " is" } else { "s are" },
        list.join("\n")
    ))
    .hint(hint)
}

fn install_with_pacman(
    missing: &[ToolRequirement],
    host: &Host,
    cx: &StepContext<'_>,
) -> Result<(), StepError> {
    let os = host.os_release().unwrap_or_default();
    let pkgs = packages(missing, PackageManager::Pacman);
    let pacman = host.find("pacman").ok_or_else(|| {
        missing_error(missing, &os, true).hint(format!(
            "this host looks like Arch ({}) but `pacman` is not on PATH; install by hand: {}",
            os.name(),
            install_hint(missing, &os)
        ))
    })?;
    let mut argv: Vec<String> = Vec::new();
    if !host.is_root {
        let sudo = host.find("sudo").ok_or_else(|| {
            missing_error(missing, &os, true).hint(format!(
                "installing needs root and `sudo` is not on PATH; run as root or install by hand: {}",
                install_hint(missing, &os)
            ))
        })?;
        argv.extend([sudo.display().to_string(), "-n".into()]);
    }
    argv.push(pacman.display().to_string());
    argv.extend(["-S", "--needed", "--noconfirm"].map(String::from));
    argv.extend(pkgs.iter().map(|p| p.to_string()));
    StepCommand::new(argv)
        .env("PATH", host.path.to_string_lossy())
        .run(cx)
        .map_err(|e| {
            let sudo_hint = if host.is_root {
                String::new()
            } else {
                " (`sudo -n` needs passwordless sudo for pacman; or run provision as root)".into()
            };
            StepError::from(e).hint(format!(
                "installing {} with pacman failed{sudo_hint}; install by hand: {}",
                pkgs.join(" "),
                install_hint(missing, &os)
            ))
        })
}

/// Where nvcc was looked for, for messages: PATH, then these roots.
pub fn cuda_search_roots(host: &Host) -> Vec<PathBuf> {
    candidate_roots(host.fs_root())
}
