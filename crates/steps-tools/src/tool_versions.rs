//! Tool version lines (`<tool> --version`) cached by the executable's identity in
//! `${cache}/tools.json`, so a warm apply starts no process to learn what it learnt before.
//!
//! The identity is that of the file finally run, links followed (`cc` →
//! `/etc/alternatives/cc` → `gcc-13`): its canonical path, size, mtime, ctime, inode and
//! device. An upgraded or re-pointed tool has another identity, so its `--version` runs again
//! (and the facts that hold it rebuild what depends on them). Entries are keyed by the path the
//! tool is run as, since a program may print the name it was called by (`cc` and `gcc` are one
//! file). A wrapper (a script, ccache's masquerade links) is identified by itself, not by
//! what it runs: delete `tools.json` to re-ask every tool.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use provision_executor::StepContext;
use serde::{Deserialize, Serialize};

use provision_executor::cache_file::CacheFile;

/// What identifies an executable's content without reading it (links resolved).
pub use provision_executor::file_identity::FileIdentity as ExeIdentity;

/// The cache file's contents: `{tools: {path run as: {identity, version}}}`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Entries {
    #[serde(default)]
    tools: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    identity: ExeIdentity,
    version: String,
}

/// The tool version cache. Safe to share between threads and processes (see [`CacheFile`]).
#[derive(Debug, Clone)]
pub struct ToolVersions {
    file: CacheFile<Entries>,
}

impl ToolVersions {
    pub fn new(file: impl Into<PathBuf>) -> ToolVersions {
        ToolVersions {
            file: CacheFile::new(file),
        }
    }

    /// The cache of the plan's cache root: `${cache}/tools.json`.
    pub fn in_cache(cx: &StepContext<'_>) -> ToolVersions {
        ToolVersions::new(cx.path("${cache}/tools.json"))
    }

    pub fn file(&self) -> &Path {
        self.file.path()
    }

    /// The version line of `exe` (see [`ToolVersions::versions`]).
    pub fn version(&self, exe: &Path, path: &OsStr) -> Option<String> {
        self.versions(&[exe], path).pop().flatten()
    }

    /// The version line of each of `exes`, in order: the first non-empty line `exe --version`
    /// prints (stdout, else stderr), run with `path` as PATH. From the cache when the
    /// executable's identity is unchanged; otherwise it is run and what it printed is cached
    /// (one write for all of them). A tool that prints nothing is not cached, and a cache
    /// that cannot be written only means running `--version` again next time.
    pub fn versions(&self, exes: &[&Path], path: &OsStr) -> Vec<Option<String>> {
        let cached = self.file.load();
        let mut learnt: Vec<(String, Entry)> = Vec::new();
        let versions = exes
            .iter()
            .map(|exe| {
                let key = std::path::absolute(exe)
                    .unwrap_or_else(|_| exe.to_path_buf())
                    .display()
                    .to_string();
                let Ok(identity) = ExeIdentity::of(exe) else {
                    return version_line(exe, path);
                };
                if let Some(e) = cached.tools.get(&key).filter(|e| e.identity == identity) {
                    return Some(e.version.clone());
                }
                let version = version_line(exe, path)?;
                // Replaced while it ran: do not cache the answer of a moving target.
                if ExeIdentity::of(exe).is_ok_and(|after| after == identity) {
                    learnt.push((
                        key,
                        Entry {
                            identity,
                            version: version.clone(),
                        },
                    ));
                }
                Some(version)
            })
            .collect();
        if !learnt.is_empty() {
            let _ = self.file.update(|entries| {
                // Forget tools that are gone, so the file does not grow forever.
                entries.tools.retain(|p, _| Path::new(p).exists());
                entries.tools.extend(learnt);
            });
        }
        versions
    }
}

/// The first non-empty line `exe --version` prints (stdout, else stderr).
fn version_line(exe: &Path, path: &OsStr) -> Option<String> {
    let run = || {
        Command::new(exe)
            .arg("--version")
            .env("PATH", path)
            .stdin(Stdio::null())
            .output()
    };
    // "Text file busy": the file is open for writing somewhere at this instant (a tool being
    // replaced, or a descriptor a concurrent fork holds until its exec). Asked again shortly.
    let mut out = run();
    for _ in 0..50 {
        match &out {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(std::time::Duration::from_millis(10));
                out = run();
            }
            _ => break,
        }
    }
    let out = out.ok()?;
    let first_line = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes)
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(String::from)
    };
    first_line(&out.stdout).or_else(|| first_line(&out.stderr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::time::{Duration, SystemTime};

    /// A temp dir with a cache file and tools that count their runs.
    struct Fixture {
        dir: tempfile::TempDir,
        cache: ToolVersions,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let cache = ToolVersions::new(dir.path().join("cache/tools.json"));
            Fixture { dir, cache }
        }

        /// An executable `name` that prints `version` and logs each run to `name.runs`.
        fn tool(&self, name: &str, version: &str) -> PathBuf {
            let p = self.dir.path().join(name);
            let runs = self.dir.path().join(format!("{name}.runs"));
            write_exe(
                &p,
                &format!(
                    "#!/bin/sh\necho run >> '{}'\necho '{version}'\n",
                    runs.display()
                ),
            );
            p
        }

        fn runs(&self, name: &str) -> usize {
            fs::read_to_string(self.dir.path().join(format!("{name}.runs")))
                .unwrap_or_default()
                .lines()
                .count()
        }

        fn version(&self, exe: &Path) -> Option<String> {
            self.cache.version(exe, OsStr::new("/usr/bin:/bin"))
        }
    }

    fn write_exe(p: &Path, text: &str) {
        fs::write(p, text).unwrap();
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn the_same_identity_is_a_hit() {
        let f = Fixture::new();
        let cc = f.tool("cc", "cc 13.2");
        assert_eq!(f.version(&cc).as_deref(), Some("cc 13.2"));
        assert_eq!(f.version(&cc).as_deref(), Some("cc 13.2"));
        // Another cache object on the same file (another apply) hits too.
        let again = ToolVersions::new(f.cache.file());
        assert_eq!(
            again.version(&cc, OsStr::new("")).as_deref(),
            Some("cc 13.2")
        );
        assert_eq!(f.runs("cc"), 1);
    }

    #[test]
    fn a_touched_or_replaced_file_is_a_miss() {
        let f = Fixture::new();
        let cc = f.tool("cc", "cc 13.2");
        assert_eq!(f.version(&cc).as_deref(), Some("cc 13.2"));
        // Same content, other mtime.
        let file = fs::File::options().write(true).open(&cc).unwrap();
        file.set_modified(SystemTime::now() + Duration::from_secs(60))
            .unwrap();
        drop(file);
        assert_eq!(f.version(&cc).as_deref(), Some("cc 13.2"));
        assert_eq!(f.runs("cc"), 2);
        assert_eq!(f.version(&cc).as_deref(), Some("cc 13.2"));
        assert_eq!(f.runs("cc"), 2, "the new identity is cached");
        // An upgrade: a new file renamed over the old one (a new inode), same size.
        let runs = f.dir.path().join("cc.runs");
        let new = f.dir.path().join("cc.new");
        write_exe(
            &new,
            &format!(
                "#!/bin/sh\necho run >> '{}'\necho 'cc 14.1'\n",
                runs.display()
            ),
        );
        fs::rename(&new, &cc).unwrap();
        assert_eq!(f.version(&cc).as_deref(), Some("cc 14.1"));
        assert_eq!(f.runs("cc"), 3);
    }

    #[test]
    fn links_are_followed_to_the_file_run() {
        let f = Fixture::new();
        let gcc13 = f.tool("gcc-13", "gcc 13");
        let clang = f.tool("clang", "clang 18");
        // cc -> alternatives/cc -> gcc-13, like /etc/alternatives.
        fs::create_dir(f.dir.path().join("alternatives")).unwrap();
        let alt = f.dir.path().join("alternatives/cc");
        symlink(&gcc13, &alt).unwrap();
        let cc = f.dir.path().join("cc");
        symlink(&alt, &cc).unwrap();
        assert_eq!(
            ExeIdentity::of(&cc).unwrap().path,
            fs::canonicalize(&gcc13).unwrap().display().to_string()
        );
        assert_eq!(f.version(&cc).as_deref(), Some("gcc 13"));
        assert_eq!(f.version(&cc).as_deref(), Some("gcc 13"));
        assert_eq!(f.runs("gcc-13"), 1);
        // The alternative switched: the link is the same, the file run is not.
        fs::remove_file(&alt).unwrap();
        symlink(&clang, &alt).unwrap();
        assert_eq!(f.version(&cc).as_deref(), Some("clang 18"));
        assert_eq!(f.runs("clang"), 1);
        // The compiler behind the links upgraded in place.
        fs::write(&clang, "#!/bin/sh\necho 'clang 19'\n").unwrap();
        assert_eq!(f.version(&cc).as_deref(), Some("clang 19"));
    }

    #[test]
    fn a_corrupt_cache_file_is_ignored_and_rewritten() {
        let f = Fixture::new();
        let cmake = f.tool("cmake", "cmake version 3.28.3");
        fs::create_dir_all(f.cache.file().parent().unwrap()).unwrap();
        for junk in ["", "not json", "{\"tools\": {\"x\": 1}}", "[1, 2"] {
            fs::write(f.cache.file(), junk).unwrap();
            assert_eq!(f.version(&cmake).as_deref(), Some("cmake version 3.28.3"));
        }
        assert_eq!(f.runs("cmake"), 4);
        assert_eq!(f.version(&cmake).as_deref(), Some("cmake version 3.28.3"));
        assert_eq!(f.runs("cmake"), 4, "rewritten whole");
        let text = fs::read_to_string(f.cache.file()).unwrap();
        assert!(text.contains("cmake version 3.28.3"), "{text}");
    }

    #[test]
    fn an_unwritable_cache_is_no_error() {
        let f = Fixture::new();
        let git = f.tool("git", "git version 2.43.0");
        // The cache "directory" is a file: nothing can be written under it.
        let blocked = f.dir.path().join("blocked");
        fs::write(&blocked, "").unwrap();
        let cache = ToolVersions::new(blocked.join("tools.json"));
        for _ in 0..2 {
            assert_eq!(
                cache.version(&git, OsStr::new("")).as_deref(),
                Some("git version 2.43.0")
            );
        }
        assert_eq!(f.runs("git"), 2);
    }

    #[test]
    fn one_batch_one_write_and_the_silent_are_not_cached() {
        let f = Fixture::new();
        let git = f.tool("git", "git version 2.43.0");
        let ninja = f.tool("ninja", "1.11.1");
        let mute = f.dir.path().join("mute");
        write_exe(&mute, "#!/bin/sh\nexit 1\n");
        let all = [git.as_path(), ninja.as_path(), mute.as_path()];
        let want = [
            Some("git version 2.43.0".into()),
            Some("1.11.1".into()),
            None,
        ];
        assert_eq!(f.cache.versions(&all, OsStr::new("")), want);
        assert_eq!(f.cache.versions(&all, OsStr::new("")), want);
        assert_eq!((f.runs("git"), f.runs("ninja")), (1, 1));
        // Gone: no version, and forgotten at the next write.
        fs::remove_file(&ninja).unwrap();
        assert_eq!(f.version(&ninja), None);
        let other = f.tool("other", "other 1");
        assert_eq!(f.version(&other).as_deref(), Some("other 1"));
        let text = fs::read_to_string(f.cache.file()).unwrap();
        assert!(!text.contains("1.11.1"), "{text}");
    }

    #[test]
    fn threads_sharing_the_file_lose_nothing() {
        let f = Fixture::new();
        let tools: Vec<PathBuf> = (0..6)
            .map(|i| f.tool(&format!("t{i}"), &format!("t{i} 1.0")))
            .collect();
        std::thread::scope(|s| {
            for t in &tools {
                let cache = ToolVersions::new(f.cache.file());
                s.spawn(move || cache.version(t, OsStr::new("")));
            }
        });
        for (i, t) in tools.iter().enumerate() {
            assert_eq!(f.version(t), Some(format!("t{i} 1.0")));
            assert_eq!(f.runs(&format!("t{i}")), 1);
        }
    }
}
