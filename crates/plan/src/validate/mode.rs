//! The provisioning mode's section: `source`, `binary` or `external`, and sections another
//! mode would use.

use crate::config::{Pool, ProvisioningMode};
use crate::diagnostic::did_you_mean;
use crate::document::join_key;
use crate::model_ref::parse_checksum;

use super::checker::Checker;

pub(super) const CHECKSUM_HELP: &str = "compute it with `sha256sum FILE` and write `sha256:<hex>`";

impl Checker<'_> {
    /// The provisioning mode, the section it needs, and sections another mode would use.
    pub(super) fn check_mode(&mut self, pp: &str, pool: &Pool) {
        let prov = &pool.provisioning;
        let mode = prov.mode;
        let mode_path = join_key(pp, "mode");
        match mode {
            ProvisioningMode::Container | ProvisioningMode::Package => {
                let msg = format!("provisioning mode `{}` is not supported yet", mode.as_str());
                self.error(&mode_path, false, &msg, Some("use `source` (build llama-server), `binary` (a llama-server on disk) or `external` (a running server)"));
            }
            ProvisioningMode::Source => self.source_section(pp, pool),
            ProvisioningMode::Binary => self.binary_section(pp, pool),
            ProvisioningMode::External => self.external_section(pp, pool),
        }
        let sections: [(&str, bool, ProvisioningMode); 5] = [
            ("source", prov.source.is_some(), ProvisioningMode::Source),
            ("binary", prov.binary.is_some(), ProvisioningMode::Binary),
            (
                "external",
                prov.external.is_some(),
                ProvisioningMode::External,
            ),
            (
                "container",
                prov.container.is_some(),
                ProvisioningMode::Container,
            ),
            ("package", prov.package.is_some(), ProvisioningMode::Package),
        ];
        for (name, present, for_mode) in sections {
            if present && for_mode != mode {
                let msg = format!("`{name}` is ignored: the mode is `{}`", mode.as_str());
                let help = format!("set `mode: {name}` to use it, or remove it");
                self.warning(&join_key(pp, name), &msg, Some(&help));
            }
        }
    }

    /// Mode `source`: `source.repo`, `source.ref` and the build settings.
    fn source_section(&mut self, pp: &str, pool: &Pool) {
        let prov = &pool.provisioning;
        match &prov.source {
            None => self.error(&join_key(pp, "source"), true, "mode `source` needs a `source` section with `repo` and `ref`", Some("add `source: {repo: https://github.com/ggml-org/llama.cpp.git, ref: <tag or commit>}`")),
            Some(source) => {
                let sp = join_key(pp, "source");
                if source.repo.trim().is_empty() {
                    self.error(&join_key(&sp, "repo"), true, "mode `source` needs `source.repo`", Some("set `repo` to a git URL, e.g. https://github.com/ggml-org/llama.cpp.git"));
                } else if !repo_url_ok(&source.repo) {
                    let msg = format!("`{}` is not a git URL or a path", crate::planner::redact_url(&source.repo));
                    self.error(&join_key(&sp, "repo"), false, &msg, Some("use https://, ssh://, git@host:path, file://, an absolute path, or ./ or ../ (relative to the config file)"));
                } else if password_outside_http(&source.repo) {
                    let msg = format!("`{}` holds a password, which git passes on to ssh's command line (every local user can read it) and ssh never uses", crate::planner::redact_url(&source.repo));
                    self.error(&join_key(&sp, "repo"), false, &msg, Some("authenticate ssh with a key (ssh-agent or ~/.ssh), and keep only the user name in the URL (`ssh://git@host/…`); a password or token goes in an https:// URL"));
                }
                let r = source.git_ref.trim();
                if r.is_empty() {
                    self.error(&join_key(&sp, "ref"), true, "mode `source` needs `source.ref`", Some("set `ref` to a tag, branch or commit SHA"));
                } else if r.starts_with('-') || r.chars().any(|c| c.is_whitespace() || c.is_control()) || r.contains("..") {
                    let msg = format!("`{r}` is not a valid git ref");
                    self.error(&join_key(&sp, "ref"), false, &msg, Some("use a tag, branch or commit SHA"));
                }
                if let Some(dir) = &source.build.cache_dir {
                    self.no_tilde(&join_key(&sp, "build.cache_dir"), dir);
                }
                if let Some(g) = &source.build.generator {
                    const KNOWN: &[&str] = &["Ninja", "Unix Makefiles", "Ninja Multi-Config"];
                    if !KNOWN.contains(&g.as_str()) {
                        let help = did_you_mean(g, KNOWN.iter().copied())
                            .map(|s| format!("did you mean `{s}`?"))
                            .unwrap_or_else(|| "use `Ninja` or `Unix Makefiles`".into());
                        let msg = format!("unknown CMake generator `{g}`");
                        self.error(&join_key(&sp, "build.generator"), false, &msg, Some(&help));
                    }
                }
            }
        }
    }

    /// Mode `binary`: a `binary.path` on disk, and its checksum.
    fn binary_section(&mut self, pp: &str, pool: &Pool) {
        let prov = &pool.provisioning;
        match &prov.binary {
            Some(b) if b.path.as_deref().is_some_and(|p| !p.trim().is_empty()) => {
                self.no_tilde(&join_key(pp, "binary.path"), b.path.as_deref().unwrap_or(""));
                if let Some(c) = &b.checksum {
                    if let Err(e) = parse_checksum(c) {
                        self.error(&join_key(pp, "binary.checksum"), false, &format!("malformed checksum: {e}"), Some(CHECKSUM_HELP));
                    }
                }
            }
            Some(b) if b.url.is_some() => self.error(
                &join_key(pp, "binary.url"),
                true,
                "binary downloads (`binary.url`) are not supported yet",
                Some("build from source (`mode: source`) or point `binary.path` at a llama-server on disk"),
            ),
            _ => self.error(&join_key(pp, "binary.path"), true, "mode `binary` needs `binary.path`", Some("set `binary: {path: /path/to/llama-server}`")),
        }
    }

    /// Mode `external`: the server's `external.url`, one replica, no ports.
    fn external_section(&mut self, pp: &str, pool: &Pool) {
        let prov = &pool.provisioning;
        let url = prov.external.as_ref().map(|e| e.url.trim()).unwrap_or("");
        if url.is_empty() {
            self.error(
                &join_key(pp, "external.url"),
                true,
                "mode `external` needs `external.url`",
                Some("set `external: {url: http://host:port}`"),
            );
        } else if !(url.starts_with("http://") || url.starts_with("https://")) {
            let msg = format!("`{url}` is not an http(s) URL");
            self.error(
                &join_key(pp, "external.url"),
                false,
                &msg,
                Some("write e.g. http://127.0.0.1:8080"),
            );
        }
        if pool.replicas != 1 {
            self.error(
                &join_key(pp.trim_end_matches(".provisioning"), "replicas"),
                false,
                "an external server is one replica",
                Some("remove `replicas`"),
            );
        }
        if !prov.ports.is_empty() {
            self.warning(
                &join_key(pp, "ports"),
                "`ports` is ignored for an external server",
                Some("the port is part of `external.url`"),
            );
        }
    }
}

/// Whether a non-HTTP URL (`ssh://`, `git://`) has a password in its userinfo (`user:pw@`):
/// provision hands credentials to git out of its argv for http(s) only.
fn password_outside_http(repo: &str) -> bool {
    let r = repo.trim();
    let Some((scheme, rest)) = r.split_once("://") else {
        return false;
    };
    if matches!(scheme, "http" | "https") {
        return false;
    }
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    authority
        .rfind('@')
        .is_some_and(|at| authority[..at].contains(':'))
}

fn repo_url_ok(repo: &str) -> bool {
    let r = repo.trim();
    ["https://", "http://", "ssh://", "git://", "file://"]
        .iter()
        .any(|s| r.starts_with(s) && r.len() > s.len())
        || r.starts_with('/')
        || r.starts_with("./")
        || r.starts_with("../")
        || (r.contains('@') && r.contains(':') && !r.contains("://"))
}
