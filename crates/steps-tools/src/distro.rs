//! The distribution (from os-release) and how to install a command's package on it.

use std::path::Path;

/// The fields of `/etc/os-release` that decide the package manager.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OsRelease {
    /// `ID`, e.g. `debian`, `arch`, `fedora`.
    pub id: String,
    /// `ID_LIKE`, e.g. `[ubuntu, debian]`.
    pub id_like: Vec<String>,
    /// `PRETTY_NAME`, for messages.
    pub pretty_name: String,
}

/// The package managers provision can name install commands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageManager {
    Apt,
    Pacman,
    Dnf,
}

impl OsRelease {
    /// Read and parse an os-release file; `None` when it cannot be read.
    pub fn read(path: &Path) -> Option<OsRelease> {
        std::fs::read_to_string(path)
            .ok()
            .map(|text| OsRelease::parse(&text))
    }

    /// Parse os-release `KEY=value` lines (values optionally quoted).
    pub fn parse(text: &str) -> OsRelease {
        let mut os = OsRelease::default();
        for line in text.lines() {
            let Some((key, value)) = line.trim().split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
            match key.trim() {
                "ID" => os.id = value.to_ascii_lowercase(),
                "ID_LIKE" => {
                    os.id_like = value
                        .split_whitespace()
                        .map(str::to_ascii_lowercase)
                        .collect()
                }
                "PRETTY_NAME" => os.pretty_name = value.to_string(),
                _ => {}
            }
        }
        os
    }

    fn ids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.id.as_str()).chain(self.id_like.iter().map(String::as_str))
    }

    /// Arch Linux or a derivative (`ID` or `ID_LIKE` names `arch`).
    pub fn is_arch_like(&self) -> bool {
        self.ids().any(|id| id == "arch")
    }

    pub fn package_manager(&self) -> Option<PackageManager> {
        self.ids().find_map(|id| match id {
            "arch" => Some(PackageManager::Pacman),
            "debian" | "ubuntu" => Some(PackageManager::Apt),
            "fedora" | "rhel" | "centos" | "rocky" | "almalinux" => Some(PackageManager::Dnf),
            _ => None,
        })
    }

    /// `PRETTY_NAME`, else `ID`, else `unknown`.
    pub fn name(&self) -> &str {
        [self.pretty_name.as_str(), self.id.as_str()]
            .into_iter()
            .find(|s| !s.is_empty())
            .unwrap_or("unknown")
    }
}

impl PackageManager {
    /// The package that provides `command`.
    pub fn package_for(self, command: &str) -> Option<&'static str> {
        use PackageManager::*;
        Some(match (self, command) {
            (_, "git") => "git",
            (_, "cmake") => "cmake",
            (_, "make") => "make",
            (_, "ccache") => "ccache",
            (_, "cc" | "gcc") => "gcc",
            (Apt, "c++" | "g++") => "g++",
            (Pacman, "c++" | "g++") => "gcc",
            (Dnf, "c++" | "g++") => "gcc-c++",
            (_, "clang" | "clang++") => "clang",
            (Pacman, "ninja") => "ninja",
            (Apt | Dnf, "ninja") => "ninja-build",
            (Apt, "nvcc") => "nvidia-cuda-toolkit",
            (Pacman | Dnf, "nvcc") => "cuda",
            _ => return None,
        })
    }

    /// The command a person runs to install `packages`.
    pub fn install_command(self, packages: &[&str]) -> String {
        let list = packages.join(" ");
        match self {
            PackageManager::Apt => format!("sudo apt-get install -y {list}"),
            PackageManager::Pacman => format!("sudo pacman -S --needed {list}"),
            PackageManager::Dnf => format!("sudo dnf install -y {list}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_os_release() {
        let os = OsRelease::parse(
            "PRETTY_NAME=\"Ubuntu 24.04 LTS\"\nNAME=Ubuntu\nID=ubuntu\nID_LIKE=debian\n# comment\n",
        );
        assert_eq!(os.id, "ubuntu");
        assert_eq!(os.id_like, ["debian"]);
        assert_eq!(os.name(), "Ubuntu 24.04 LTS");
        assert_eq!(os.package_manager(), Some(PackageManager::Apt));
        assert!(!os.is_arch_like());
    }

    #[test]
    fn arch_derivatives_use_pacman() {
        let manjaro = OsRelease::parse("ID=manjaro\nID_LIKE=\"arch\"\n");
        assert!(manjaro.is_arch_like());
        assert_eq!(manjaro.package_manager(), Some(PackageManager::Pacman));
        let endeavour = OsRelease::parse("ID=endeavouros\nID_LIKE='arch'");
        assert!(endeavour.is_arch_like());
    }

    #[test]
    fn fedora_family_uses_dnf_and_unknown_has_none() {
        let rocky = OsRelease::parse("ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"");
        assert_eq!(rocky.package_manager(), Some(PackageManager::Dnf));
        assert_eq!(OsRelease::parse("ID=alpine").package_manager(), None);
        assert_eq!(OsRelease::parse("").name(), "unknown");
    }

    #[test]
    fn package_names_per_distribution() {
        use PackageManager::*;
        assert_eq!(Apt.package_for("ninja"), Some("ninja-build"));
        assert_eq!(Pacman.package_for("ninja"), Some("ninja"));
        assert_eq!(Dnf.package_for("c++"), Some("gcc-c++"));
        assert_eq!(Pacman.package_for("g++"), Some("gcc"));
        assert_eq!(Apt.package_for("nvcc"), Some("nvidia-cuda-toolkit"));
        assert_eq!(Apt.package_for("frobnicate"), None);
        assert_eq!(
            Apt.install_command(&["git", "cmake"]),
            "sudo apt-get install -y git cmake"
        );
        assert_eq!(Dnf.install_command(&["git"]), "sudo dnf install -y git");
    }
}
