//! ccache as the compiler launcher, with a base directory so that checkouts in other
//! directories (another cache root, another clone) hit the same cache entries.

use std::path::{Path, PathBuf};

use provision_steps_tools::Host;

/// ccache and the `CCACHE_BASEDIR` to run it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launcher {
    pub ccache: PathBuf,
    pub base_dir: PathBuf,
}

/// ccache when it is on PATH. The base directory is the source directory's parent, widened to
/// the deepest directory that also holds the build directory (in the default layout,
/// `${cache}` for `${cache}/src/…` and `${cache}/build/…`): ccache then rewrites both the
/// source and the build paths relative to the build directory, and a different cache root or
/// clone location gives the same compiler command lines.
pub fn find(host: &Host, source_dir: &Path, build_dir: &Path) -> Option<Launcher> {
    let ccache = host.find("ccache")?;
    Some(Launcher {
        ccache,
        base_dir: base_dir(source_dir, build_dir),
    })
}

/// See [`find`]. Never `/` (ccache would then rewrite system header paths too).
pub fn base_dir(source_dir: &Path, build_dir: &Path) -> PathBuf {
    let parent = source_dir.parent().unwrap_or(source_dir);
    let common: PathBuf = parent
        .components()
        .zip(build_dir.components())
        .take_while(|(a, b)| a == b)
        .map(|(a, _)| a)
        .collect();
    if common.parent().is_none() {
        parent.to_path_buf()
    } else {
        common
    }
}

/// The `-D` definitions that make CMake use `launcher` for `languages` (C, CXX, CUDA).
pub fn defines(launcher: &Launcher, languages: &[&str]) -> Vec<(String, String)> {
    languages
        .iter()
        .map(|lang| {
            (
                format!("CMAKE_{lang}_COMPILER_LAUNCHER"),
                launcher.ccache.display().to_string(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_dir_holds_source_parent_and_build() {
        assert_eq!(
            base_dir(
                Path::new("/c/src/llama.cpp-1"),
                Path::new("/c/build/llama.cpp-2")
            ),
            Path::new("/c")
        );
        assert_eq!(
            base_dir(
                Path::new("/c/src/llama.cpp-1"),
                Path::new("/c/src/llama.cpp-1/build")
            ),
            Path::new("/c/src")
        );
        // Nothing in common but `/`: the source's parent.
        assert_eq!(
            base_dir(Path::new("/a/src/x"), Path::new("/b/build/y")),
            Path::new("/a/src")
        );
    }
}
