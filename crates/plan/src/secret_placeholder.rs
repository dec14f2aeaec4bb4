//! `${secret:NAME}`: where a step spec holds a secret. The spec (and so the plan JSON and the
//! state file) holds the placeholder, never the value; the value is in the plan's secrets
//! table ([`crate::secrets::Secrets`]) under the step's id and `NAME`, and a step expands the
//! placeholder only at the moment of use (the server's environment, git's URL, the HTTP
//! request).
//!
//! Names, per step: `env.NAME` (a spawn's secret environment entry, `--api-key` and
//! `--hf-token` included), `<field>.userinfo` and `<field>.<query parameter>` (a URL's
//! credentials: `repo.userinfo`, `source.X-Amz-Signature`, `url.userinfo`), `api_key` (the key
//! a probe asks `/metrics` with when its server gets it as a flag or env value).
//!
//! Shown to a person, and hashed into a fingerprint, a placeholder reads `<redacted>`
//! ([`shown`], [`shown_json`]): what the plans of earlier versions held in its place, so
//! state files written by them keep their fingerprints.

use serde_json::Value;

use crate::redact::{map_url_secrets, UrlSecret, REDACTED};

const OPEN: &str = "${secret:";
const CLOSE: char = '}';

/// `${secret:NAME}`.
pub fn placeholder(name: &str) -> String {
    format!("{OPEN}{name}{CLOSE}")
}

/// Whether `name` can stand in a placeholder (it ends at the first `}`).
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains([CLOSE, '$', '{'])
}

/// The names of the placeholders in `text`, in order.
pub fn names_in(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some((name, after)) = next(rest) {
        out.push(name);
        rest = after;
    }
    out
}

/// The next placeholder of `text`: its name, and the text after it.
fn next(text: &str) -> Option<(&str, &str)> {
    let start = text.find(OPEN)? + OPEN.len();
    let len = text[start..].find(CLOSE)?;
    Some((&text[start..start + len], &text[start + len + 1..]))
}

/// `text` with each placeholder replaced by what `value` gives for its name; the first name
/// it gives nothing for is the error.
pub fn expand<'v>(text: &str, value: impl Fn(&str) -> Option<&'v str>) -> Result<String, String> {
    replace(text, &mut |name| {
        value(name)
            .map(str::to_string)
            .ok_or_else(|| name.to_string())
    })
}

/// `text` with the placeholders `value` gives something for replaced, the others left.
pub fn expand_known<'v>(text: &str, value: impl Fn(&str) -> Option<&'v str>) -> String {
    replace(text, &mut |name| {
        Ok(value(name).map_or_else(|| placeholder(name), str::to_string))
    })
    .unwrap_or_else(|e: String| e)
}

/// `text` as shown: each placeholder `<redacted>`.
pub fn shown(text: &str) -> String {
    if !text.contains(OPEN) {
        return text.to_string();
    }
    replace(text, &mut |_| Ok(REDACTED.to_string())).unwrap_or_else(|e: String| e)
}

/// `text` with each placeholder replaced by what `with` gives for its name, or its error.
fn replace(
    text: &str,
    with: &mut dyn FnMut(&str) -> Result<String, String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(OPEN) {
        let Some((name, after)) = next(&rest[at..]) else {
            break;
        };
        out.push_str(&rest[..at]);
        out.push_str(&with(name)?);
        rest = after;
    }
    out.push_str(rest);
    Ok(out)
}

/// Every string of `value` as [`shown`].
pub fn shown_json(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(shown(s)),
        Value::Array(items) => Value::Array(items.iter().map(shown_json).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), shown_json(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A URL whose credentials (what the redactor redacts) are placeholders named
/// `<field>.userinfo` and `<field>.<parameter>`, and those credentials by name. Unchanged,
/// with none, when it has none.
pub fn url_with_placeholders(url: &str, field: &str) -> (String, Vec<(String, String)>) {
    let mut secrets: Vec<(String, String)> = Vec::new();
    let text = map_url_secrets(url, &mut |part| {
        let part_name = match part {
            UrlSecret::Userinfo(_) => "userinfo",
            UrlSecret::Query { name, .. } if is_valid_name(name) => name,
            UrlSecret::Query { .. } => "query",
        };
        let mut name = format!("{field}.{part_name}");
        let mut n = 1;
        while secrets.iter().any(|(taken, _)| *taken == name) {
            n += 1;
            name = format!("{field}.{part_name}.{n}");
        }
        secrets.push((name.clone(), part.value().to_string()));
        placeholder(&name)
    });
    (text, secrets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_shows_what_the_redactor_shows_and_expands_to_itself() {
        let url = "https://u:pw@h.example/m?X-Amz-Credential=c1&sig=s1&sig=s2&page=2#f";
        let (text, secrets) = url_with_placeholders(url, "source");
        assert_eq!(
            text,
            "https://${secret:source.userinfo}@h.example/m?X-Amz-Credential=${secret:source.X-Amz-Credential}&sig=${secret:source.sig}&sig=${secret:source.sig.2}&page=2#f"
        );
        assert_eq!(shown(&text), crate::redact::redact_url(url));
        let names: Vec<&str> = secrets.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, names_in(&text));
        let back = expand(&text, |n| {
            secrets
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
        });
        assert_eq!(back.unwrap(), url);
        let (plain, none) = url_with_placeholders("https://h/x?a=b", "url");
        assert_eq!((plain.as_str(), none.len()), ("https://h/x?a=b", 0));
    }

    #[test]
    fn expansion_names_the_first_unknown_secret() {
        let text = "a ${secret:one} b ${secret:two} ${port}";
        assert_eq!(
            expand(text, |n| (n == "one").then_some("1")),
            Err("two".to_string())
        );
        assert_eq!(
            expand(text, |n| Some(if n == "one" { "1" } else { "2" })).unwrap(),
            "a 1 b 2 ${port}"
        );
        assert_eq!(shown(text), "a <redacted> b <redacted> ${port}");
        // An unterminated placeholder is text.
        assert_eq!(expand("x ${secret:y", |_| None).unwrap(), "x ${secret:y");
        assert_eq!(shown("x ${secret:y"), "x ${secret:y");
    }

    #[test]
    fn shown_json_redacts_every_string() {
        let v =
            serde_json::json!({"env": {"K": "${secret:env.K}"}, "n": 1, "a": ["${secret:x}/y"]});
        assert_eq!(
            shown_json(&v),
            serde_json::json!({"env": {"K": "<redacted>"}, "n": 1, "a": ["<redacted>/y"]})
        );
    }
}
