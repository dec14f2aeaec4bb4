//! The one redactor. Everything provision shows or stores (plan text and JSON, the state file,
//! step logs, errors, status, handoff files, the Kubernetes export) goes through it:
//!
//! - URLs lose their credentials: the userinfo of `scheme://user:pw@host` and the values of
//!   signed or secret query parameters (`X-Amz-Signature=`, `X-Amz-Credential=`, `sig=`,
//!   `token=`, `key=`, … any name [`is_secret_name`] matches, or containing `SIGNATURE`).
//! - Env values are secret when the name contains `TOKEN`, `KEY`, `SECRET`, `PASS`, `AUTH` or
//!   `CREDENTIAL` (any case), when the pool lists it in `provisioning.secret_env`, or when the
//!   value holds URL credentials.
//! - A [`Redactor`] also replaces the literal secret values a plan carries (secret env values,
//!   which include `--api-key` and `--hf-token`), wherever they appear in free text.
//!
//! Redaction is idempotent: redacting redacted text changes nothing.

use std::collections::BTreeSet;

use crate::plan::Plan;
use crate::secrets::Secrets;
use crate::step::StepSpec;

/// What a secret value is replaced with wherever it is shown or stored.
pub const REDACTED: &str = "<redacted>";

/// Parts of a name (env variable, query parameter) that mark its value as secret.
const SECRET_MARKERS: &[&str] = &["TOKEN", "KEY", "SECRET", "PASS", "AUTH", "CREDENTIAL"];

/// Secret values shorter than this are not replaced in free text (they would mangle it).
const MIN_LITERAL: usize = 3;

/// Whether a name (env variable, query parameter) marks a secret value.
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_MARKERS.iter().any(|m| upper.contains(m))
}

/// Whether env variable `name` holds a secret: by its name, or because the pool declares it
/// in `provisioning.secret_env`.
pub fn is_secret_env(name: &str, declared: &[String]) -> bool {
    declared.iter().any(|d| d == name) || is_secret_name(name)
}

/// Whether env variable `name` with `value` holds a secret: by its name (see
/// [`is_secret_env`]), or because its value holds URL credentials (userinfo, a signed query),
/// whatever the variable is called.
pub fn is_secret_env_value(name: &str, value: &str, declared: &[String]) -> bool {
    is_secret_env(name, declared) || redact_text(value) != value
}

/// Whether a URL query parameter carries a credential (signed URLs: S3, GCS, Azure SAS).
fn is_secret_param(name: &str) -> bool {
    is_secret_name(name)
        || name.to_ascii_uppercase().contains("SIGNATURE")
        || name.eq_ignore_ascii_case("sig")
}

/// One URL with its credentials redacted (see the module docs).
pub fn redact_url(url: &str) -> String {
    redact_text(url)
}

/// Characters that end a URL inside free text (quotes, brackets, whitespace).
fn ends_url(c: char) -> bool {
    c.is_whitespace() || "'\"<>`".contains(c)
}

/// `text` with the credentials of every `scheme://…` URL in it redacted.
pub fn redact_text(text: &str) -> String {
    map_url_secrets(text, &mut |_| REDACTED.to_string())
}

/// A secret part of a URL: its userinfo, or the value of a secret query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlSecret<'a> {
    Userinfo(&'a str),
    Query { name: &'a str, value: &'a str },
}

impl UrlSecret<'_> {
    /// The secret text itself.
    pub fn value(&self) -> &str {
        match self {
            UrlSecret::Userinfo(v) | UrlSecret::Query { value: v, .. } => v,
        }
    }
}

/// `text` with each secret part of every `scheme://…` URL in it (what [`redact_text`] redacts)
/// replaced by what `with` gives for it.
pub fn map_url_secrets(text: &str, with: &mut dyn FnMut(UrlSecret<'_>) -> String) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail.find(ends_url).unwrap_or(tail.len());
        map_after_scheme(&tail[..end], &mut out, with);
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Map the secrets of what follows `scheme://` up to the end of the URL: userinfo, then the
/// query.
fn map_after_scheme(url: &str, out: &mut String, with: &mut dyn FnMut(UrlSecret<'_>) -> String) {
    let authority_end = url.find(['/', '?', '#']).unwrap_or(url.len());
    let (authority, after) = url.split_at(authority_end);
    match authority.rfind('@') {
        Some(at) if at > 0 => {
            out.push_str(&with(UrlSecret::Userinfo(&authority[..at])));
            out.push_str(&authority[at..]);
        }
        _ => out.push_str(authority),
    }
    let Some(q) = after.find('?') else {
        out.push_str(after);
        return;
    };
    out.push_str(&after[..=q]);
    let query_and_fragment = &after[q + 1..];
    let (query, fragment) = match query_and_fragment.find('#') {
        Some(h) => query_and_fragment.split_at(h),
        None => (query_and_fragment, ""),
    };
    for (n, pair) in query.split('&').enumerate() {
        if n > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((name, value)) if !value.is_empty() && is_secret_param(name) => {
                out.push_str(name);
                out.push('=');
                out.push_str(&with(UrlSecret::Query { name, value }));
            }
            _ => out.push_str(pair),
        }
    }
    out.push_str(fragment);
}

/// Redacts URLs and a set of known secret values (those of a plan) in free text.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret that contains another is replaced whole.
    values: Vec<String>,
}

impl Redactor {
    /// A redactor for these secret values (and URL credentials).
    pub fn new<I: IntoIterator<Item = String>>(values: I) -> Redactor {
        let set: BTreeSet<String> = values
            .into_iter()
            .filter(|v| v.len() >= MIN_LITERAL && v != REDACTED)
            .collect();
        let mut values: Vec<String> = set.into_iter().collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        Redactor { values }
    }

    /// A redactor for every secret the plan carries: the values of secret env entries of its
    /// spawn steps (`--api-key` and `--hf-token` included), their API keys given by
    /// reference, and the credentials of its URLs.
    pub fn for_plan(plan: &Plan) -> Redactor {
        Redactor::new(plan_secrets(plan))
    }

    /// `text` with URL credentials and every known secret value replaced by `<redacted>`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = redact_text(text);
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), REDACTED);
            }
        }
        out
    }
}

/// The secret values a plan carries (never serialised; the table of [`Secrets`]), and the API
/// keys its spawns are given by reference.
fn plan_secrets(plan: &Plan) -> Vec<String> {
    let mut out = Secrets::of(plan).redaction_values();
    for s in &plan.steps {
        if let StepSpec::Spawn(sp) = &s.spec {
            // A key by reference is read again here: best effort, a missing one has nothing
            // to leak.
            if let Some(Ok(key)) = sp
                .api_key
                .as_ref()
                .map(|k| k.resolve(|p| plan.roots.expand(p)))
            {
                out.push(key);
            }
        }
    }
    out
}

/// The secret parts of one URL: its password (or whole userinfo) and secret query values.
pub fn url_secrets(url: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Some((_, rest)) = url.split_once("://") else {
        return out;
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if let Some((userinfo, _)) = rest[..authority_end].rsplit_once('@') {
        out.push(userinfo.to_string());
        if let Some((_, pw)) = userinfo.split_once(':') {
            out.push(pw.to_string());
        }
    }
    if let Some((_, query)) = rest.split_once('?') {
        let query = query.split('#').next().unwrap_or(query);
        for pair in query.split('&') {
            if let Some((name, value)) = pair.split_once('=') {
                if is_secret_param(name) && !value.is_empty() {
                    out.push(value.to_string());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_redacted() {
        assert_eq!(
            redact_text("clone https://u:p@h.com/a and ssh://git@h:22/x, http://h/y"),
            "clone https://<redacted>@h.com/a and ssh://<redacted>@h:22/x, http://h/y"
        );
        assert_eq!(redact_text("'https://tok@h'"), "'https://<redacted>@h'");
        assert_eq!(redact_text("https://u:p@h?x=1"), "https://<redacted>@h?x=1");
        assert_eq!(
            redact_url("https://u:tok@github.com/a/b.git"),
            "https://<redacted>@github.com/a/b.git"
        );
        assert_eq!(
            redact_url("git@github.com:a/b.git"),
            "git@github.com:a/b.git"
        );
        assert_eq!(redact_text("no urls here"), "no urls here");
    }

    #[test]
    fn signed_query_parameters_are_redacted() {
        let s3 = "https://b.s3.amazonaws.com/m.gguf?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F20250101&X-Amz-Signature=abcdef0123&X-Amz-Expires=3600";
        assert_eq!(
            redact_text(s3),
            "https://b.s3.amazonaws.com/m.gguf?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=<redacted>&X-Amz-Signature=<redacted>&X-Amz-Expires=3600"
        );
        assert_eq!(
            redact_text("GET http://h/f?sv=2020&sig=S1G%3D#frag done"),
            "GET http://h/f?sv=2020&sig=<redacted>#frag done"
        );
        assert_eq!(
            redact_text("\"https://h/f?token=t0k&api_key=k3y&page=2\""),
            "\"https://h/f?token=<redacted>&api_key=<redacted>&page=2\""
        );
    }

    #[test]
    fn redaction_is_idempotent() {
        for t in [
            "https://u:p@h/x?sig=abc&a=b",
            "ssh://git@h:22/x",
            "x https://h/f?X-Amz-Signature=1 y",
        ] {
            let once = redact_text(t);
            assert_eq!(redact_text(&once), once, "{t}");
        }
    }

    #[test]
    fn secret_env_names() {
        for k in [
            "HF_TOKEN",
            "OPENAI_API_KEY",
            "db_password",
            "DB_PASS",
            "AUTH",
            "HTTP_AUTHORIZATION",
            "MY_SECRET_X",
            "AWS_KEY",
            "GOOGLE_CREDENTIALS",
        ] {
            assert!(is_secret_env(k, &[]), "{k}");
        }
        for k in ["LLAMA_LOG_COLORS", "PATH", "CUDA_VISIBLE_DEVICES", "DB_URL"] {
            assert!(!is_secret_env(k, &[]), "{k}");
        }
        assert!(is_secret_env("DB_URL", &["DB_URL".into()]));
    }

    #[test]
    fn known_values_are_replaced_longest_first() {
        let r = Redactor::new(["abc".to_string(), "abcdef".to_string(), "x".to_string()]);
        assert_eq!(
            r.redact("key abcdef, short abc, x stays"),
            "key <redacted>, short <redacted>, x stays"
        );
    }

    #[test]
    fn url_secret_parts() {
        assert_eq!(
            url_secrets("https://u:pw@h/f?sig=S&a=b&token=T"),
            vec!["u:pw", "pw", "S", "T"]
        );
        assert!(url_secrets("https://h/f?a=b").is_empty());
    }
}
