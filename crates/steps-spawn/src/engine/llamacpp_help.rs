//! The flags a llama-server binary accepts, read from its `--help` once per binary digest and
//! cached on disk, so an unknown or renamed flag fails before the server is started, with the
//! nearest valid spelling. llama.cpp's side of the engine seam ([`super::llamacpp`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use provision_executor::FailedCommand;

use super::run::{run_bounded, tail};

/// How long `llama-server --help` may take.
const HELP_TIMEOUT: Duration = Duration::from_secs(20);

/// Flags a binary accepts (every spelling: `-ngl`, `--gpu-layers`, `--n-gpu-layers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownFlags(pub BTreeSet<String>);

/// Flag names in `--help` output: on each line that starts with `-`, the comma-separated
/// spellings before the description (`-ngl,  --gpu-layers, --n-gpu-layers N   max. …`);
/// argument placeholders (`N`, `[on|off]`, `<dev1,dev2,..>`) are dropped.
pub fn parse_help(help: &str) -> KnownFlags {
    let mut flags = BTreeSet::new();
    for line in help.lines() {
        let mut tokens = line.split_whitespace().peekable();
        if !tokens.peek().is_some_and(|t| t.starts_with('-')) {
            continue;
        }
        while let Some(token) = tokens.next() {
            let name = token.trim_end_matches(',');
            let name = name.split('=').next().unwrap_or(name);
            if !is_flag(name) {
                break;
            }
            flags.insert(name.to_string());
            if token.ends_with(',') {
                continue;
            }
            // A placeholder may follow; a comma after it means more spellings.
            match tokens.peek() {
                Some(next) if !next.starts_with('-') && next.ends_with(',') => {
                    tokens.next();
                }
                _ => break,
            }
        }
    }
    KnownFlags(flags)
}

/// `-x` / `--name` (not a negative number, not a lone dash).
fn is_flag(token: &str) -> bool {
    let body = token.trim_start_matches('-');
    token.starts_with('-')
        && !body.is_empty()
        && body.starts_with(|c: char| c.is_ascii_alphabetic())
        && token.len() - body.len() <= 2
}

/// The flag names in an argv (program excluded); `--name=value` counts as `--name`. Check the
/// redacted argv: a secret value that starts with `-` must never be reported as a flag.
pub fn flags_in(argv: &[String]) -> Vec<String> {
    argv.iter()
        .skip(1)
        .map(|a| a.split('=').next().unwrap_or(a).to_string())
        .filter(|a| is_flag(a))
        .collect()
}

/// An argv flag the binary does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownFlag {
    pub flag: String,
    pub suggestion: Option<String>,
}

impl std::fmt::Display for UnknownFlag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`", self.flag)?;
        if let Some(s) = &self.suggestion {
            write!(f, " (did you mean `{s}`?)")?;
        }
        Ok(())
    }
}

impl KnownFlags {
    /// Flags in `argv` this binary does not accept, each with its nearest valid spelling.
    pub fn unknown(&self, argv: &[String]) -> Vec<UnknownFlag> {
        flags_in(argv)
            .into_iter()
            .filter(|f| !self.0.contains(f))
            .map(|flag| UnknownFlag {
                suggestion: self.nearest(&flag),
                flag,
            })
            .collect()
    }

    fn nearest(&self, flag: &str) -> Option<String> {
        let bare = flag.trim_start_matches('-');
        self.0
            .iter()
            .map(|k| (strsim::levenshtein(bare, k.trim_start_matches('-')), k))
            .filter(|(d, k)| *d <= (k.len() / 3).max(2))
            .min_by_key(|(d, k)| (*d, !k.starts_with("--")))
            .map(|(_, k)| k.clone())
    }
}

/// Why what a binary prints about itself (its accepted flags, its devices) could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelpError {
    pub message: String,
    pub tail: String,
    /// `binary --help` (or `--list-devices`) when it could not start or failed.
    pub command: Option<Box<FailedCommand>>,
}

/// The flags `binary` accepts: from the cache `<cache_dir>/<digest>.flags` when there, else
/// from running `binary --help` (then cached).
pub fn known_flags(
    binary: &Path,
    digest: &str,
    env: &BTreeMap<String, String>,
    cache_dir: &Path,
) -> Result<KnownFlags, HelpError> {
    let file = cache_dir.join(format!("{}.flags", digest.trim_start_matches("sha256:")));
    static MEMO: OnceLock<Mutex<BTreeMap<PathBuf, KnownFlags>>> = OnceLock::new();
    let memo = MEMO.get_or_init(Default::default);
    if let Some(k) = memo.lock().expect("lock").get(&file) {
        return Ok(k.clone());
    }
    let cached = std::fs::read_to_string(&file).ok().map(|text| {
        KnownFlags(
            text.lines()
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect(),
        )
    });
    let known = match cached.filter(|k| !k.0.is_empty()) {
        Some(k) => k,
        None => {
            let help = run_bounded(binary, "--help", env, HELP_TIMEOUT)?;
            let known = parse_help(&help);
            if known.0.len() < 3 {
                return Err(HelpError {
                    message: format!(
                        "`{} --help` printed no flags: it does not look like llama-server",
                        binary.display()
                    ),
                    tail: tail(&help, 20),
                    command: None,
                });
            }
            let text: String = known.0.iter().map(|f| format!("{f}\n")).collect();
            if std::fs::create_dir_all(cache_dir).is_ok() {
                let _ = provision_executor::state::write_atomic(
                    &file,
                    text.trim_end().as_bytes(),
                    provision_executor::Durability::Fsync,
                );
            }
            known
        }
    };
    memo.lock().expect("lock").insert(file, known.clone());
    Ok(known)
}

#[cfg(test)]
mod tests {

    #[test]
    fn fit_is_known_from_its_help_line_and_not_from_fit_target() {
        let new_help = "-fit,  --fit [on|off]                   whether to adjust unset arguments to fit in device memory\n";
        let known = parse_help(new_help);
        assert!(
            known.0.contains("--fit") && known.0.contains("-fit"),
            "{known:?}"
        );
        let old_help = "-ngl,  --gpu-layers, --n-gpu-layers N  max. number of layers to store in VRAM\n--fit-target N   a target\n";
        assert!(!parse_help(old_help).0.contains("--fit"));
    }

    use super::*;

    const HELP: &str = "----- common params -----

-h,    --help, --usage                  print usage and exit
--version                               show version and build info
-t,    --threads N                      number of threads to use during generation (default: -1)
                                        (env: LLAMA_ARG_THREADS)
-c,    --ctx-size N                     size of the prompt context (default: 4096)
-ngl,  --gpu-layers, --n-gpu-layers N   max. number of layers to store in VRAM
-cb,   --cont-batching                  enable continuous batching (default: enabled)
-nocb, --no-cont-batching               disable continuous batching
--webui, --no-webui                     whether to enable the Web UI
--api-key KEY                           API key to use for authentication (default: none)
-fit, --fit [on|off]                    fit unset arguments to the device memory
";

    #[test]
    fn help_spellings_are_all_known() {
        let k = parse_help(HELP);
        for f in [
            "-h",
            "--help",
            "--usage",
            "--version",
            "-t",
            "--threads",
            "-ngl",
            "--gpu-layers",
            "--n-gpu-layers",
            "-nocb",
            "--no-cont-batching",
            "--webui",
            "--no-webui",
            "--api-key",
            "-fit",
            "--fit",
        ] {
            assert!(k.0.contains(f), "{f} missing from {:?}", k.0);
        }
        assert!(!k.0.contains("N"), "{:?}", k.0);
        assert!(!k.0.iter().any(|f| f.contains("LLAMA_ARG")), "{:?}", k.0);
    }

    #[test]
    fn unknown_flags_get_the_nearest_spelling_and_values_are_not_flags() {
        let k = parse_help(HELP);
        let argv: Vec<String> = [
            "llama-server",
            "--threads",
            "-1",
            "--n-gpu-layer",
            "99",
            "--api-key",
            "<redacted>",
            "--bogus",
            "--ctx-size=512",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let unknown = k.unknown(&argv);
        assert_eq!(
            unknown,
            vec![
                UnknownFlag {
                    flag: "--n-gpu-layer".into(),
                    suggestion: Some("--n-gpu-layers".into())
                },
                UnknownFlag {
                    flag: "--bogus".into(),
                    suggestion: None
                },
            ]
        );
        assert_eq!(
            unknown[0].to_string(),
            "`--n-gpu-layer` (did you mean `--n-gpu-layers`?)"
        );
    }
}
