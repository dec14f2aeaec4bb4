//! The engine seam, runtime side: what spawn and probe need from the engine a server runs
//! (the flags its binary accepts, what its health answer means, its metrics endpoint, the
//! version it reports). The planner side (argv, flag table, health path) is
//! `provision_plan::engine`.
//!
//! [`of`] is the one place at runtime that dispatches on [`Engine`]; `llamacpp` is its one
//! implementation. Probe, handoff, down, status and supervise know no engine: they ask this
//! trait, or the [`crate::ServerHandle`] of a server.

pub mod llamacpp;
pub mod llamacpp_devices;
pub mod llamacpp_help;
pub mod llamacpp_load;
pub mod load_report;
mod run;

use std::collections::BTreeMap;
use std::path::Path;

use provision_plan::config::Backend;
use provision_plan::Engine;

use crate::http::{Http, Reply};

pub use llamacpp_help::{HelpError, KnownFlags, UnknownFlag};
pub use load_report::LoadReport;

/// The devices of a pool's backend that a server binary lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendDevices {
    /// It lists these devices of the backend (at least one), as it prints them.
    Listed(Vec<String>),
    /// It lists none of the backend's devices; what it lists instead (maybe nothing).
    Missing(Vec<String>),
    /// It cannot list its devices (a build older than the flag): the server's load report is
    /// then the only proof.
    Unknown,
}

/// An inference engine's server, as spawn and probe see it.
pub trait RuntimeEngine: Sync {
    /// The server program, as messages name it (`llama-server`).
    fn program(&self) -> &'static str;
    /// The flags `binary` (of digest `digest`) accepts, asked once per digest and cached
    /// under `cache_root`.
    fn accepted_flags(
        &self,
        binary: &Path,
        digest: &str,
        env: &BTreeMap<String, String>,
        cache_root: &Path,
    ) -> Result<KnownFlags, HelpError>;
    /// The devices of `backend` that `binary` (of digest `digest`, accepting `known`) lists,
    /// asked once per digest and cached under `cache_root`.
    fn backend_devices(
        &self,
        binary: &Path,
        digest_known: (&str, &KnownFlags),
        backend: Backend,
        env: &BTreeMap<String, String>,
        cache_root: &Path,
    ) -> Result<BackendDevices, HelpError>;
    /// Where a binary's devices are read from, as messages name it (`--list-devices`).
    fn devices_source(&self) -> &'static str;
    /// What to do when the server of pool `pool` cannot use the pool's `backend`.
    fn no_device_hint(&self, pool: &str, backend: Backend) -> String;
    /// The layers `argv` asks to put on GPUs (none: every one).
    fn gpu_layers(&self, argv: &[String]) -> Option<u64>;
    /// The most of a server's log that holds its load report (it comes first).
    fn load_report_bytes(&self) -> u64;
    /// The server's load report, read from (the start of) its log.
    fn load_report(&self, log: &str) -> LoadReport;
    /// Where a binary's accepted flags are read from, as messages name it (`--help`).
    fn flags_source(&self) -> &'static str;
    /// What to do about flags of pool `pool` that `binary` does not accept.
    fn unknown_flags_hint(&self, pool: &str, binary: &Path) -> String;
    /// The flag a binary lists when it can serve TLS.
    fn tls_flag(&self) -> &'static str;
    /// What to do when the binary cannot serve the TLS pool `pool` asks for.
    fn no_tls_hint(&self, pool: &str) -> String;
    /// The flag of the argv that names the model file (checked to exist before a start).
    fn model_flag(&self) -> &'static str;
    /// Does this answer of the health path say the server is ready?
    fn is_ready(&self, reply: &Reply) -> bool;
    /// The short reason in an error body (`Loading model`).
    fn reason(&self, body: &str) -> String;
    /// The path that serves metrics.
    fn metrics_path(&self) -> &'static str;
    /// The flag that makes the server serve them.
    fn metrics_flag(&self) -> &'static str;
    /// What to do when the server does not serve the metrics its flags ask for.
    fn metrics_hint(&self) -> &'static str;
    /// The version the server at `url` reports, and where it came from (`/props`).
    fn reported_version(
        &self,
        http: &Http,
        url: &str,
        key: Option<&str>,
    ) -> Option<(String, &'static str)>;
    /// The version `binary` prints, and where it came from (`--version`).
    fn binary_version(&self, binary: &Path) -> Option<(String, &'static str)>;
    /// The environment variable the server reads its API key from.
    fn api_key_env(&self) -> &'static str;
    /// Whether the server reads variable `name` of its environment as a setting (llama-server:
    /// `LLAMA_ARG_*` for its flags, `LLAMA_API_KEY`, `HF_TOKEN`, …). Such a variable of
    /// provision's own environment is not passed on: the plan is the server's whole
    /// configuration.
    fn reads_env(&self, name: &str) -> bool;
}

/// The engine a server runs. Validation rejects an engine without an implementation, so a
/// plan never names one; a plan read back from JSON that does fails here.
pub fn of(engine: Engine) -> Result<&'static dyn RuntimeEngine, String> {
    match engine {
        Engine::Llamacpp => Ok(&llamacpp::LlamaCpp),
        Engine::Vllm | Engine::Tgi | Engine::Triton => Err(format!(
            "engine `{}` is not supported yet: provision runs llamacpp pools only",
            engine.as_str()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_naming_an_engine_without_an_implementation_runs_nothing() {
        assert_eq!(of(Engine::Llamacpp).unwrap().program(), "llama-server");
        let err = of(Engine::Vllm).err().expect("no vllm yet");
        assert!(err.contains("`vllm` is not supported yet"), "{err}");
    }
}
