//! A build directory's `CMakeCache.txt`: when it was made for another generator or source,
//! CMake refuses to configure, so it is removed first.

use std::path::Path;

/// The value of `KEY:TYPE=value` in a CMakeCache.txt text.
pub fn cache_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.split(':').next()? == key).then_some(v)
    })
}

/// Why the cache in `build_dir` cannot be reused for `generator` and `source_dir`.
pub fn stale_reason(build_dir: &Path, generator: &str, source_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(build_dir.join("CMakeCache.txt")).ok()?;
    if let Some(g) = cache_value(&text, "CMAKE_GENERATOR").filter(|g| *g != generator) {
        return Some(format!(
            "it was configured for the generator {g}, now {generator}"
        ));
    }
    let home = cache_value(&text, "CMAKE_HOME_DIRECTORY")?;
    let same = Path::new(home).canonicalize().ok() == source_dir.canonicalize().ok();
    (!same).then(|| format!("it was configured for the source {home}"))
}

/// Remove `CMakeCache.txt` and `CMakeFiles/` from `build_dir`.
pub fn clear(build_dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(build_dir.join("CMakeCache.txt")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    match std::fs::remove_dir_all(build_dir.join("CMakeFiles")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_values_and_spots_another_generator() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "# comment\nCMAKE_GENERATOR:INTERNAL=Ninja\nCMAKE_HOME_DIRECTORY:INTERNAL={}\n",
            dir.path().display()
        );
        assert_eq!(cache_value(&text, "CMAKE_GENERATOR"), Some("Ninja"));
        std::fs::write(dir.path().join("CMakeCache.txt"), &text).unwrap();
        assert_eq!(stale_reason(dir.path(), "Ninja", dir.path()), None);
        assert!(stale_reason(dir.path(), "Unix Makefiles", dir.path())
            .unwrap()
            .contains("generator Ninja"));
        let other = tempfile::tempdir().unwrap();
        assert!(stale_reason(dir.path(), "Ninja", other.path())
            .unwrap()
            .contains("configured for the source"));
        std::fs::create_dir(dir.path().join("CMakeFiles")).unwrap();
        clear(dir.path()).unwrap();
        assert!(!dir.path().join("CMakeCache.txt").exists());
        assert!(!dir.path().join("CMakeFiles").exists());
        clear(dir.path()).unwrap();
    }
}
