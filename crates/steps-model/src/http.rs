//! A small HTTP client over ureq (rustls) for the hub and URL downloads: redirects are followed
//! here, so the token is sent only to the host it belongs to, never to the CDN a redirect names.

use std::time::Duration;

use ureq::http::Response;
use ureq::Body;

/// Redirects followed before giving up.
const MAX_REDIRECTS: usize = 10;

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot reach {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("{url} redirects more than {MAX_REDIRECTS} times")]
    TooManyRedirects { url: String },
    #[error("{url} answered a redirect without a usable Location")]
    BadRedirect { url: String },
}

/// A client that sends `token` (as `Authorization: Bearer`) only to `token_host`.
#[derive(Clone)]
pub struct Http {
    agent: ureq::Agent,
    token: Option<(String, String)>,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field(
                "token",
                &self.token.as_ref().map(|(h, _)| (h, "<redacted>")),
            )
            .finish()
    }
}

/// `scheme://host[:port]` of a URL.
pub fn origin(url: &str) -> &str {
    let after = url.find("://").map_or(0, |i| i + 3);
    let end = url[after..].find('/').map_or(url.len(), |i| after + i);
    &url[..end]
}

/// A URL as errors and logs show it: without its query and fragment (signed CDN URLs carry
/// credentials there) and with its userinfo redacted.
pub fn display_url(url: &str) -> String {
    provision_plan::redact::redact_url(url.split(['?', '#']).next().unwrap_or(url))
}

impl Http {
    /// `token` is sent to URLs on `token_origin` (`scheme://host[:port]`) only.
    pub fn new(token: Option<(String, String)>) -> Http {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(Duration::from_secs(20)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .user_agent(concat!("provision/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Http { agent, token }
    }

    /// Send a request and follow redirects. `follow_absolute: false` follows only relative
    /// redirects (a renamed repository) and returns the first redirect to another host, so
    /// its headers can be read (the hub puts the commit and the etag there).
    /// Returns the final response and its URL.
    pub fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        follow_absolute: bool,
    ) -> Result<(Response<Body>, String), HttpError> {
        let mut url = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let mut req = ureq::http::Request::builder().method(method).uri(&url);
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            if let Some((host, token)) = &self.token {
                if origin(&url) == host {
                    req = req.header("Authorization", format!("Bearer {token}"));
                }
            }
            let req = req.body(()).map_err(|e| HttpError::Unreachable {
                url: display_url(&url),
                detail: e.to_string(),
            })?;
            let resp = self.agent.run(req).map_err(|e| HttpError::Unreachable {
                url: display_url(&url),
                detail: e.to_string(),
            })?;
            if !resp.status().is_redirection() || resp.status().as_u16() == 304 {
                return Ok((resp, url));
            }
            let location = resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| HttpError::BadRedirect {
                    url: display_url(&url),
                })?
                .to_string();
            let absolute = location.contains("://");
            if absolute && !follow_absolute {
                return Ok((resp, url));
            }
            url = if absolute {
                location
            } else if location.starts_with('/') {
                format!("{}{location}", origin(&url))
            } else {
                let base = display_url(&url);
                format!(
                    "{}/{location}",
                    &base[..base.rfind('/').unwrap_or(base.len())]
                )
            };
        }
        Err(HttpError::TooManyRedirects {
            url: display_url(&url),
        })
    }
}

/// A header as a string.
pub fn header<'a>(resp: &'a Response<Body>, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

/// An ETag without `W/` and quotes.
pub fn normalize_etag(etag: &str) -> String {
    etag.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_urls_carry_no_credentials() {
        assert_eq!(
            display_url("https://bob:pw0@h.example/m.gguf?X-Amz-Signature=s1g#x"),
            "https://<redacted>@h.example/m.gguf"
        );
        assert_eq!(display_url("http://h/m.gguf"), "http://h/m.gguf");
    }
}
