//! Spawn, readiness probe, handoff, stop and supervision of server replicas. What an engine's
//! server accepts and answers is [`engine`]'s (llama.cpp's `llama-server` its one
//! implementation); a running server is a [`ServerHandle`].
//!
//! - [`spawn()`]: start a replica with the exact planned argv in its own session, after stopping
//!   its previous server, checking its flags against the binary's `--help` and its port.
//! - [`probe()`]: wait until the health path answers ready and the listener is the server's own; fail
//!   at once when the server exits or another process holds its port.
//! - [`handoff()`]: write the handoff file, atomically, only for a ready replica whose port its
//!   own server listens on.
//! - [`down()`], [`retire`]: stop replicas; [`supervise()`]: restart crashed ones.
//!
//! Secrets (`--api-key` values, secret env) never reach a log, the state file or a handoff
//! file: what is shown and recorded comes from the redacted argv.

pub mod binary_digest;
pub mod down;
pub mod engine;
pub mod handoff;
pub mod handoff_owner;
pub mod http;
pub mod identity;
pub mod key_files;
pub mod listener_owner;
pub mod pid_file;
pub mod pinned_tls;
pub mod port;
pub mod port_reservation;
pub mod probe;
pub mod process;
pub mod replica;
pub mod server_handle;
mod sock_diag;
pub mod spawn;
pub mod status_report;
pub mod supervise;

pub use down::{down, retire, stop_server, DownReport};
pub use handoff::{handoff, handoff_schema, HandoffFile, HandoffFileModel, HANDOFF_VERSION};
pub use probe::{check_probe, probe};
pub use replica::DEFAULT_GRACE;
pub use server_handle::{Access, LocalServer, Server, ServerHandle};
pub use spawn::{check_spawn, spawn, spawn_facts};
pub use status_report::{status_schema, PoolStatus, ReplicaState, ReplicaStatus, StatusReport};
pub use supervise::{backoff, supervise, ReplicaKey, SuperviseEvent, SuperviseOptions};
