//! A running server as one typed value: a process provision started on this host (its
//! identity: pid, process group, start time, boot id and marker; its URL, port, log, binary
//! and start time), or a server provision does not own, known by its URL only; and how it is
//! asked (the certificate it must present, the API key its endpoints need). Probe, handoff,
//! down, status and supervise take the server from here, never from a spawn's outputs field
//! by field; a mode that runs servers another way (a container) is another [`Server`]
//! variant, and they follow.

use std::path::PathBuf;
use std::time::Duration;

use provision_plan::outputs::SpawnOutputs;
use provision_plan::StepOutputs;

use crate::http::Http;
use crate::listener_owner::{self, NotOwned};
use crate::process::{self, NotRunning, ServerProcess, Stopped};

/// A server a replica's steps talk to, and how they ask it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHandle {
    pub server: Server,
    pub access: Access,
}

/// How a server is asked, besides its URL's scheme.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// The PEM file whose first certificate the server must present (`listen.tls`): https
    /// trusting exactly that certificate.
    pub pin: Option<PathBuf>,
    /// The API key its endpoints other than health need (`Authorization: Bearer`); never
    /// shown.
    pub api_key: Option<String>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("pin", &self.pin)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Where a server runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Server {
    /// A process provision started on this host (modes `source` and `binary`).
    Local(LocalServer),
    /// A server provision does not own (mode `external`). Its URL may hold credentials: for
    /// requests only, never shown.
    External { url: String },
}

/// A server process provision started, as its spawn step recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalServer {
    /// Which process it is (pid, group, start time, boot id, marker).
    pub process: ServerProcess,
    /// `scheme://host:port`, as the probe asks it.
    pub url: String,
    pub port: u16,
    /// When it started (RFC 3339, UTC).
    pub started_at: String,
    /// Its own log.
    pub log: PathBuf,
    pub pid_file: PathBuf,
    /// The binary it runs, and that binary's `sha256:<hex>`.
    pub binary: String,
    pub binary_digest: String,
}

impl ServerHandle {
    /// The server a spawn step recorded; `None` when the record names no process to trust
    /// (pid or group 0 or 1).
    pub fn recorded(spawned: &SpawnOutputs) -> Option<ServerHandle> {
        let process = ServerProcess::recorded(&spawned.server)?;
        Some(ServerHandle::of(Server::Local(LocalServer {
            process,
            url: spawned.url.clone(),
            port: spawned.port,
            started_at: spawned.started_at.clone(),
            log: PathBuf::from(&spawned.log),
            pid_file: PathBuf::from(&spawned.pid_file),
            binary: spawned.binary.clone(),
            binary_digest: spawned.binary_digest.clone(),
        })))
    }

    /// A server provision does not own, at `url`.
    pub fn external(url: String) -> ServerHandle {
        ServerHandle::of(Server::External { url })
    }

    fn of(server: Server) -> ServerHandle {
        ServerHandle {
            server,
            access: Access::default(),
        }
    }

    /// The same server, asked with `access`.
    pub fn with_access(self, access: Access) -> ServerHandle {
        ServerHandle { access, ..self }
    }

    /// The server a step's outputs record: a spawn step's; `None` for another kind.
    pub fn of_outputs(outputs: &StepOutputs) -> Option<ServerHandle> {
        Self::recorded(outputs.get::<SpawnOutputs>()?)
    }

    /// Where it answers.
    pub fn url(&self) -> &str {
        match &self.server {
            Server::Local(l) => &l.url,
            Server::External { url } => url,
        }
    }

    /// The server provision started (none for an external one).
    pub fn local(&self) -> Option<&LocalServer> {
        match &self.server {
            Server::Local(l) => Some(l),
            Server::External { .. } => None,
        }
    }

    /// The API key its endpoints other than health need.
    pub fn api_key(&self) -> Option<&str> {
        self.access.api_key.as_deref()
    }

    /// A client for its requests, each taking at most `timeout`: https trusting exactly the
    /// pinned certificate when there is one (a local server serving `listen.tls`); through
    /// `*_proxy` only to an external server, never to one on this host.
    pub fn client(&self, timeout: Duration) -> Result<Http, String> {
        match (&self.access.pin, &self.server) {
            (Some(pin), Server::Local(_)) => {
                Ok(Http::pinned(timeout, crate::pinned_tls::read_leaf(pin)?))
            }
            (_, server) => Ok(Http::new(
                timeout,
                matches!(server, Server::External { .. }),
            )),
        }
    }

    /// Its process, when provision started it.
    pub fn process(&self) -> Option<&ServerProcess> {
        self.local().map(|l| &l.process)
    }

    pub fn pid(&self) -> Option<u32> {
        self.process().map(|p| p.pid)
    }

    /// Is it still this very process? (An external server is not provision's to check.)
    pub fn check(&self) -> Result<(), NotRunning> {
        self.process().map_or(Ok(()), ServerProcess::check)
    }

    /// Is the listener on `url`'s port (its own URL, or the one a step asked) its own
    /// process's? (An external server's always is.)
    pub fn verify_listener(&self, url: &str) -> Result<(), NotOwned> {
        match &self.server {
            Server::Local(l) => listener_owner::verify(l.process.pid, url),
            Server::External { .. } => Ok(()),
        }
    }

    /// Stop it (SIGTERM, `grace`, SIGKILL to its group); an external server is never
    /// stopped.
    pub fn stop(&self, grace: Duration) -> Result<Stopped, String> {
        match &self.server {
            Server::Local(l) => process::stop(&l.process, grace),
            Server::External { .. } => Ok(Stopped::NotRunning("not provision's to stop".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use provision_plan::outputs::ServerIdentity;
    use provision_plan::Backend;

    fn spawned(pid: u32) -> SpawnOutputs {
        SpawnOutputs {
            server: ServerIdentity {
                pid,
                pgid: pid,
                start_time: 7,
                boot_id: "b".into(),
                instance: Some("m".into()),
            },
            port: 8080,
            host: "127.0.0.1".into(),
            url: "http://127.0.0.1:8080".into(),
            log: "/r/logs/p-r0.log".into(),
            pid_file: "/r/run/p-r0.pid".into(),
            binary: "/bin/llama-server".into(),
            binary_digest: "sha256:00".into(),
            backend: Backend::Cpu,
            devices: vec![],
            started_at: "2026-01-01T00:00:00Z".into(),
            handoff_path: None,
            gpu_layers: None,
        }
    }

    #[test]
    fn a_spawn_record_is_a_local_server() {
        let h = ServerHandle::recorded(&spawned(4242)).expect("a process");
        assert_eq!(h.pid(), Some(4242));
        assert_eq!(h.url(), "http://127.0.0.1:8080");
        let l = h.local().unwrap();
        assert_eq!(l.process.instance.as_deref(), Some("m"));
        assert_eq!(l.process.boot_id, "b");
        assert_eq!(l.log, PathBuf::from("/r/logs/p-r0.log"));
        // pid 1 is never a server of provision's.
        assert_eq!(ServerHandle::recorded(&spawned(1)), None);
    }

    #[test]
    fn an_external_server_is_neither_checked_nor_stopped() {
        let h = ServerHandle::external("http://u:p@h:1".into()).with_access(Access {
            pin: Some(PathBuf::from("/nonexistent.pem")),
            api_key: Some("k3y".into()),
        });
        assert_eq!(h.pid(), None);
        assert!(h.check().is_ok());
        assert!(h.verify_listener("http://h:1").is_ok());
        assert!(matches!(h.stop(Duration::ZERO), Ok(Stopped::NotRunning(_))));
        // Never pinned (the pin is a local server's own certificate), and the key never shown.
        assert!(h.client(Duration::from_secs(1)).is_ok());
        assert_eq!(h.api_key(), Some("k3y"));
        assert!(!format!("{h:?}").contains("k3y"));
    }

    #[test]
    fn a_local_server_serving_tls_is_asked_trusting_its_pin_only() {
        let h = ServerHandle::recorded(&spawned(4242)).unwrap();
        assert!(h.client(Duration::from_secs(1)).is_ok(), "no pin: plain");
        let pinned = h.with_access(Access {
            pin: Some(PathBuf::from("/nonexistent.pem")),
            api_key: None,
        });
        let err = pinned
            .client(Duration::from_secs(1))
            .err()
            .expect("unreadable");
        assert!(err.contains("/nonexistent.pem"), "{err}");
    }
}
