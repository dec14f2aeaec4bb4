//! The flags a llama-server binary accepts, read from its `--help` once per binary digest and
//! cached on disk, so an unknown or renamed flag fails before the server is started, with the
//! nearest valid spelling. llama.cpp's side of the engine seam ([`super::llamacpp`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use provision_executor::{ExitState, FailedCommand};

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

/// Why the accepted flags could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelpError {
    pub message: String,
    pub tail: String,
    /// `binary --help` when it could not start or failed.
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
            let help = run_help(binary, env)?;
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

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `binary --help`, stdout and stderr together (versions differ in where they print it).
fn run_help(binary: &Path, env: &BTreeMap<String, String>) -> Result<String, HelpError> {
    let out_file = tempfile_in_tmp()?;
    let mut child = Command::new(binary)
        .arg("--help")
        .envs(env)
        .stdin(Stdio::null())
        .stdout(out_file.try_clone().map_err(io_error(binary))?)
        .stderr(out_file.try_clone().map_err(io_error(binary))?)
        .process_group(0)
        .spawn()
        .map_err(|e| HelpError {
            message: format!("cannot run `{} --help`: {e}", binary.display()),
            tail: String::new(),
            command: Some(help_command(binary, None)),
        })?;
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if started.elapsed() > HELP_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HelpError {
                    message: format!(
                        "`{} --help` did not finish within {} s",
                        binary.display(),
                        HELP_TIMEOUT.as_secs()
                    ),
                    tail: String::new(),
                    command: None,
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(io_error(binary)(e)),
        }
    };
    let mut text = String::new();
    let mut f = out_file;
    use std::io::Seek;
    let _ = f.seek(std::io::SeekFrom::Start(0));
    let _ = f.read_to_string(&mut text);
    if !status.success() {
        return Err(HelpError {
            message: format!(
                "`{} --help` failed with {}: the binary cannot run here",
                binary.display(),
                crate::process::describe_status(status)
            ),
            tail: tail(&text, 20),
            command: Some(help_command(binary, Some(status.into()))),
        });
    }
    Ok(text)
}

use std::os::unix::process::CommandExt;

/// `binary --help` as a failed command: `status` when it ran.
fn help_command(binary: &Path, status: Option<ExitState>) -> Box<FailedCommand> {
    Box::new(FailedCommand {
        command: format!("{} --help", binary.display()),
        cwd: None,
        status,
        output_log: None,
    })
}

fn io_error(binary: &Path) -> impl Fn(std::io::Error) -> HelpError + '_ {
    move |e| HelpError {
        message: format!("cannot run `{} --help`: {e}", binary.display()),
        tail: String::new(),
        command: None,
    }
}

/// An unnamed temp file (deleted on close) for a child's output.
fn tempfile_in_tmp() -> Result<std::fs::File, HelpError> {
    let dir = std::env::temp_dir();
    let path = dir.join(format!(
        ".provision-help-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    // A new file (O_EXCL, O_NOFOLLOW, 0600): a file or link planted at this predictable name in
    // a shared temp dir is removed (the link itself), never truncated or written through.
    let create = || {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
    };
    let f = create()
        .or_else(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                std::fs::remove_file(&path)?;
                create()
            }
            _ => Err(e),
        })
        .map_err(|e| HelpError {
            message: format!("cannot create a temp file in {}: {e}", dir.display()),
            tail: String::new(),
            command: None,
        })?;
    let _ = std::fs::remove_file(&path);
    Ok(f)
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

    #[test]
    fn a_failing_help_is_a_failed_command_with_its_exit_code() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("llama-server");
        std::fs::write(
            &binary,
            "#!/bin/sh\necho 'cannot load libcuda.so' >&2\nexit 127\n",
        )
        .unwrap();
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = run_help(&binary, &BTreeMap::new()).unwrap_err();
        assert!(err.tail.contains("libcuda"), "{err:?}");
        let failed = err.command.expect("the failed --help as fields");
        assert_eq!(failed.command, format!("{} --help", binary.display()));
        assert_eq!(failed.status.and_then(|s| s.exit_code), Some(127));
    }
    use super::*;

    #[test]
    fn the_help_temp_file_is_not_opened_through_a_planted_link() {
        let keep = tempfile::tempdir().unwrap();
        let target = keep.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        let planted = std::env::temp_dir().join(format!(
            ".provision-help-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_file(&planted);
        std::os::unix::fs::symlink(&target, &planted).unwrap();
        let f = tempfile_in_tmp().map_err(|e| e.message).unwrap();
        drop(f);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert!(std::fs::symlink_metadata(&planted).is_err(), "nothing left");
    }

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
