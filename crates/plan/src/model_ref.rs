//! Model references: where a pool's GGUF file comes from.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::split_name::SplitName;

/// A parsed model ref.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "source", rename_all = "kebab-case")]
pub enum ModelRef {
    /// A file on disk (`PATH` or `file:PATH`). Relative paths are relative to the config file.
    Path { path: String },
    /// A file in a Hugging Face repository: `hf:ORG/REPO/PATH.gguf[@REVISION]`.
    Hf {
        repo: String,
        file: String,
        revision: String,
    },
    /// The file (or the shards of a split model) of a Hugging Face repository whose name carries
    /// a quant tag: `hf:ORG/REPO:QUANT[@REVISION]`, llama.cpp's `-hf ORG/REPO:QUANT`.
    HfQuant {
        repo: String,
        quant: String,
        revision: String,
    },
    /// A plain HTTP(S) download.
    Url { url: String },
    /// A bare file name, looked up in the model cache directory.
    Cached { name: String },
}

impl ModelRef {
    /// Parse a ref; the error says what is wrong and how a valid one looks.
    pub fn parse(s: &str) -> Result<ModelRef, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("the model ref is empty".into());
        }
        let parsed = parse_kind(s)?;
        if let Some(split) = SplitName::parse(parsed.file_name()).filter(|n| n.index != 1) {
            let first = SplitName::parse(s).map_or_else(|| split.shard(1), |n| n.shard(1));
            return Err(format!(
                "`{}` is shard {} of {} of a split model: name its first shard, `{first}` (llama-server opens the others from beside it)",
                crate::redact::redact_url(s),
                split.index,
                split.count
            ));
        }
        Ok(parsed)
    }

    /// A short human name: the file name (the quant tag of an `hf:ORG/REPO:QUANT` ref).
    pub fn file_name(&self) -> &str {
        let full = match self {
            ModelRef::Path { path } => path.as_str(),
            ModelRef::Hf { file, .. } => file.as_str(),
            ModelRef::HfQuant { quant, .. } => quant.as_str(),
            ModelRef::Url { url } => url.split(['?', '#']).next().unwrap_or(url),
            ModelRef::Cached { name } => name.as_str(),
        };
        full.rsplit('/').next().unwrap_or(full)
    }
}

/// Parse a trimmed, non-empty ref.
fn parse_kind(s: &str) -> Result<ModelRef, String> {
    if let Some(rest) = s.strip_prefix("hf:") {
        return parse_hf(rest);
    }
    if let Some(path) = s.strip_prefix("file:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() {
            return Err("`file:` needs a path after it".into());
        }
        return Ok(ModelRef::Path { path: path.into() });
    }
    if s.starts_with("https://") || s.starts_with("http://") {
        let rest = s.split_once("://").map(|x| x.1).unwrap_or("");
        let host = rest.split('/').next().unwrap_or("");
        if host.is_empty() || !rest.contains('/') || rest.ends_with('/') {
            return Err(format!(
                "`{}` is not a file URL: it needs a host and a file path",
                crate::redact::redact_url(s)
            ));
        }
        return Ok(ModelRef::Url { url: s.into() });
    }
    if let Some((scheme, _)) = s.split_once("://") {
        return Err(format!(
            "`{scheme}://` model refs are not supported yet; use a path, `file:`, `hf:` or `https://`"
        ));
    }
    // `word:` before any `/` is a prefix, not a relative path (`./dir:x/f.gguf` is a path).
    let prefix = s
        .split_once(':')
        .map(|(p, _)| p)
        .filter(|p| !p.contains('/'));
    if let Some(prefix) = prefix.filter(|_| !s.starts_with('.') && !s.starts_with('~')) {
        return Err(format!(
            "`{prefix}:` is not a model ref prefix; use a path, `file:PATH`, `hf:ORG/REPO/FILE.gguf` or `https://…`"
        ));
    }
    if s.contains('/') || s.starts_with('.') || s.starts_with('~') {
        return Ok(ModelRef::Path { path: s.into() });
    }
    Ok(ModelRef::Cached { name: s.into() })
}

fn parse_hf(rest: &str) -> Result<ModelRef, String> {
    let example = "write `hf:ORG/REPO/FILE.gguf` or `hf:ORG/REPO:QUANT` (a quant tag such as Q4_K_M), each with an optional `@REVISION`";
    let (body, revision) = match rest.rsplit_once('@') {
        Some((b, r)) if !r.is_empty() && !r.contains('/') => (b, r.to_string()),
        Some(_) => {
            return Err(format!(
                "`hf:{rest}` has an empty or malformed revision; {example}"
            ))
        }
        None => (rest, "main".to_string()),
    };
    if body.starts_with('/') {
        return Err(format!("`hf:{rest}` is an absolute path; {example}"));
    }
    let parts: Vec<&str> = body.split('/').collect();
    if let [org, repo_quant] = parts[..] {
        if let Some((repo, quant)) = repo_quant.split_once(':') {
            return parse_hf_quant(org, repo, quant, revision, example);
        }
    }
    if parts.len() < 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(format!(
            "`hf:{rest}` must name an org, a repo and a file; {example}"
        ));
    }
    if parts.iter().any(|p| *p == ".." || *p == ".") {
        return Err(format!(
            "`hf:{rest}` contains `.` or `..`: refs may not leave the repository"
        ));
    }
    let file = parts[2..].join("/");
    if !file.to_ascii_lowercase().ends_with(".gguf") {
        return Err(format!("`hf:{rest}` does not name a .gguf file; {example}"));
    }
    Ok(ModelRef::Hf {
        repo: format!("{}/{}", parts[0], parts[1]),
        file,
        revision,
    })
}

/// `hf:ORG/REPO:QUANT`: the quant tag is letters, digits, `_` and `-` (`Q4_K_M`, `UD-Q4_K_XL`).
fn parse_hf_quant(
    org: &str,
    repo: &str,
    quant: &str,
    revision: String,
    example: &str,
) -> Result<ModelRef, String> {
    if org.is_empty() || repo.is_empty() {
        return Err(format!(
            "`hf:{org}/{repo}:{quant}` must name an org and a repo; {example}"
        ));
    }
    if quant.is_empty()
        || !quant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "`hf:{org}/{repo}:{quant}` has an empty or malformed quant tag (letters, digits, `_` and `-`, such as `Q4_K_M`); {example}"
        ));
    }
    Ok(ModelRef::HfQuant {
        repo: format!("{org}/{repo}"),
        quant: quant.into(),
        revision,
    })
}

/// A checksum must be `sha256:` followed by 64 hex digits. Returns it lowercased.
pub fn parse_checksum(s: &str) -> Result<String, String> {
    let Some(hex) = s.strip_prefix("sha256:") else {
        return Err(format!("checksum `{s}` must start with `sha256:`"));
    };
    if hex.chars().count() != 64 {
        return Err(format!(
            "checksum `{s}` must be `sha256:` followed by 64 hex digits, not {}",
            hex.chars().count()
        ));
    }
    if let Some(c) = hex.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(format!(
            "checksum `{s}` must be `sha256:` followed by 64 hex digits, and `{c}` is not one"
        ));
    }
    Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_quote_no_url_credentials() {
        let err = ModelRef::parse("https://bob:pw0@host.example").unwrap_err();
        assert!(
            !err.contains("pw0") && err.contains("<redacted>@host.example"),
            "{err}"
        );
    }

    #[test]
    fn parses_every_kind() {
        assert_eq!(
            ModelRef::parse("hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf")
                .unwrap(),
            ModelRef::Hf {
                repo: "Qwen/Qwen2.5-0.5B-Instruct-GGUF".into(),
                file: "qwen2.5-0.5b-instruct-q4_k_m.gguf".into(),
                revision: "main".into()
            }
        );
        assert!(
            matches!(ModelRef::parse("hf:a/b/sub/x.gguf@v1").unwrap(), ModelRef::Hf { revision, file, .. } if revision == "v1" && file == "sub/x.gguf")
        );
        assert_eq!(
            ModelRef::parse("file:/m/x.gguf").unwrap(),
            ModelRef::Path {
                path: "/m/x.gguf".into()
            }
        );
        assert_eq!(
            ModelRef::parse("./x.gguf").unwrap(),
            ModelRef::Path {
                path: "./x.gguf".into()
            }
        );
        assert_eq!(
            ModelRef::parse("x.gguf").unwrap(),
            ModelRef::Cached {
                name: "x.gguf".into()
            }
        );
        assert!(matches!(
            ModelRef::parse("models/v2:q4/x.gguf").unwrap(),
            ModelRef::Path { .. }
        ));
        assert!(matches!(
            ModelRef::parse("https://h/x.gguf").unwrap(),
            ModelRef::Url { .. }
        ));
    }

    #[test]
    fn rejects_malformed_and_escaping_refs() {
        for bad in [
            "",
            "hf:a/b",
            "hf:a//x.gguf",
            "hf:/a/b/x.gguf",
            "hf:a/b/../x.gguf",
            "hf:a/b/x.bin",
            "hf:a/b/x.gguf@",
            "s3://b/x.gguf",
            "https://",
            "weird:x",
            "huggingface:Qwen/Qwen2.5-0.5B-Instruct-GGUF/x.gguf",
        ] {
            assert!(ModelRef::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn parses_the_quant_form() {
        assert_eq!(
            ModelRef::parse("hf:bartowski/Llama-3-8B-GGUF:q4_k_m").unwrap(),
            ModelRef::HfQuant {
                repo: "bartowski/Llama-3-8B-GGUF".into(),
                quant: "q4_k_m".into(),
                revision: "main".into()
            }
        );
        assert!(matches!(
            ModelRef::parse("hf:unsloth/Qwen3-GGUF:UD-Q4_K_XL@v2").unwrap(),
            ModelRef::HfQuant { quant, revision, .. } if quant == "UD-Q4_K_XL" && revision == "v2"
        ));
        for bad in [
            "hf:a/b:",
            "hf:a/b:Q4 K",
            "hf:a/b:Q4/x",
            "hf:/b:Q4",
            "hf:a/:Q4",
        ] {
            let err = ModelRef::parse(bad).unwrap_err();
            assert!(err.contains("hf:ORG/REPO:QUANT"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_later_shard_is_refused_for_the_first() {
        for (bad, first) in [
            (
                "./m/L-70B-00002-of-00003.gguf",
                "./m/L-70B-00001-of-00003.gguf",
            ),
            ("hf:a/b/L-00003-of-00003.gguf", "L-00001-of-00003.gguf"),
            (
                "https://h/m/L-00002-of-00003.gguf?sig=s3cret",
                "L-00001-of-00003.gguf",
            ),
            ("L-00002-of-00003.gguf", "L-00001-of-00003.gguf"),
        ] {
            let err = ModelRef::parse(bad).unwrap_err();
            assert!(
                err.contains("split model") && err.contains(first) && !err.contains("s3cret"),
                "{bad}: {err}"
            );
        }
        assert!(ModelRef::parse("./m/L-70B-00001-of-00003.gguf").is_ok());
    }

    #[test]
    fn checksums() {
        let hex = "A".repeat(64);
        assert_eq!(
            parse_checksum(&format!("sha256:{hex}")).unwrap(),
            format!("sha256:{}", "a".repeat(64))
        );
        assert!(parse_checksum("md5:abc").is_err());
        assert!(parse_checksum("sha256:abc").is_err());
        assert!(parse_checksum(&format!("sha256:{}", "g".repeat(64))).is_err());
    }
}
