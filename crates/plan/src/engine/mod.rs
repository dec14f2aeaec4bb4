//! The engine seam, planner side: what the planner and validation need from the inference
//! engine a pool runs (its flag table, the argv of one server, the flags provision owns, the
//! endpoints a probe asks, the memory-relevant settings, the build target). The runtime side
//! (endpoint answers, version parsing, the binary's accepted flags) is steps-spawn's `engine`.
//!
//! [`of`] is the one place that dispatches on [`Engine`]; `llamacpp` is its one
//! implementation. An engine validation rejects (`vllm`, `tgi`, `triton`) has none.

pub mod llamacpp;
pub mod llamacpp_flags;
pub mod llamacpp_memory;

use crate::config::{Backend, Engine};
use crate::memory_settings::{BadFlag, MemorySettings};
use crate::step::TlsFiles;

use llamacpp_flags::{Flag, FlagContext, Normalized, SecretFlagEnv};

/// What one server's argv is made of, besides its flags.
#[derive(Debug, Clone, Copy)]
pub struct ServerArgs<'a> {
    /// The server binary.
    pub binary: &'a str,
    /// The address it binds.
    pub host: &'a str,
    /// Its port (`${port}` when chosen at apply time).
    pub port: &'a str,
    /// The model file it loads.
    pub model: &'a str,
    /// The certificate and key it serves HTTPS with.
    pub tls: Option<&'a TlsFiles>,
}

/// An inference engine, as the planner and validation see it.
pub trait PlannedEngine: Sync {
    /// The engine in the config.
    fn engine(&self) -> Engine;
    /// The build target a source pool builds, and the binary's file name in `<build>/bin`.
    fn build_target(&self) -> &'static str;
    /// The pool's flags, normalised (aliases, duplicates, pool fields, defaults), with notes;
    /// a flag provision sets itself (`--host`, `--port`, `--model`, …) is an error.
    fn normalize(&self, raw: &[String], cx: FlagContext<'_>) -> Normalized;
    /// The memory-relevant settings of a server with these flags (the vram-fit step's inputs).
    fn memory_settings(&self, flags: &[Flag]) -> Result<MemorySettings, BadFlag>;
    /// The argv of one server: the binary, then what provision sets, then `flags` (none of
    /// them secret: see [`PlannedEngine::secret_flags_env`]).
    fn argv(&self, server: ServerArgs<'_>, flags: &[Flag]) -> Vec<String>;
    /// The flags provision adds after its own arguments so that a server of `backend` keeps
    /// every layer where the pool puts it (none when `flags` set them already), and the
    /// names among them that the spawn drops for a binary that does not accept them.
    fn residency_flags(&self, backend: Backend, flags: &[Flag]) -> (Vec<Flag>, Vec<String>);
    /// The flags provision adds to every GPU server so that its log reports what it loaded
    /// where (the layers on each device, each buffer's size), which the probe reads (none when
    /// `flags` set the log's detail already, and none on the CPU: a CPU server's argv, and so
    /// its fingerprint, stays as earlier versions made it), and the names among them that the
    /// spawn drops for a binary that does not accept them.
    fn report_flags(&self, backend: Backend, flags: &[Flag]) -> (Vec<Flag>, Vec<String>);
    /// The flags for argv and the environment that carries the secret ones.
    fn secret_flags_env(&self, flags: &[Flag]) -> Result<(Vec<Flag>, SecretFlagEnv), String>;
    /// The environment variable the server reads its API key from.
    fn api_key_env(&self) -> &'static str;
    /// The path that answers 200 once the server is ready.
    fn health_path(&self) -> &'static str;
    /// Do these flags make the server serve its metrics (which the probe then requires)?
    fn serves_metrics(&self, flags: &[Flag]) -> bool;
}

/// The engine a pool runs: `None` for one provision cannot run yet (validation rejects it).
pub fn of(engine: Engine) -> Option<&'static dyn PlannedEngine> {
    match engine {
        Engine::Llamacpp => Some(&llamacpp::LlamaCpp),
        Engine::Vllm | Engine::Tgi | Engine::Triton => None,
    }
}

/// The engine of a validated pool.
pub fn planned(engine: Engine) -> &'static dyn PlannedEngine {
    of(engine).expect("validation rejects an engine without an implementation")
}

/// The flag table a pool's flags are checked with: its engine's; llama.cpp's for an engine
/// validation rejects, so that every problem of the pool is listed at once, as before.
pub fn flags_of(engine: Engine) -> &'static dyn PlannedEngine {
    of(engine).unwrap_or(&llamacpp::LlamaCpp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llamacpp_is_the_one_engine_with_an_implementation() {
        assert_eq!(
            of(Engine::Llamacpp).map(|e| e.engine()),
            Some(Engine::Llamacpp)
        );
        for e in [Engine::Vllm, Engine::Tgi, Engine::Triton] {
            assert!(of(e).is_none(), "{e:?}");
            // Its flags are still checked, with llama.cpp's table.
            assert_eq!(flags_of(e).engine(), Engine::Llamacpp);
        }
    }
}
