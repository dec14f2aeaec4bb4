//! CMake flag normalisation for a llama.cpp build: pure and table-driven.
//!
//! `-DNAME[:TYPE]=VALUE` entries become a sorted map (so two orderings of the same flags share
//! one build), legacy CUDA switches map to `GGML_CUDA`, `LLAMA_BUILD_SERVER=ON` and
//! `CMAKE_BUILD_TYPE=Release` are ensured, a GPU pool ensures `GGML_CUDA=ON` and a CPU pool
//! forbids it.

use std::collections::BTreeMap;

use crate::config::Backend;

/// Legacy spellings of the CUDA switch.
const CUDA_ALIASES: &[&str] = &["LLAMA_CUBLAS", "LLAMA_CUDA", "GGML_CUBLAS", "GGML_CUDA"];

/// Normalised CMake arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CmakeFlags {
    /// `-D` definitions, sorted by name.
    pub defines: BTreeMap<String, String>,
    /// Other arguments, in the order given (e.g. `-Wno-dev`).
    pub extra: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmakeNote {
    pub index: Option<usize>,
    pub error: bool,
    pub message: String,
    pub help: Option<String>,
}

impl CmakeFlags {
    /// The arguments as CMake receives them, `-D` definitions first.
    pub fn to_args(&self) -> Vec<String> {
        self.defines
            .iter()
            .map(|(k, v)| format!("-D{k}={v}"))
            .chain(self.extra.iter().cloned())
            .collect()
    }

    pub fn cuda(&self) -> bool {
        self.defines.get("GGML_CUDA").is_some_and(|v| v == "ON")
    }
}

fn truthy(v: &str) -> Option<bool> {
    match v.to_ascii_uppercase().as_str() {
        "ON" | "1" | "TRUE" | "YES" | "Y" => Some(true),
        "OFF" | "0" | "FALSE" | "NO" | "N" | "" => Some(false),
        _ => None,
    }
}

/// Normalise `raw` for a pool with `backend`.
pub fn normalize(raw: &[String], backend: Backend) -> (CmakeFlags, Vec<CmakeNote>) {
    let mut n = Normalizer::default();
    let mut i = 0;
    while i < raw.len() {
        let at = i;
        let arg = raw[i].trim();
        i += 1;
        if let Some(note) = secret_in(at, arg) {
            n.notes.push(note);
            continue;
        }
        if arg == "-G" || arg.starts_with("-G") && !arg.starts_with("-G=") && arg.len() > 2 {
            n.notes.push(CmakeNote {
                index: Some(at),
                error: true,
                message: "the generator is not set through `cmake_flags`".into(),
                help: Some("set `build.generator` (e.g. `generator: Ninja`) instead".into()),
            });
            if arg == "-G" {
                i += 1;
            }
            continue;
        }
        let Some(def) = arg.strip_prefix("-D") else {
            if arg.starts_with("-S") || arg.starts_with("-B") {
                n.notes.push(CmakeNote {
                    index: Some(at),
                    error: true,
                    message: format!(
                        "`{arg}` is set by provision: it owns the source and build directories"
                    ),
                    help: Some("remove it; use `build.cache_dir` to move the cache".into()),
                });
                continue;
            }
            n.flags.extra.push(arg.to_string());
            continue;
        };
        // `-D NAME=VALUE` as two items.
        let def = if def.is_empty() {
            match raw.get(i) {
                Some(next) => {
                    i += 1;
                    next.trim().to_string()
                }
                None => String::new(),
            }
        } else {
            def.to_string()
        };
        n.define(at, arg, &def);
    }
    n.finish(backend)
}

/// The error for a CMake argument `name=…` whose name marks a secret (`-DMY_API_TOKEN=…`):
/// CMake's argv is readable by every local user (`/proc/<pid>/cmdline`) and is shown in plans,
/// logs and errors, and llama.cpp's build takes no secret. The note never quotes the value.
fn secret_note(at: usize, name: Option<&str>) -> Option<CmakeNote> {
    let name = name?.trim_start_matches('-');
    crate::redact::is_secret_name(name).then(|| CmakeNote {
        index: Some(at),
        error: true,
        message: format!(
            "`{name}` looks like a secret, and provision never puts a secret on a command line (every local user can read it)"
        ),
        help: Some(
            "llama.cpp's build options take no secret: remove it (a credential for the clone goes in `source.repo`'s URL or git's credential helper)".into(),
        ),
    })
}

/// The error for a CMake argument that carries a secret anywhere in it: a URL with
/// credentials (`-DX=https://u:pw@host/…`), or a `NAME=…`, `-DNAME=…` or `--name` whose name
/// looks like a secret, also inside a value (`-DCMAKE_C_FLAGS=-DAPI_KEY=…`) or as the first
/// of two items (`--auth`, then the value). Never quotes the value.
fn secret_in(at: usize, arg: &str) -> Option<CmakeNote> {
    if crate::redact::redact_text(arg) != arg {
        return Some(CmakeNote {
            index: Some(at),
            error: true,
            message: "a URL with credentials, and provision never puts a secret on a command line (every local user can read it)".into(),
            help: Some("remove the credentials from the URL (llama.cpp's build options take none)".into()),
        });
    }
    arg.split(|c: char| c.is_whitespace() || c == ';')
        .flat_map(names_in)
        .map(|part| part.trim_start_matches("-D").trim_start_matches('-'))
        .map(|name| name.split(':').next().unwrap_or(name))
        .find(|name| !name.is_empty() && crate::redact::is_secret_name(name))
        .and_then(|name| secret_note(at, Some(name)))
}

/// The names a token gives values to: every part before an `=` (`-DA=-DB=v`: `-DA`, `-DB`),
/// or the token itself when it is a flag (`--auth`); a bare value names nothing.
fn names_in(token: &str) -> Vec<&str> {
    let parts: Vec<&str> = token.split('=').collect();
    match parts.split_last() {
        Some((_, names)) if !names.is_empty() => names.to_vec(),
        _ if token.starts_with('-') => vec![token],
        _ => Vec::new(),
    }
}

/// What normalising has found so far.
#[derive(Default)]
struct Normalizer {
    flags: CmakeFlags,
    notes: Vec<CmakeNote>,
    /// The last CUDA switch, and its index.
    cuda: Option<(bool, usize)>,
    /// The index of the `LLAMA_BUILD_SERVER` definition.
    server_at: Option<usize>,
}

impl Normalizer {
    /// Definition `def` (`NAME[:TYPE]=VALUE`) of flag `arg` at index `at`.
    fn define(&mut self, at: usize, arg: &str, def: &str) {
        let Some((name_type, value)) = def.split_once('=') else {
            self.notes.push(CmakeNote {
                index: Some(at),
                error: true,
                message: format!("`{arg}` is not a definition: expected `-DNAME=VALUE`"),
                help: Some("write e.g. `-DGGML_NATIVE=OFF`".into()),
            });
            return;
        };
        let name = name_type.split(':').next().unwrap_or(name_type).trim();
        if name.is_empty() {
            self.notes.push(CmakeNote {
                index: Some(at),
                error: true,
                message: format!("`{arg}` has no variable name"),
                help: Some("write e.g. `-DGGML_NATIVE=OFF`".into()),
            });
            return;
        }
        if let Some(note) = secret_note(at, Some(name)) {
            self.notes.push(note);
            return;
        }
        if CUDA_ALIASES.contains(&name) {
            match truthy(value) {
                Some(on) => {
                    if name != "GGML_CUDA" {
                        self.notes.push(CmakeNote {
                            index: Some(at),
                            error: false,
                            message: format!(
                                "`-D{name}` is a legacy spelling; using `-DGGML_CUDA={}`",
                                if on { "ON" } else { "OFF" }
                            ),
                            help: Some("write `-DGGML_CUDA=ON`".into()),
                        });
                    }
                    self.cuda = Some((on, at));
                }
                None => self.notes.push(CmakeNote {
                    index: Some(at),
                    error: true,
                    message: format!("`-D{name}={value}` is neither ON nor OFF"),
                    help: None,
                }),
            }
            return;
        }
        if name == "LLAMA_BUILD_SERVER" {
            self.server_at = Some(at);
        }
        if let Some(old) = self
            .flags
            .defines
            .insert(name.to_string(), value.to_string())
        {
            if old != value {
                self.notes.push(CmakeNote {
                    index: Some(at),
                    error: false,
                    message: format!(
                        "`-D{name}={value}` overrides the earlier `-D{name}={old}` (last one wins)"
                    ),
                    help: Some("give each definition once".into()),
                });
            }
        }
    }

    /// The flags with what provision sets (`GGML_CUDA` from the backend, a server build,
    /// `Release`), and the notes on them.
    fn finish(mut self, backend: Backend) -> (CmakeFlags, Vec<CmakeNote>) {
        match (backend, self.cuda) {
            (Backend::Cuda, Some((false, at))) => self.notes.push(CmakeNote {
                index: Some(at),
                error: true,
                message: "a GPU pool needs a CUDA build, but `cmake_flags` turn CUDA off".into(),
                help: Some(
                    "remove the flag, or set `backend: cpu` for an explicit CPU pool".into(),
                ),
            }),
            (Backend::Cpu, Some((true, at))) => self.notes.push(CmakeNote {
                index: Some(at),
                error: true,
                message: "a CPU pool may not build with CUDA (`GGML_CUDA=ON`)".into(),
                help: Some("remove the flag, or set `backend: cuda` for a GPU pool".into()),
            }),
            _ => {}
        }
        let cuda_value = match backend {
            Backend::Cuda => "ON",
            Backend::Cpu => "OFF",
        };
        self.flags
            .defines
            .insert("GGML_CUDA".into(), cuda_value.into());
        self.flags
            .defines
            .entry("LLAMA_BUILD_SERVER".into())
            .or_insert_with(|| "ON".into());
        if self
            .flags
            .defines
            .get("LLAMA_BUILD_SERVER")
            .and_then(|v| truthy(v))
            == Some(false)
        {
            self.notes.push(CmakeNote {
                index: self.server_at,
                error: true,
                message: "`LLAMA_BUILD_SERVER` is OFF, but provision builds `llama-server`".into(),
                help: Some("remove `-DLLAMA_BUILD_SERVER=OFF`".into()),
            });
        }
        self.flags
            .defines
            .entry("CMAKE_BUILD_TYPE".into())
            .or_insert_with(|| "Release".into());
        (self.flags, self.notes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(raw: &[&str]) -> Vec<String> {
        raw.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_3090_flags_normalise_and_order_does_not_matter() {
        let a = normalize(
            &args(&[
                "-DCMAKE_BUILD_TYPE=Release",
                "-DLLAMA_BUILD_SERVER=ON",
                "-DGGML_CUDA=ON",
                "-DCMAKE_CUDA_ARCHITECTURES=86",
            ]),
            Backend::Cuda,
        );
        let b = normalize(
            &args(&["-DCMAKE_CUDA_ARCHITECTURES=86", "-DLLAMA_CUBLAS=1"]),
            Backend::Cuda,
        );
        assert_eq!(a.0, b.0);
        assert!(a.1.is_empty());
        assert_eq!(b.1.len(), 1);
        assert_eq!(
            a.0.to_args(),
            [
                "-DCMAKE_BUILD_TYPE=Release",
                "-DCMAKE_CUDA_ARCHITECTURES=86",
                "-DGGML_CUDA=ON",
                "-DLLAMA_BUILD_SERVER=ON"
            ]
        );
    }

    #[test]
    fn cuda_policy_per_backend() {
        assert!(normalize(&args(&["-DGGML_CUDA=OFF"]), Backend::Cuda)
            .1
            .iter()
            .any(|n| n.error));
        assert!(normalize(&args(&["-DLLAMA_CUDA=ON"]), Backend::Cpu)
            .1
            .iter()
            .any(|n| n.error));
        let (cpu, notes) = normalize(&args(&["-DGGML_NATIVE=OFF"]), Backend::Cpu);
        assert!(notes.is_empty());
        assert!(!cpu.cuda());
        assert_eq!(cpu.defines["GGML_CUDA"], "OFF");
    }

    #[test]
    fn generator_and_directories_are_not_flags() {
        let (_, notes) = normalize(&args(&["-G", "Ninja", "-B/tmp/x", "-DX"]), Backend::Cpu);
        assert_eq!(notes.iter().filter(|n| n.error).count(), 3, "{notes:?}");
    }

    #[test]
    fn secrets_anywhere_in_an_argument_are_refused_without_their_value() {
        for bad in [
            &["-DMY_API_TOKEN=hunter2"][..],
            &["-D", "MY_API_TOKEN=hunter2"],
            &["-DCMAKE_C_FLAGS=-DAPI_KEY=hunter2"],
            &["--auth", "hunter2"],
            &["--auth=hunter2"],
            &["-DLLAMA_URL=https://u:hunter2@host/x"],
            &["-DX:STRING=a;PASSWORD=hunter2"],
        ] {
            let (_, notes) = normalize(&args(bad), Backend::Cpu);
            let errors: Vec<_> = notes.iter().filter(|n| n.error).collect();
            assert!(!errors.is_empty(), "{bad:?} passed");
            for n in errors {
                assert!(!n.message.contains("hunter2"), "{}", n.message);
            }
        }
        // Values that merely contain a marker are values, not names.
        let (flags, notes) = normalize(
            &args(&["-DLLAMA_NAME=keystone", "-DGGML_NATIVE=OFF", "-Wno-dev"]),
            Backend::Cpu,
        );
        assert!(notes.iter().all(|n| !n.error), "{notes:?}");
        assert_eq!(flags.defines["LLAMA_NAME"], "keystone");
    }
}
