//! llama.cpp's `llama-server`, as the planner sees it: its flag table
//! ([`super::llamacpp_flags`]), its argv (`--host`, `--port`, `--model`, the TLS files), the
//! variables it reads secrets from, `/health`, `--metrics` and its memory-relevant flags.

use crate::config::{Backend, Engine};
use crate::memory_settings::{BadFlag, MemorySettings};

use super::llamacpp_flags::{self, Flag, FlagContext, Normalized, SecretFlagEnv};
use super::{PlannedEngine, ServerArgs};

/// The server program, and the one target a source pool builds.
pub const SERVER_PROGRAM: &str = "llama-server";

/// The variable llama-server reads its API key from.
pub const API_KEY_ENV: &str = "LLAMA_API_KEY";

/// The path that answers 200 once the model is loaded (503 while loading).
pub const HEALTH_PATH: &str = "/health";

/// Recent llama.cpp's `--fit` (on by default) may keep layers in host memory, or shrink unset
/// settings, to make a model fit; a GPU pool runs entirely in VRAM or fails (vram-fit), so
/// its servers get `--fit off`. Builds older than `--fit` never move layers on their own: the
/// spawn drops it for a binary whose `--help` does not list it.
pub const FIT_FLAG: &str = "--fit";

/// The log verbosity at which llama-server prints its load report: `offloaded N/M layers to
/// GPU` and each buffer's size per device (`CUDA0 model buffer size = … MiB`, KV, output,
/// compute). Recent builds print them at 4 (trace) only, not at their default 3; the probe
/// reads them to prove a GPU pool is on its GPUs and to record what it allocated. Builds older
/// than the flag print them by default: the spawn drops it for a binary that does not list it.
pub const LOG_VERBOSITY_FLAG: &str = "--log-verbosity";
/// [`LOG_VERBOSITY_FLAG`]'s value.
pub const LOAD_REPORT_VERBOSITY: &str = "4";

/// llama.cpp's server.
#[derive(Debug, Clone, Copy)]
pub struct LlamaCpp;

impl PlannedEngine for LlamaCpp {
    fn engine(&self) -> Engine {
        Engine::Llamacpp
    }

    fn build_target(&self) -> &'static str {
        SERVER_PROGRAM
    }

    fn normalize(&self, raw: &[String], cx: FlagContext<'_>) -> Normalized {
        llamacpp_flags::normalize(raw, cx)
    }

    fn memory_settings(&self, flags: &[Flag]) -> Result<MemorySettings, BadFlag> {
        super::llamacpp_memory::memory_settings(flags)
    }

    fn argv(&self, server: ServerArgs<'_>, flags: &[Flag]) -> Vec<String> {
        let mut argv: Vec<String> = [
            server.binary,
            "--host",
            server.host,
            "--port",
            server.port,
            "--model",
            server.model,
        ]
        .map(str::to_string)
        .into();
        if let Some(t) = server.tls {
            argv.extend([
                crate::tls::CERT_FLAG.to_string(),
                t.cert_file.clone(),
                crate::tls::KEY_FLAG.to_string(),
                t.key_file.clone(),
            ]);
        }
        argv.extend(llamacpp_flags::to_argv(flags));
        argv
    }

    fn residency_flags(&self, backend: Backend, flags: &[Flag]) -> (Vec<Flag>, Vec<String>) {
        // A `--fit` of the pool's own flags is honoured as it is.
        if backend != Backend::Cuda || flags.iter().any(|f| f.name == FIT_FLAG) {
            return (Vec::new(), Vec::new());
        }
        let fit_off = Flag {
            name: FIT_FLAG.into(),
            value: Some("off".into()),
            secret: false,
        };
        (vec![fit_off], vec![FIT_FLAG.into()])
    }

    fn report_flags(&self, backend: Backend, flags: &[Flag]) -> (Vec<Flag>, Vec<String>) {
        // A verbosity of the pool's own flags is honoured as it is (`--verbose` logs all).
        if backend == Backend::Cpu
            || flags
                .iter()
                .any(|f| f.name == LOG_VERBOSITY_FLAG || f.name == "--verbose")
        {
            return (Vec::new(), Vec::new());
        }
        let verbosity = Flag {
            name: LOG_VERBOSITY_FLAG.into(),
            value: Some(LOAD_REPORT_VERBOSITY.into()),
            secret: false,
        };
        (vec![verbosity], vec![LOG_VERBOSITY_FLAG.into()])
    }

    fn secret_flags_env(&self, flags: &[Flag]) -> Result<(Vec<Flag>, SecretFlagEnv), String> {
        llamacpp_flags::split_secret_flags(flags)
    }

    fn api_key_env(&self) -> &'static str {
        API_KEY_ENV
    }

    fn health_path(&self) -> &'static str {
        HEALTH_PATH
    }

    fn serves_metrics(&self, flags: &[Flag]) -> bool {
        flags.iter().any(|f| f.name == "--metrics")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::step::TlsFiles;

    fn flag(name: &str, value: &str) -> Flag {
        Flag {
            name: name.into(),
            value: Some(value.into()),
            secret: false,
        }
    }

    #[test]
    fn a_gpu_server_gets_fit_off_a_cpu_server_nothing() {
        let (flags, optional) = LlamaCpp.residency_flags(Backend::Cuda, &[]);
        assert_eq!(flags, [flag("--fit", "off")]);
        assert_eq!(optional, ["--fit"]);
        assert_eq!(
            LlamaCpp.residency_flags(Backend::Cpu, &[]),
            (vec![], vec![])
        );
    }

    #[test]
    fn every_gpu_server_logs_its_load_report_unless_its_flags_set_the_detail() {
        let (flags, optional) = LlamaCpp.report_flags(Backend::Cuda, &[]);
        assert_eq!(flags, [flag("--log-verbosity", "4")]);
        assert_eq!(optional, ["--log-verbosity"]);
        assert_eq!(LlamaCpp.report_flags(Backend::Cpu, &[]), (vec![], vec![]));
        assert_eq!(
            LlamaCpp.report_flags(Backend::Cuda, &[flag("--log-verbosity", "5")]),
            (vec![], vec![])
        );
    }

    #[test]
    fn a_fit_of_the_pools_own_flags_is_honoured() {
        let own = [flag("--fit", "on")];
        assert_eq!(
            LlamaCpp.residency_flags(Backend::Cuda, &own),
            (vec![], vec![])
        );
    }

    #[test]
    fn argv_is_binary_then_what_provision_sets_then_the_flags() {
        let tls = TlsFiles {
            cert_file: "/c.pem".into(),
            key_file: "/k.pem".into(),
        };
        let flags = [Flag {
            name: "--ctx-size".into(),
            value: Some("4096".into()),
            secret: false,
        }];
        let server = ServerArgs {
            binary: "/bin/llama-server",
            host: "127.0.0.1",
            port: "${port}",
            model: "/m.gguf",
            tls: Some(&tls),
        };
        assert_eq!(
            LlamaCpp.argv(server, &flags),
            [
                "/bin/llama-server",
                "--host",
                "127.0.0.1",
                "--port",
                "${port}",
                "--model",
                "/m.gguf",
                "--ssl-cert-file",
                "/c.pem",
                "--ssl-key-file",
                "/k.pem",
                "--ctx-size",
                "4096"
            ]
        );
    }
}
