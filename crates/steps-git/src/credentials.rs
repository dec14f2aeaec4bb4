//! A repository URL's credentials (`https://user:token@host/…`) reach git through its
//! environment, never its command line: every local user can read a process's argv
//! (`/proc/<pid>/cmdline`), and a URL cloned with its userinfo stays in plain text in the
//! checkout's `.git/config`. git gets the URL without userinfo, and an
//! `http.<scheme>://<host>/.extraHeader` of `Authorization: Basic …` in its environment
//! (`GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_n`/`GIT_CONFIG_VALUE_n`, git 2.31 or newer), scoped to
//! the repository's host so no other host (a submodule elsewhere, a redirect) is sent it. The
//! environment of a process is readable only by its owner and root.

use base64::Engine;
use percent_encoding::percent_decode_str;
use provision_executor::command::StepCommand;

/// A repository as git is given it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Remote {
    /// The URL without userinfo: what git's argv and the checkout's origin hold.
    pub(crate) url: String,
    /// The URL as messages and the tag cache show it (credentials `<redacted>`).
    pub(crate) shown: String,
    /// `(config key, header)` when the URL had credentials.
    auth: Option<(String, String)>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("url", &self.url)
            .field("shown", &self.shown)
            .field("auth", &self.auth.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Remote {
    /// `url` split into its credentials (percent-decoded, as git decodes them) and the rest.
    /// A URL without userinfo (a path, `file://`, `ssh://`, `git@host:path`) is taken as is.
    pub(crate) fn parse(url: &str) -> Remote {
        let plain = Remote {
            url: url.to_string(),
            shown: provision_plan::redact::redact_url(url),
            auth: None,
        };
        let Some((scheme, rest)) = url.split_once("://") else {
            return plain;
        };
        if !matches!(scheme, "http" | "https") {
            return plain;
        }
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let Some(at) = rest[..authority_end].rfind('@') else {
            return plain;
        };
        let (userinfo, host) = (&rest[..at], &rest[at + 1..authority_end]);
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            decode(user),
            decode(password)
        ));
        Remote {
            url: format!("{scheme}://{}", &rest[at + 1..]),
            shown: plain.shown,
            auth: Some((
                format!("http.{scheme}://{host}/.extraHeader"),
                format!("Authorization: Basic {basic}"),
            )),
        }
    }

    /// Whether it runs on this machine (`file://` or a path).
    pub(crate) fn is_local(&self) -> bool {
        crate::git::is_local(&self.url)
    }

    /// `cmd` with the credentials in its environment (after any `GIT_CONFIG_COUNT` entries of
    /// provision's own environment, which git still reads).
    pub(crate) fn authorize(&self, cmd: StepCommand) -> StepCommand {
        let Some((key, header)) = &self.auth else {
            return cmd;
        };
        let n: usize = std::env::var("GIT_CONFIG_COUNT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        cmd.env("GIT_CONFIG_COUNT", (n + 1).to_string())
            .env(format!("GIT_CONFIG_KEY_{n}"), key.clone())
            .env(format!("GIT_CONFIG_VALUE_{n}"), header.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_leaves_the_url_for_a_header_scoped_to_the_host() {
        let r = Remote::parse("https://alice:p%40ss@git.example.com:8443/org/repo.git");
        assert_eq!(r.url, "https://git.example.com:8443/org/repo.git");
        let (key, header) = r.auth.clone().unwrap();
        assert_eq!(key, "http.https://git.example.com:8443/.extraHeader");
        // base64("alice:p@ss")
        assert_eq!(header, "Authorization: Basic YWxpY2U6cEBzcw==");
        assert!(!format!("{r:?}").contains("YWxp"));
        // A token alone is the user name with an empty password.
        let t = Remote::parse("https://tok3n@host/x.git");
        assert_eq!(t.url, "https://host/x.git");
        assert_eq!(t.auth.unwrap().1, "Authorization: Basic dG9rM246");
    }

    #[test]
    fn urls_without_userinfo_are_taken_as_they_are() {
        for url in [
            "https://host/org/repo.git",
            "/srv/llama.cpp",
            "file:///srv/llama.cpp",
            "ssh://git@host/org/repo.git",
            "git@host:org/repo.git",
            "https://host/path@with-at",
        ] {
            let r = Remote::parse(url);
            assert_eq!(r.url, url);
            assert!(r.auth.is_none(), "{url}");
        }
    }
}
