//! A small blocking HTTP client for probes (ureq: no async runtime to build; rustls for https
//! external servers). Replicas on the loopback never go through a proxy; a replica serving
//! `listen.tls` is asked over https trusting exactly its configured certificate
//! ([`crate::pinned_tls`]).

use std::time::Duration;

use ureq::Agent;

/// The most of a body a probe reads.
const BODY_LIMIT: u64 = 1 << 20;

/// An answer: status and body (truncated at 1 MiB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

/// No answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoReply {
    /// Nothing listens yet.
    Refused,
    Timeout,
    /// The server presented a certificate other than the pinned one.
    NotPinned,
    Other(String),
}

impl std::fmt::Display for NoReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoReply::Refused => write!(f, "connection refused"),
            NoReply::Timeout => write!(f, "no answer (timed out)"),
            NoReply::NotPinned => write!(
                f,
                "the TLS certificate presented is not the pool's `listen.tls.cert_file`"
            ),
            NoReply::Other(e) => write!(f, "{e}"),
        }
    }
}

pub struct Http {
    agent: Agent,
}

impl Http {
    /// A client whose requests each take at most `timeout`. `via_proxy`: honour `*_proxy`
    /// variables (for external servers only).
    pub fn new(timeout: Duration, via_proxy: bool) -> Http {
        let mut config = Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .user_agent("provision");
        if !via_proxy {
            config = config.proxy(None);
        }
        Http {
            agent: config.build().into(),
        }
    }

    /// A client for one replica serving TLS: https trusting exactly `leaf`, no proxy.
    pub fn pinned(timeout: Duration, leaf: rustls_pki_types::CertificateDer<'static>) -> Http {
        use ureq::unversioned::resolver::DefaultResolver;
        use ureq::unversioned::transport::{Connector, TcpConnector};
        let config = Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .user_agent("provision")
            .proxy(None)
            .build();
        let connector =
            ().chain(TcpConnector::default())
                .chain(crate::pinned_tls::PinnedTls::new(leaf));
        Http {
            agent: Agent::with_parts(config, connector, DefaultResolver::default()),
        }
    }

    /// GET `url`, with `Authorization: Bearer <key>` when a key is given.
    pub fn get(&self, url: &str, bearer: Option<&str>) -> Result<Reply, NoReply> {
        let mut req = self.agent.get(url);
        if let Some(key) = bearer {
            req = req.header("Authorization", &format!("Bearer {key}"));
        }
        reply(req.call())
    }

    /// POST the JSON `body` to `url`, with `Authorization: Bearer <key>` when a key is given.
    pub fn post_json(&self, url: &str, bearer: Option<&str>, body: &str) -> Result<Reply, NoReply> {
        let mut req = self
            .agent
            .post(url)
            .header("Content-Type", "application/json");
        if let Some(key) = bearer {
            req = req.header("Authorization", &format!("Bearer {key}"));
        }
        reply(req.send(body))
    }
}

fn reply(answer: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Reply, NoReply> {
    match answer {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let body = resp
                .body_mut()
                .with_config()
                .limit(BODY_LIMIT)
                .read_to_string()
                .unwrap_or_default();
            Ok(Reply { status, body })
        }
        Err(e) => Err(classify(e)),
    }
}

fn classify(e: ureq::Error) -> NoReply {
    if crate::pinned_tls::is_not_pinned(&e) {
        return NoReply::NotPinned;
    }
    match e {
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            NoReply::Refused
        }
        ureq::Error::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) =>
        {
            NoReply::Timeout
        }
        ureq::Error::Timeout(_) => NoReply::Timeout,
        ureq::Error::ConnectionFailed => NoReply::Refused,
        other => NoReply::Other(other.to_string()),
    }
}
