//! CUDA specifics of the configure: where the toolkit is, which architectures to build for,
//! and which host compiler to retry with. Pure functions of a [`Host`] (PATH and filesystem
//! root), so they are tested without a GPU or a toolkit.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use provision_steps_tools::cuda::candidate_roots;
use provision_steps_tools::{find_cuda, Host};

/// No nvcc on PATH nor in the usual roots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoToolkit {
    pub searched: Vec<PathBuf>,
}

/// The `-D` definitions a CUDA configure needs on `host`: `CUDAToolkit_ROOT` and
/// `CMAKE_CUDA_COMPILER` when nvcc is not on PATH, `CMAKE_CUDA_ARCHITECTURES` from the GPUs'
/// compute capabilities when none is configured. Definitions already in `defines` win.
pub fn defines(
    defines: &BTreeMap<String, String>,
    host: &Host,
    compute_caps: &[String],
) -> Result<Vec<(String, String)>, NoToolkit> {
    let toolkit = find_cuda(host.path(), host.fs_root()).ok_or_else(|| NoToolkit {
        searched: candidate_roots(host.fs_root()),
    })?;
    let mut out = Vec::new();
    if !toolkit.on_path {
        out.push((
            "CUDAToolkit_ROOT".into(),
            toolkit.root.display().to_string(),
        ));
        out.push((
            "CMAKE_CUDA_COMPILER".into(),
            toolkit.nvcc.display().to_string(),
        ));
    }
    if let Some(archs) = architectures(compute_caps) {
        out.push(("CMAKE_CUDA_ARCHITECTURES".into(), archs));
    }
    out.retain(|(k, _)| !defines.contains_key(k));
    Ok(out)
}

/// `["8.6", "8.9", "8.6"]` → `86;89`.
pub fn architectures(compute_caps: &[String]) -> Option<String> {
    let mut archs: Vec<String> = compute_caps
        .iter()
        .map(|c| c.trim().replace('.', ""))
        .filter(|c| !c.is_empty() && c.chars().all(|ch| ch.is_ascii_digit()))
        .collect();
    archs.sort();
    archs.dedup();
    (!archs.is_empty()).then(|| archs.join(";"))
}

/// The GPUs' compute capabilities from `nvidia-smi` (none when it is absent or fails).
pub fn query_compute_caps(host: &Host) -> Vec<String> {
    let Some(smi) = host.find("nvidia-smi") else {
        return Vec::new();
    };
    Command::new(smi)
        .args(["--query-gpu=compute_cap", "--format=csv,noheader"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// A host compiler nvcc supports when the default one is too new: `g++-13`, else `clang++`.
pub fn retry_host_compiler(host: &Host) -> Option<PathBuf> {
    ["g++-13", "clang++"].iter().find_map(|c| host.find(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    fn exe(p: &Path) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, "#!/bin/sh\n").unwrap();
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn host(dir: &Path) -> Host {
        Host {
            path: dir.join("bin").into_os_string(),
            os_release: dir.join("os-release"),
            is_root: true,
            fs_root: dir.join("root"),
        }
    }

    #[test]
    fn toolkit_outside_path_is_passed_to_cmake() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        assert_eq!(
            defines(&BTreeMap::new(), &h, &[]).unwrap_err().searched[0],
            h.fs_root.join("usr/local/cuda")
        );
        exe(&h.fs_root.join("usr/local/cuda-12.6/bin/nvcc"));
        let d = defines(&BTreeMap::new(), &h, &["8.6".into()]).unwrap();
        let root = h.fs_root.join("usr/local/cuda-12.6");
        assert_eq!(
            d,
            [
                ("CUDAToolkit_ROOT".to_string(), root.display().to_string()),
                (
                    "CMAKE_CUDA_COMPILER".to_string(),
                    root.join("bin/nvcc").display().to_string()
                ),
                ("CMAKE_CUDA_ARCHITECTURES".to_string(), "86".to_string()),
            ]
        );
    }

    #[test]
    fn nvcc_on_path_and_configured_values_need_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        exe(&dir.path().join("bin/nvcc"));
        let configured = BTreeMap::from([("CMAKE_CUDA_ARCHITECTURES".into(), "89".into())]);
        assert!(defines(&configured, &h, &["8.6".into()])
            .unwrap()
            .is_empty());
        assert!(defines(&BTreeMap::new(), &h, &[]).unwrap().is_empty());
    }

    #[test]
    fn architectures_from_compute_caps() {
        let caps: Vec<String> = ["8.6", " 8.9", "8.6", "", "n/a"].map(String::from).into();
        assert_eq!(architectures(&caps).as_deref(), Some("86;89"));
        assert_eq!(architectures(&[]), None);
    }

    #[test]
    fn retry_compiler_prefers_gcc_13_then_clang() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        assert_eq!(retry_host_compiler(&h), None);
        exe(&dir.path().join("bin/clang++"));
        assert_eq!(
            retry_host_compiler(&h),
            Some(dir.path().join("bin/clang++"))
        );
        exe(&dir.path().join("bin/g++-13"));
        assert_eq!(retry_host_compiler(&h), Some(dir.path().join("bin/g++-13")));
    }

    #[test]
    fn nvidia_smi_absent_means_no_caps() {
        let dir = tempfile::tempdir().unwrap();
        assert!(query_compute_caps(&host(dir.path())).is_empty());
        let smi = dir.path().join("bin/nvidia-smi");
        fs::create_dir_all(smi.parent().unwrap()).unwrap();
        fs::write(&smi, "#!/bin/sh\nprintf '8.6\\n8.9\\n'\n").unwrap();
        fs::set_permissions(&smi, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(query_compute_caps(&host(dir.path())), ["8.6", "8.9"]);
    }
}
