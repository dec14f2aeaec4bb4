//! llama-server flag normalisation: table-driven and pure.
//!
//! Aliases become one canonical spelling, repeated flags resolve last-wins (with a warning),
//! conflicting pairs resolve to the later one (reported), pool fields (`ctx`, `tensor_split`,
//! `backend`) are applied, and the deterministic defaults are added when absent. Flags that
//! provision owns (`--host`, `--port`, `--model`, …) are rejected. Secret values are marked so
//! that every rendering of the plan redacts them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::Backend;

/// What a secret value is replaced with wherever a flag list is shown or stored.
pub use crate::redact::REDACTED;

/// The environment variable llama-server reads each secret flag from (`common/arg.cpp`
/// `set_env`): the value reaches the server there, never in its argv.
const SECRET_FLAG_ENV: &[(&str, &str)] =
    &[("--api-key", "LLAMA_API_KEY"), ("--hf-token", "HF_TOKEN")];

/// The environment variable that carries secret flag `name`, if llama-server has one.
pub fn secret_flag_env(name: &str) -> Option<&'static str> {
    SECRET_FLAG_ENV
        .iter()
        .find(|(f, _)| *f == name)
        .map(|(_, env)| *env)
}

/// Secret flags as the environment that carries them: `(variable, value)`.
pub type SecretFlagEnv = Vec<(&'static str, String)>;

/// Split normalised flags into those for argv (no secret among them) and the environment
/// that carries the secret ones (`LLAMA_API_KEY`, `HF_TOKEN`). A secret flag llama-server
/// reads from no variable is an error: it could only be passed in argv.
pub fn split_secret_flags(flags: &[Flag]) -> Result<(Vec<Flag>, SecretFlagEnv), String> {
    let mut args = Vec::new();
    let mut env = Vec::new();
    for f in flags {
        if !f.secret {
            args.push(f.clone());
            continue;
        }
        match secret_flag_env(&f.name) {
            Some(var) => env.push((var, f.value.clone().unwrap_or_default())),
            None => {
                return Err(format!(
                    "`{}` is secret and llama-server reads it from no environment variable",
                    f.name
                ))
            }
        }
    }
    Ok((args, env))
}

/// Layers offloaded by default on a GPU pool: all of them (more than any model has).
pub const ALL_GPU_LAYERS: &str = "999";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arity {
    Switch,
    Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueKind {
    Any,
    Int,
    /// An integer, `auto` or `all`.
    GpuLayers,
    Secret,
}

struct FlagSpec {
    canonical: &'static str,
    aliases: &'static [&'static str],
    arity: Arity,
    kind: ValueKind,
}

const fn spec(
    canonical: &'static str,
    aliases: &'static [&'static str],
    arity: Arity,
    kind: ValueKind,
) -> FlagSpec {
    FlagSpec {
        canonical,
        aliases,
        arity,
        kind,
    }
}

use Arity::{Switch, Value};
use ValueKind::{Any, GpuLayers, Int, Secret};

/// llama-server flags provision knows. Unknown flags pass through unchanged (a flag followed by
/// a non-flag token takes it as its value); the spawn step checks them against the binary.
const FLAGS: &[FlagSpec] = &[
    spec(
        "--n-gpu-layers",
        &["-ngl", "--ngl", "--gpu-layers"],
        Value,
        GpuLayers,
    ),
    spec("--ctx-size", &["-c", "--ctx", "--context"], Value, Int),
    spec("--parallel", &["-np"], Value, Int),
    spec("--threads", &["-t"], Value, Int),
    spec("--threads-batch", &["-tb"], Value, Int),
    spec("--batch-size", &["-b"], Value, Int),
    spec("--ubatch-size", &["-ub"], Value, Int),
    spec("--cont-batching", &["-cb"], Switch, Any),
    spec("--no-cont-batching", &["-nocb"], Switch, Any),
    spec("--metrics", &[], Switch, Any),
    spec("--no-webui", &["--no-ui"], Switch, Any),
    spec("--webui", &["--ui"], Switch, Any),
    spec("--tensor-split", &["-ts"], Value, Any),
    spec("--split-mode", &["-sm"], Value, Any),
    spec("--fit", &["-fit"], Value, Any),
    spec("--main-gpu", &["-mg"], Value, Int),
    spec("--cache-type-k", &["-ctk"], Value, Any),
    spec("--cache-type-v", &["-ctv"], Value, Any),
    spec("--mlock", &[], Switch, Any),
    spec("--no-mmap", &[], Switch, Any),
    spec("--seed", &["-s"], Value, Int),
    spec("--n-predict", &["-n"], Value, Int),
    spec("--alias", &["-a"], Value, Any),
    spec("--verbose", &["-v"], Switch, Any),
    spec("--log-verbosity", &["-lv", "--verbosity"], Value, Int),
    spec("--jinja", &[], Switch, Any),
    spec("--chat-template", &[], Value, Any),
    spec("--api-key", &[], Value, Secret),
    spec("--hf-token", &["-hft"], Value, Secret),
];

/// Pairs that cancel each other: the later one wins.
const CONFLICTS: &[(&str, &str)] = &[
    ("--cont-batching", "--no-cont-batching"),
    ("--webui", "--no-webui"),
];

/// Flags whose value provision sets itself, with what to do instead.
const OWNED: &[(&[&str], &str)] = &[
    (
        &["--host"],
        "provision binds every replica to the pool's `listen.host` (default 127.0.0.1)",
    ),
    (
        &["--port"],
        "set `provisioning.ports` (one per replica) instead",
    ),
    (
        &["-m", "--model"],
        "set `provisioning.model.ref` (or the pool's `model`) instead",
    ),
    (
        &["-hf", "-hfr", "--hf-repo", "-hff", "--hf-file"],
        "use an `hf:ORG/REPO/FILE.gguf` model ref instead",
    ),
    (
        &["-mu", "--model-url"],
        "use an `https://` model ref instead",
    ),
    (
        &["--ssl-cert-file", "--ssl-key-file"],
        "set the pool's `listen: {tls: {cert_file: PATH, key_file: PATH}}` instead (provision then probes over https, trusting that certificate)",
    ),
];

/// One normalised flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Flag {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The value is a secret: shown and stored as `<redacted>`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secret: bool,
}

/// A problem or remark found while normalising; `index` points into the raw flag list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagNote {
    pub index: Option<usize>,
    pub error: bool,
    pub message: String,
    pub help: Option<String>,
}

/// Pool fields that shape the flags.
#[derive(Debug, Clone, Copy)]
pub struct FlagContext<'a> {
    pub backend: Backend,
    pub ctx: Option<u32>,
    pub tensor_split: Option<&'a [f64]>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Normalized {
    pub flags: Vec<Flag>,
    pub notes: Vec<FlagNote>,
}

impl Normalized {
    pub fn has_errors(&self) -> bool {
        self.notes.iter().any(|n| n.error)
    }

    pub fn get(&self, name: &str) -> Option<&Flag> {
        self.flags.iter().find(|f| f.name == name)
    }
}

fn lookup(name: &str) -> Option<&'static FlagSpec> {
    FLAGS
        .iter()
        .find(|s| s.canonical == name || s.aliases.contains(&name))
}

/// The canonical spelling of a flag name (`-sm` → `--split-mode`); an unknown flag as written.
pub fn canonical_name(name: &str) -> &str {
    lookup(name).map_or(name, |s| s.canonical)
}

fn is_flag(token: &str) -> bool {
    token.starts_with('-') && token.len() > 1 && token.parse::<f64>().is_err()
}

/// The flag list as argv, secrets included (for the process only).
pub fn to_argv(flags: &[Flag]) -> Vec<String> {
    flags
        .iter()
        .flat_map(|f| std::iter::once(f.name.clone()).chain(f.value.clone()))
        .collect()
}

/// The flag list as argv with secret values replaced by `<redacted>`.
pub fn to_redacted_argv(flags: &[Flag]) -> Vec<String> {
    flags
        .iter()
        .flat_map(|f| {
            let value = f.value.as_ref().map(|v| {
                if f.secret {
                    REDACTED.to_string()
                } else {
                    v.clone()
                }
            });
            std::iter::once(f.name.clone()).chain(value)
        })
        .collect()
}

fn check_value(spec: &FlagSpec, value: &str) -> Result<(), String> {
    let int_ok = value.parse::<i64>().is_ok_and(|n| n >= -1);
    match spec.kind {
        Int if !int_ok => Err(format!(
            "`{}` takes an integer, not `{value}`",
            spec.canonical
        )),
        GpuLayers if !(int_ok || value == "auto" || value == "all") => Err(format!(
            "`{}` takes a layer count, `auto` or `all`, not `{value}`",
            spec.canonical
        )),
        Secret | Any if value.is_empty() => {
            Err(format!("`{}` needs a non-empty value", spec.canonical))
        }
        _ => Ok(()),
    }
}

/// Normalise a raw flag list for a pool. Pure; see the module docs for the rules.
pub fn normalize(raw: &[String], cx: FlagContext<'_>) -> Normalized {
    let mut out = Normalized::default();
    // Raw index of the token that set each flag, for messages.
    let mut origin: Vec<usize> = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        let token = raw[i].as_str();
        let at = i;
        i += 1;
        if !is_flag(token) {
            out.notes.push(FlagNote {
                index: Some(at),
                error: true,
                message: format!("`{token}` is not a flag and follows no flag that takes a value"),
                help: Some("write each flag before its value, e.g. [--parallel, \"2\"]".into()),
            });
            continue;
        }
        let (name, inline) = match token.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (token, None),
        };
        if let Some((_, why)) = OWNED.iter().find(|(names, _)| names.contains(&name)) {
            out.notes.push(FlagNote {
                index: Some(at),
                error: true,
                message: format!("`{name}` is set by provision and may not be given in `flags`"),
                help: Some(why.to_string()),
            });
            if inline.is_none() && raw.get(i).is_some_and(|t| !is_flag(t)) {
                i += 1;
            }
            continue;
        }
        let flag = match lookup(name) {
            Some(spec) => {
                let value = match spec.arity {
                    Arity::Switch => {
                        if inline.is_some() {
                            out.notes.push(FlagNote {
                                index: Some(at),
                                error: true,
                                message: format!(
                                    "`{}` is a switch and takes no value",
                                    spec.canonical
                                ),
                                help: Some(format!("write just `{}`", spec.canonical)),
                            });
                            continue;
                        }
                        None
                    }
                    Arity::Value => match inline.or_else(|| {
                        let next = raw.get(i).cloned();
                        if next.is_some() {
                            i += 1;
                        }
                        next
                    }) {
                        Some(v) => {
                            if let Err(message) = check_value(spec, &v) {
                                out.notes.push(FlagNote {
                                    index: Some(at),
                                    error: true,
                                    message,
                                    help: None,
                                });
                                continue;
                            }
                            Some(v)
                        }
                        None => {
                            out.notes.push(FlagNote {
                                index: Some(at),
                                error: true,
                                message: format!("`{name}` needs a value after it"),
                                help: Some(format!(
                                    "add the value as the next list item, e.g. [{name}, \"1\"]"
                                )),
                            });
                            continue;
                        }
                    },
                };
                Flag {
                    name: spec.canonical.to_string(),
                    value,
                    secret: spec.kind == Secret,
                }
            }
            None => {
                let value = inline.or_else(|| match raw.get(i) {
                    Some(next) if !is_flag(next) => {
                        i += 1;
                        Some(next.clone())
                    }
                    _ => None,
                });
                Flag {
                    name: name.to_string(),
                    value,
                    secret: false,
                }
            }
        };
        insert(&mut out, &mut origin, flag, Some(at));
    }

    apply_pool_fields(&mut out, &mut origin, cx);
    out
}

fn shown(f: &Flag) -> String {
    match (&f.value, f.secret) {
        (Some(_), true) => format!("{} {REDACTED}", f.name),
        (Some(v), false) => format!("{} {v}", f.name),
        (None, _) => f.name.clone(),
    }
}

/// Add `flag`, resolving repeats (last wins) and conflicts (later wins).
fn insert(out: &mut Normalized, origin: &mut Vec<usize>, flag: Flag, at: Option<usize>) {
    for (a, b) in CONFLICTS {
        let other = if flag.name == *a {
            b
        } else if flag.name == *b {
            a
        } else {
            continue;
        };
        if let Some(pos) = out.flags.iter().position(|f| f.name == *other) {
            out.flags.remove(pos);
            origin.remove(pos);
            out.notes.push(FlagNote {
                index: at,
                error: false,
                message: format!(
                    "`{other}` and `{}` contradict each other; the later one, `{}`, wins",
                    flag.name, flag.name
                ),
                help: Some(format!("remove `{other}`")),
            });
        }
    }
    match out.flags.iter().position(|f| f.name == flag.name) {
        Some(pos) => {
            let before = shown(&out.flags[pos]);
            let message = if out.flags[pos] == flag {
                format!("`{}` is given twice", shown(&flag))
            } else {
                format!(
                    "`{}` overrides the earlier `{before}` (last one wins)",
                    shown(&flag)
                )
            };
            out.notes.push(FlagNote {
                index: at,
                error: false,
                message,
                help: Some("give each flag once".into()),
            });
            out.flags[pos] = flag;
            if let Some(at) = at {
                origin[pos] = at;
            }
        }
        None => {
            out.flags.push(flag);
            origin.push(at.unwrap_or(usize::MAX));
        }
    }
}

/// Set `name` to `value` from a pool field or policy; `reason` explains an override.
fn force(out: &mut Normalized, origin: &mut [usize], name: &str, value: String, reason: &str) {
    match out.flags.iter().position(|f| f.name == name) {
        Some(pos) => {
            if out.flags[pos].value.as_deref() != Some(value.as_str()) {
                let before = shown(&out.flags[pos]);
                out.notes.push(FlagNote {
                    index: Some(origin[pos]).filter(|i| *i != usize::MAX),
                    error: false,
                    message: format!("`{before}` is replaced by `{name} {value}`: {reason}"),
                    help: Some(format!("remove `{name}` from flags")),
                });
                out.flags[pos].value = Some(value);
            }
        }
        None => {
            out.flags.push(Flag {
                name: name.into(),
                value: Some(value),
                secret: false,
            });
        }
    }
}

fn apply_pool_fields(out: &mut Normalized, origin: &mut Vec<usize>, cx: FlagContext<'_>) {
    if let Some(ctx) = cx.ctx {
        force(
            out,
            origin,
            "--ctx-size",
            ctx.to_string(),
            "the pool's `ctx` sets the context size",
        );
    }
    if let Some(split) = cx.tensor_split {
        let joined = split
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(",");
        force(
            out,
            origin,
            "--tensor-split",
            joined,
            "the pool's `tensor_split` sets the split",
        );
    }
    match cx.backend {
        Backend::Cpu => force(
            out,
            origin,
            "--n-gpu-layers",
            "0".into(),
            "a CPU pool keeps every layer on the CPU",
        ),
        Backend::Cuda => add_default(out, origin, "--n-gpu-layers", Some(ALL_GPU_LAYERS)),
    }
    add_default(out, origin, "--parallel", Some("1"));
    if out.get("--cont-batching").is_none() {
        add_default(out, origin, "--no-cont-batching", None);
    }
    add_default(out, origin, "--metrics", None);
    if out.get("--webui").is_none() {
        add_default(out, origin, "--no-webui", None);
    }
}

fn add_default(out: &mut Normalized, origin: &mut Vec<usize>, name: &str, value: Option<&str>) {
    if out.get(name).is_none() {
        out.flags.push(Flag {
            name: name.into(),
            value: value.map(str::to_string),
            secret: false,
        });
        origin.push(usize::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu() -> FlagContext<'static> {
        FlagContext {
            backend: Backend::Cuda,
            ctx: None,
            tensor_split: None,
        }
    }

    fn norm(raw: &[&str], cx: FlagContext<'_>) -> Normalized {
        normalize(&raw.iter().map(|s| s.to_string()).collect::<Vec<_>>(), cx)
    }

    #[test]
    fn aliases_are_canonicalised_and_defaults_added() {
        let n = norm(&["-ngl", "20", "-c", "4096", "-np", "2", "-t", "8"], gpu());
        assert_eq!(
            to_argv(&n.flags),
            [
                "--n-gpu-layers",
                "20",
                "--ctx-size",
                "4096",
                "--parallel",
                "2",
                "--threads",
                "8",
                "--no-cont-batching",
                "--metrics",
                "--no-webui"
            ]
        );
        assert!(n.notes.is_empty(), "{:?}", n.notes);
    }

    #[test]
    fn gpu_pool_defaults_to_all_layers_and_cpu_pool_forces_zero() {
        let g = norm(&[], gpu());
        assert_eq!(
            g.get("--n-gpu-layers").unwrap().value.as_deref(),
            Some(ALL_GPU_LAYERS)
        );
        let c = norm(
            &["--gpu-layers", "33"],
            FlagContext {
                backend: Backend::Cpu,
                ..gpu()
            },
        );
        assert_eq!(c.get("--n-gpu-layers").unwrap().value.as_deref(), Some("0"));
        assert!(c
            .notes
            .iter()
            .any(|n| !n.error && n.message.contains("CPU pool")));
    }

    #[test]
    fn duplicates_last_wins_and_conflicts_are_reported() {
        let n = norm(
            &[
                "--ctx-size",
                "1024",
                "--context=2048",
                "-cb",
                "--no-cont-batching",
            ],
            gpu(),
        );
        assert_eq!(n.get("--ctx-size").unwrap().value.as_deref(), Some("2048"));
        assert!(n.get("--cont-batching").is_none());
        assert!(n.get("--no-cont-batching").is_some());
        assert_eq!(n.notes.len(), 2, "{:?}", n.notes);
        assert!(!n.has_errors());
    }

    #[test]
    fn owned_flags_missing_values_and_bad_values_are_errors() {
        let n = norm(
            &[
                "--port",
                "9000",
                "--host=0.0.0.0",
                "-m",
                "x.gguf",
                "--parallel",
                "two",
                "--threads",
            ],
            gpu(),
        );
        let errors: Vec<_> = n
            .notes
            .iter()
            .filter(|n| n.error)
            .map(|n| n.index)
            .collect();
        assert_eq!(errors, [Some(0), Some(2), Some(3), Some(5), Some(7)]);
    }

    #[test]
    fn pool_fields_override_flags_and_secrets_are_redacted() {
        let split = [3.0, 1.0];
        let n = norm(
            &[
                "--ctx-size",
                "512",
                "--api-key",
                "s3cret",
                "--flash-attn",
                "on",
            ],
            FlagContext {
                backend: Backend::Cuda,
                ctx: Some(8192),
                tensor_split: Some(&split),
            },
        );
        assert_eq!(n.get("--ctx-size").unwrap().value.as_deref(), Some("8192"));
        assert_eq!(
            n.get("--tensor-split").unwrap().value.as_deref(),
            Some("3,1")
        );
        assert_eq!(n.get("--flash-attn").unwrap().value.as_deref(), Some("on"));
        let shown = to_redacted_argv(&n.flags).join(" ");
        assert!(
            !shown.contains("s3cret") && shown.contains("--api-key <redacted>"),
            "{shown}"
        );
        assert!(to_argv(&n.flags).contains(&"s3cret".to_string()));
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        let n = norm(
            &["-ngl", "10", "-cb", "-c", "100", "--foo", "bar", "--baz"],
            gpu(),
        );
        let again = normalize(&to_argv(&n.flags), gpu());
        assert_eq!(again.flags, n.flags);
        assert!(again.notes.is_empty());
    }
}
