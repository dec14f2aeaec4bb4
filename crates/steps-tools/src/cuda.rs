//! Finding the CUDA toolkit: `nvcc` on PATH, else the usual install roots. A pure function of
//! the PATH and a filesystem root, so it is tested without a GPU or a toolkit.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::which::{find_on_path, is_executable};

/// Roots looked at, in order, when `nvcc` is not on PATH (relative to the filesystem root);
/// then `usr/local/cuda-*`, newest version first.
pub const CUDA_ROOTS: [&str; 2] = ["usr/local/cuda", "opt/cuda"];

/// A CUDA toolkit that was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaToolkit {
    /// The toolkit root (`CUDAToolkit_ROOT`).
    pub root: PathBuf,
    /// Its `bin/nvcc` (`CMAKE_CUDA_COMPILER`).
    pub nvcc: PathBuf,
    /// `nvcc` was found on PATH: CMake finds it by itself.
    pub on_path: bool,
}

/// The CUDA toolkit: `nvcc` on `path` first, then `<fs_root>/usr/local/cuda`,
/// `<fs_root>/opt/cuda` and `<fs_root>/usr/local/cuda-<version>` (highest version first).
pub fn find_cuda(path: &OsStr, fs_root: &Path) -> Option<CudaToolkit> {
    if let Some(nvcc) = find_on_path("nvcc", path) {
        let root = nvcc
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        return Some(CudaToolkit {
            root,
            nvcc,
            on_path: true,
        });
    }
    candidate_roots(fs_root).into_iter().find_map(|root| {
        let nvcc = root.join("bin/nvcc");
        is_executable(&nvcc).then_some(CudaToolkit {
            root,
            nvcc,
            on_path: false,
        })
    })
}

/// The roots looked at when `nvcc` is not on PATH, in order.
pub fn candidate_roots(fs_root: &Path) -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = CUDA_ROOTS.iter().map(|r| fs_root.join(r)).collect();
    let mut versioned: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir(fs_root.join("usr/local"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let version = name.strip_prefix("cuda-")?;
            let key: Vec<u64> = version.split('.').map(|p| p.parse().unwrap_or(0)).collect();
            Some((key, entry.path()))
        })
        .collect();
    versioned.sort_by(|a, b| b.cmp(a));
    roots.extend(versioned.into_iter().map(|(_, p)| p));
    roots
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn nvcc_in(root: &Path) {
        fs::create_dir_all(root.join("bin")).unwrap();
        let nvcc = root.join("bin/nvcc");
        fs::write(&nvcc, "#!/bin/sh\necho nvcc\n").unwrap();
        fs::set_permissions(&nvcc, fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn nvcc_on_path_wins() {
        let fs_root = tempfile::tempdir().unwrap();
        nvcc_in(&fs_root.path().join("usr/local/cuda"));
        let on_path = tempfile::tempdir().unwrap();
        nvcc_in(on_path.path());
        let path = on_path.path().join("bin");
        let found = find_cuda(path.as_os_str(), fs_root.path()).unwrap();
        assert!(found.on_path);
        assert_eq!(found.nvcc, path.join("nvcc"));
        assert_eq!(found.root, on_path.path());
    }

    #[test]
    fn usr_local_cuda_then_opt_cuda() {
        let fs_root = tempfile::tempdir().unwrap();
        let r = fs_root.path();
        nvcc_in(&r.join("opt/cuda"));
        nvcc_in(&r.join("usr/local/cuda-12.4"));
        let found = find_cuda(OsStr::new("/nonexistent"), r).unwrap();
        assert_eq!(found.root, r.join("opt/cuda"));
        assert!(!found.on_path);
        nvcc_in(&r.join("usr/local/cuda"));
        let found = find_cuda(OsStr::new(""), r).unwrap();
        assert_eq!(found.root, r.join("usr/local/cuda"));
        assert_eq!(found.nvcc, r.join("usr/local/cuda/bin/nvcc"));
    }

    #[test]
    fn versioned_roots_newest_first_and_empty_roots_skipped() {
        let fs_root = tempfile::tempdir().unwrap();
        let r = fs_root.path();
        // A root without nvcc (e.g. only the runtime libraries) is skipped.
        fs::create_dir_all(r.join("usr/local/cuda/lib64")).unwrap();
        nvcc_in(&r.join("usr/local/cuda-11.8"));
        nvcc_in(&r.join("usr/local/cuda-12.10"));
        nvcc_in(&r.join("usr/local/cuda-12.4"));
        assert_eq!(
            candidate_roots(r)[2..],
            [
                r.join("usr/local/cuda-12.10"),
                r.join("usr/local/cuda-12.4"),
                r.join("usr/local/cuda-11.8")
            ]
        );
        let found = find_cuda(OsStr::new(""), r).unwrap();
        assert_eq!(found.root, r.join("usr/local/cuda-12.10"));
    }

    #[test]
    fn nothing_found() {
        let fs_root = tempfile::tempdir().unwrap();
        assert_eq!(find_cuda(OsStr::new(""), fs_root.path()), None);
    }
}
