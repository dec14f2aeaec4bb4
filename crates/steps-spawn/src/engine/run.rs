//! Running a server binary for what it prints about itself (`--help`, `--list-devices`): in
//! its own process group, stdout and stderr together (versions differ in where they print),
//! bounded in time and in the output read.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use provision_executor::{ExitState, FailedCommand};

use super::HelpError;

/// The most output read from one run: `--help` is tens of kilobytes.
const MAX_OUTPUT: u64 = 1 << 20;

/// The last `n` lines of `text`.
pub(super) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `binary <arg>`, stdout and stderr together (at most [`MAX_OUTPUT`] bytes of them), killed
/// after `timeout`; an error when it cannot start, fails or takes longer.
pub(super) fn run_bounded(
    binary: &Path,
    arg: &str,
    env: &BTreeMap<String, String>,
    timeout: Duration,
) -> Result<String, HelpError> {
    let shown = format!("{} {arg}", binary.display());
    let io_error = |e: std::io::Error| HelpError {
        message: format!("cannot run `{shown}`: {e}"),
        tail: String::new(),
        command: None,
    };
    let out_file = tempfile_in_tmp()?;
    let mut child = Command::new(binary)
        .arg(arg)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(out_file.try_clone().map_err(io_error)?)
        .stderr(out_file.try_clone().map_err(io_error)?)
        .process_group(0)
        .spawn()
        .map_err(|e| HelpError {
            message: format!("cannot run `{shown}`: {e}"),
            tail: String::new(),
            command: Some(command(&shown, None)),
        })?;
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if started.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HelpError {
                    message: format!("`{shown}` did not finish within {} s", timeout.as_secs()),
                    tail: String::new(),
                    command: None,
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(io_error(e)),
        }
    };
    let mut bytes = Vec::new();
    let mut f = out_file;
    use std::io::Seek;
    let _ = f.seek(std::io::SeekFrom::Start(0));
    let _ = f.take(MAX_OUTPUT).read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if !status.success() {
        return Err(HelpError {
            message: format!(
                "`{shown}` failed with {}: the binary cannot run here",
                crate::process::describe_status(status)
            ),
            tail: tail(&text, 20),
            command: Some(command(&shown, Some(status.into()))),
        });
    }
    Ok(text)
}

/// `shown` (`binary --help`) as a failed command: `status` when it ran.
fn command(shown: &str, status: Option<ExitState>) -> Box<FailedCommand> {
    Box::new(FailedCommand {
        command: shown.to_string(),
        cwd: None,
        status,
        output_log: None,
    })
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
    use super::*;

    fn script(dir: &Path, body: &str) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let binary = dir.join("llama-server");
        std::fs::write(&binary, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
        binary
    }

    #[test]
    fn a_failing_run_is_a_failed_command_with_its_exit_code() {
        let dir = tempfile::tempdir().unwrap();
        let binary = script(dir.path(), "echo 'cannot load libcuda.so' >&2\nexit 127");
        let err =
            run_bounded(&binary, "--help", &BTreeMap::new(), Duration::from_secs(20)).unwrap_err();
        assert!(err.tail.contains("libcuda"), "{err:?}");
        let failed = err.command.expect("the failed --help as fields");
        assert_eq!(failed.command, format!("{} --help", binary.display()));
        assert_eq!(failed.status.and_then(|s| s.exit_code), Some(127));
    }

    #[test]
    fn a_run_is_bounded_in_time_and_in_output() {
        let dir = tempfile::tempdir().unwrap();
        let slow = script(dir.path(), "sleep 30");
        let started = Instant::now();
        let err = run_bounded(
            &slow,
            "--list-devices",
            &BTreeMap::new(),
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(err.message.contains("did not finish"), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let other = tempfile::tempdir().unwrap();
        let chatty = script(other.path(), "head -c 3000000 /dev/zero | tr '\\0' x");
        let out =
            run_bounded(&chatty, "--help", &BTreeMap::new(), Duration::from_secs(20)).unwrap();
        assert_eq!(out.len() as u64, MAX_OUTPUT);
    }

    #[test]
    fn the_temp_file_is_not_opened_through_a_planted_link() {
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
}
