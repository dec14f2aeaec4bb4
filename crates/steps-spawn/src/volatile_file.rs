//! Files that describe a running process (the handoff file, the pid file): written atomically
//! for readers (temp file in the same directory, then rename: a reader sees the old file or the
//! new one, never a mix) but not fsynced. What they describe does not survive a power loss
//! either, and an fsync costs milliseconds on a busy disk, on the path from "ready" to "handoff
//! written" (two of them per file: the file and its directory).

use std::io::Write;
use std::path::{Path, PathBuf};

/// Write `bytes` and a newline to `path` through a temp file and a rename, creating the
/// directory when missing.
pub fn write_volatile(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.write_all(b"\n")?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::write_volatile;

    #[test]
    fn replaces_whole_files_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("engines/h.json");
        write_volatile(&path, b"{\"a\": 1}").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\": 1}\n");
        write_volatile(&path, b"2").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "2\n");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("engines"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["h.json"], "no temp file left");
    }

    #[test]
    fn a_failed_rename_leaves_the_old_file_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: the rename fails.
        let path = dir.path().join("taken");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("keep"), "x").unwrap();
        assert!(write_volatile(&path, b"new").is_err());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["taken"]);
    }
}
