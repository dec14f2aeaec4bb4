//! Which CMake generator a configure uses.

use provision_steps_tools::Host;

pub const NINJA: &str = "Ninja";
pub const MAKEFILES: &str = "Unix Makefiles";

/// The configured generator, else Ninja when `ninja` is on PATH, else Unix Makefiles.
pub fn resolve(configured: Option<&str>, host: &Host) -> String {
    match configured {
        Some(g) => g.to_string(),
        None if host.find("ninja").is_some() => NINJA.into(),
        None => MAKEFILES.into(),
    }
}

/// `argv` with `-G <generator>` after `-B <dir>` when it has no `-G` yet.
pub fn with_generator(mut argv: Vec<String>, generator: &str) -> Vec<String> {
    if argv.iter().any(|a| a == "-G" || a.starts_with("-G")) {
        return argv;
    }
    let at = argv
        .iter()
        .position(|a| a == "-B")
        .map_or(argv.len().min(1), |i| (i + 2).min(argv.len()));
    argv.splice(at..at, ["-G".to_string(), generator.to_string()]);
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_with(tools: &[&str]) -> (tempfile::TempDir, Host) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        for t in tools {
            let p = dir.path().join(t);
            std::fs::write(&p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let host = Host::with_path(dir.path());
        (dir, host)
    }

    #[test]
    fn ninja_when_installed_else_makefiles_unless_configured() {
        let (_d, with) = host_with(&["ninja"]);
        let (_e, without) = host_with(&["make"]);
        assert_eq!(resolve(None, &with), "Ninja");
        assert_eq!(resolve(None, &without), "Unix Makefiles");
        assert_eq!(resolve(Some("Unix Makefiles"), &with), "Unix Makefiles");
        assert_eq!(resolve(Some("Ninja"), &without), "Ninja");
    }

    #[test]
    fn generator_goes_after_the_build_dir() {
        let argv: Vec<String> = ["cmake", "-S", "s", "-B", "b", "-DX=1"]
            .map(String::from)
            .into();
        assert_eq!(
            with_generator(argv.clone(), "Ninja"),
            ["cmake", "-S", "s", "-B", "b", "-G", "Ninja", "-DX=1"]
        );
        let given = with_generator(argv, "Ninja");
        assert_eq!(with_generator(given.clone(), "Unix Makefiles"), given);
    }
}
