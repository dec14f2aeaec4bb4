//! Running a step's external commands: argv without a shell, output appended to the step's log
//! (credentials in URLs redacted), cancellation polled, and a failure reported with the
//! command, its working directory, its exit status and the tail of the log.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use provision_plan::redact::redact_text as redact_urls;

use crate::dispatch::{log_tail, Cancel, StepContext, StepError};
use crate::failed_command::{ExitState, FailedCommand};

/// Lines of the log quoted in a failed command's error.
pub const TAIL_LINES: usize = 40;

/// How often a running command checks for cancellation.
const POLL: Duration = Duration::from_millis(25);

/// One external command of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepCommand {
    argv: Vec<String>,
    cwd: Option<PathBuf>,
    env: Vec<(String, String)>,
}

/// Why a command did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("could not start `{command}` in {cwd}: {source}")]
    Spawn {
        command: String,
        cwd: String,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` failed with {status} (in {cwd})")]
    Failed {
        command: String,
        cwd: String,
        /// Exit code or signal (shown as `exit status 2`, `signal 9`).
        status: ExitState,
        /// The last lines of the log (or of the command's stderr), credentials redacted.
        tail: String,
    },
    #[error("`{command}` was stopped: apply was cancelled")]
    Cancelled { command: String },
    #[error("could not write the step log {}: {source}", path.display())]
    Log {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl CommandError {
    /// The tail of a failed command's output (empty for other errors).
    pub fn tail(&self) -> &str {
        match self {
            CommandError::Failed { tail, .. } => tail,
            _ => "",
        }
    }

    /// The command as typed fields, for a command that could not start or failed.
    pub fn failed_command(&self) -> Option<Box<FailedCommand>> {
        let (command, cwd, status) = match self {
            CommandError::Spawn { command, cwd, .. } => (command, cwd, None),
            CommandError::Failed {
                command,
                cwd,
                status,
                ..
            } => (command, cwd, Some(*status)),
            CommandError::Cancelled { .. } | CommandError::Log { .. } => return None,
        };
        Some(Box::new(FailedCommand {
            command: command.clone(),
            cwd: Some(cwd.clone()),
            status,
            output_log: None,
        }))
    }
}

impl From<CommandError> for StepError {
    fn from(e: CommandError) -> StepError {
        let command = e.failed_command();
        let err = match e {
            CommandError::Cancelled { .. } => StepError::cancelled(),
            CommandError::Spawn { ref command, .. } => {
                let program = command.split_whitespace().next().unwrap_or_default();
                StepError::new(e.to_string()).hint(format!(
                    "check that `{program}` is installed and on PATH (the preflight-tools step lists what is missing)"
                ))
            }
            CommandError::Failed { ref tail, .. } => {
                let tail = tail.clone();
                StepError::new(e.to_string()).tail(tail)
            }
            CommandError::Log { .. } => StepError::new(e.to_string())
                .hint("check that the runtime directory is writable and the disk is not full"),
        };
        err.with_command(command)
    }
}

impl StepCommand {
    /// A command from its argv (program first). No shell is involved.
    pub fn new<I, S>(argv: I) -> StepCommand
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        StepCommand {
            argv: argv.into_iter().map(Into::into).collect(),
            cwd: None,
            env: Vec::new(),
        }
    }

    /// Run in `dir` (default: the current directory).
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> StepCommand {
        self.cwd = Some(dir.into());
        self
    }

    /// Add `name=value` to the command's environment.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> StepCommand {
        self.env.push((name.into(), value.into()));
        self
    }

    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    /// The command as shown in logs and errors: shell-quoted, credentials redacted.
    pub fn display(&self) -> String {
        self.argv
            .iter()
            .map(|a| shell_quote(&redact_urls(a)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn cwd_display(&self) -> String {
        match &self.cwd {
            Some(d) => d.display().to_string(),
            None => std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_else(|_| ".".into()),
        }
    }

    /// The command as duct runs it; `token` goes into its environment ([`crate::orphans`]).
    fn expression(&self, token: &str) -> duct::Expression {
        let (program, args) = self
            .argv
            .split_first()
            .map_or(("", &[][..]), |(p, a)| (p, a));
        let mut e = duct::cmd(program, args)
            .stdin_null()
            .unchecked()
            // Its own process group, so that cancelling kills compilers and helpers too.
            .before_spawn(|c| {
                c.process_group(0);
                Ok(())
            });
        if let Some(dir) = &self.cwd {
            e = e.dir(dir);
        }
        for (k, v) in &self.env {
            e = e.env(k, v);
        }
        e.env(crate::orphans::TOKEN_VAR, token)
    }

    /// Run for a step: stdout and stderr go to the step's log, cancellation is honoured.
    pub fn run(&self, cx: &StepContext<'_>) -> Result<(), CommandError> {
        self.run_logged(&cx.log, &cx.cancel)
    }

    /// Run for a step and return its stdout; stderr goes to the step's log.
    pub fn read(&self, cx: &StepContext<'_>) -> Result<String, CommandError> {
        self.read_logged(&cx.log, &cx.cancel)
    }

    /// [`StepCommand::run`] with an explicit log file and cancel flag.
    pub fn run_logged(&self, log: &Path, cancel: &Cancel) -> Result<(), CommandError> {
        let mut file = self.open_log(log)?;
        let running = Running::new(log)?;
        let reader = self
            .expression(&running.token)
            .stderr_to_stdout()
            .reader()
            .map_err(|source| self.spawn_error(source))?;
        let reader = Arc::new(reader);
        let copier = {
            let reader = Arc::clone(&reader);
            let mut file = file.try_clone().map_err(|source| CommandError::Log {
                path: log.to_path_buf(),
                source,
            })?;
            thread::spawn(move || -> io::Result<()> {
                let mut lines = BufReader::new(&*reader);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    if lines.read_until(b'\n', &mut line)? == 0 {
                        return Ok(());
                    }
                    file.write_all(redact_urls(&String::from_utf8_lossy(&line)).as_bytes())?;
                }
            })
        };
        let status = loop {
            if cancel.is_cancelled() {
                stop_group(&reader.pids(), || matches!(reader.try_wait(), Ok(Some(_))));
                running.stop_descendants();
                let _ = reader.kill();
                let _ = copier.join();
                let _ = writeln!(file, "[provision] cancelled: killed `{}`", self.display());
                return Err(CommandError::Cancelled {
                    command: self.display(),
                });
            }
            match reader.try_wait() {
                Ok(Some(output)) => break output.status,
                Ok(None) => thread::sleep(POLL),
                Err(source) => return Err(self.spawn_error(source)),
            }
        };
        let copied = copier.join().unwrap_or(Ok(()));
        copied.map_err(|source| CommandError::Log {
            path: log.to_path_buf(),
            source,
        })?;
        self.check(status, log, &mut file)
    }

    /// [`StepCommand::read`] with an explicit log file and cancel flag.
    pub fn read_logged(&self, log: &Path, cancel: &Cancel) -> Result<String, CommandError> {
        let mut file = self.open_log(log)?;
        let running = Running::new(log)?;
        let handle = self
            .expression(&running.token)
            .stdout_capture()
            .stderr_capture()
            .start()
            .map_err(|source| self.spawn_error(source))?;
        let output: Output = loop {
            if cancel.is_cancelled() {
                stop_group(&handle.pids(), || matches!(handle.try_wait(), Ok(Some(_))));
                running.stop_descendants();
                let _ = handle.kill();
                let _ = writeln!(file, "[provision] cancelled: killed `{}`", self.display());
                return Err(CommandError::Cancelled {
                    command: self.display(),
                });
            }
            match handle.try_wait() {
                Ok(Some(output)) => break output.clone(),
                Ok(None) => thread::sleep(POLL),
                Err(source) => return Err(self.spawn_error(source)),
            }
        };
        let stderr = redact_urls(&String::from_utf8_lossy(&output.stderr));
        file.write_all(stderr.as_bytes())
            .map_err(|source| CommandError::Log {
                path: log.to_path_buf(),
                source,
            })?;
        self.check(output.status, log, &mut file)?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn open_log(&self, log: &Path) -> Result<File, CommandError> {
        let log_error = |source| CommandError::Log {
            path: log.to_path_buf(),
            source,
        };
        // 0700 directories, a 0600 file, never appended to through a symbolic link.
        crate::private_file::create_parent(log).map_err(log_error)?;
        let mut file = crate::private_file::open_append(log).map_err(log_error)?;
        writeln!(file, "$ {}  (in {})", self.display(), self.cwd_display()).map_err(log_error)?;
        Ok(file)
    }

    fn spawn_error(&self, source: io::Error) -> CommandError {
        CommandError::Spawn {
            command: self.display(),
            cwd: self.cwd_display(),
            source,
        }
    }

    fn check(&self, status: ExitStatus, log: &Path, file: &mut File) -> Result<(), CommandError> {
        if status.success() {
            return Ok(());
        }
        let status = ExitState::from(status);
        let _ = writeln!(
            file,
            "[provision] `{}` failed with {status}",
            self.display()
        );
        let _ = file.flush();
        Err(CommandError::Failed {
            command: self.display(),
            cwd: self.cwd_display(),
            status,
            tail: redact_urls(&log_tail(log, TAIL_LINES)),
        })
    }
}

/// The record of a running command ([`crate::orphans`]): written before the command starts,
/// so that no moment exists at which it runs unrecorded; removed when it has finished.
struct Running<'a> {
    log: &'a Path,
    /// What the command and all its descendants carry in their environment.
    token: String,
}

impl<'a> Running<'a> {
    fn new(log: &'a Path) -> Result<Self, CommandError> {
        let token = crate::orphans::register(log).map_err(|source| CommandError::Log {
            path: crate::orphans::record_path(log),
            source: crate::private_file::explain(source),
        })?;
        Ok(Running { log, token })
    }

    /// Stop what the command started outside its process group (a build tool's jobs in
    /// groups or sessions of their own): everything still carrying its token.
    fn stop_descendants(&self) {
        crate::orphans::stop(std::slice::from_ref(&self.token));
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        crate::orphans::unregister(self.log);
    }
}

/// Stop each child's process group: SIGTERM first, so that a build tool that runs its jobs in
/// process groups of their own (ninja does) stops them, then SIGKILL after at most 2 s.
fn stop_group(pids: &[u32], exited: impl Fn() -> bool) {
    signal_group(pids, libc::SIGTERM);
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !exited() && std::time::Instant::now() < deadline {
        thread::sleep(POLL);
    }
    signal_group(pids, libc::SIGKILL);
}

/// Signal each child's process group (the children were started as group leaders).
fn signal_group(pids: &[u32], signal: libc::c_int) {
    for &pid in pids {
        if let Ok(pid) = i32::try_from(pid) {
            // SAFETY: kill(2) with a negative pid signals a process group; no memory is shared.
            unsafe {
                libc::kill(-pid, signal);
            }
        }
    }
}

/// Quote `s` for display when a shell would split or expand it.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,${}<>".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn temp_log() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("logs/step.log");
        (dir, log)
    }

    #[test]
    fn output_is_appended_to_the_log_under_a_header() {
        let (dir, log) = temp_log();
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        std::fs::write(&log, "earlier\n").unwrap();
        StepCommand::new(["sh", "-c", "echo out; echo err >&2"])
            .cwd(dir.path())
            .run_logged(&log, &Cancel::new())
            .unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.starts_with("earlier\n$ sh -c 'echo out; echo err >&2'  (in "));
        assert!(
            text.contains("\nout\n") && text.contains("\nerr\n"),
            "{text}"
        );
    }

    #[test]
    fn env_and_cwd_are_applied() {
        let (dir, log) = temp_log();
        let out = StepCommand::new(["sh", "-c", "echo \"$GREETING $(pwd)\""])
            .cwd(dir.path())
            .env("GREETING", "hello")
            .read_logged(&log, &Cancel::new())
            .unwrap();
        let cwd = dir.path().canonicalize().unwrap();
        assert_eq!(out.trim(), format!("hello {}", cwd.display()));
    }

    #[test]
    fn a_failure_names_command_directory_status_and_tail() {
        let (dir, log) = temp_log();
        let err = StepCommand::new([
            "sh",
            "-c",
            "for i in $(seq 1 60); do echo line$i; done; echo 'fatal: https://bob:hunter2@example.com/x' >&2; exit 3",
        ])
        .cwd(dir.path())
        .run_logged(&log, &Cancel::new())
        .unwrap_err();
        let CommandError::Failed {
            ref command,
            ref cwd,
            ref status,
            ref tail,
        } = err
        else {
            panic!("{err:?}")
        };
        assert!(command.starts_with("sh -c "));
        assert_eq!(cwd, &dir.path().display().to_string());
        assert_eq!(status.to_string(), "exit status 3");
        assert!(!tail.contains("line20\n"), "only the tail: {tail}");
        assert!(tail.contains("line60"));
        assert!(tail.contains("fatal: https://<redacted>@example.com/x"));
        assert!(!std::fs::read_to_string(&log).unwrap().contains("hunter2"));
        let step_error = StepError::from(err);
        assert!(step_error.message.contains("exit status 3"));
        assert!(step_error
            .message
            .contains(&dir.path().display().to_string()));
        assert!(step_error.tail.unwrap().contains("line60"));
        let failed = step_error.command.expect("the command as fields");
        assert!(failed.command.starts_with("sh -c "));
        assert_eq!(failed.cwd, Some(dir.path().display().to_string()));
        assert_eq!(failed.status.and_then(|s| s.exit_code), Some(3));
    }

    #[test]
    fn credentials_are_redacted_in_the_header_and_error() {
        let (_dir, log) = temp_log();
        let err = StepCommand::new(["false", "https://user:s3cret@host.example/repo.git"])
            .run_logged(&log, &Cancel::new())
            .unwrap_err();
        let message = StepError::from(err).message;
        assert!(
            message.contains("https://<redacted>@host.example/repo.git"),
            "{message}"
        );
        assert!(!message.contains("s3cret"));
        assert!(!std::fs::read_to_string(&log).unwrap().contains("s3cret"));
    }

    #[test]
    fn a_missing_program_is_a_spawn_error_with_a_hint() {
        let (_dir, log) = temp_log();
        let err: StepError = StepCommand::new(["provision-no-such-program", "x"])
            .run_logged(&log, &Cancel::new())
            .unwrap_err()
            .into();
        assert!(err
            .message
            .contains("could not start `provision-no-such-program x`"));
        assert!(err.hint.unwrap().contains("installed"));
    }

    #[test]
    fn cancellation_kills_the_process_group() {
        let (dir, log) = temp_log();
        let cancel = Cancel::new();
        let marker = dir.path().join("survived");
        let flag = cancel.clone();
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(200));
            flag.cancel();
        });
        let started = Instant::now();
        // A grandchild that would write a file after 2 s if it survived.
        let script = format!("(sleep 2; touch {}) & sleep 30", marker.display());
        let err: StepError = StepCommand::new(["sh", "-c", &script])
            .run_logged(&log, &cancel)
            .unwrap_err()
            .into();
        t.join().unwrap();
        assert!(err.cancelled);
        assert!(started.elapsed() < Duration::from_secs(5));
        thread::sleep(Duration::from_millis(2500));
        assert!(!marker.exists(), "the grandchild was not killed");
    }

    #[test]
    fn read_captures_stdout_and_logs_stderr() {
        let (_dir, log) = temp_log();
        let out = StepCommand::new(["sh", "-c", "echo data; echo noise >&2"])
            .read_logged(&log, &Cancel::new())
            .unwrap();
        assert_eq!(out, "data\n");
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.lines().any(|l| l == "noise"), "{text}");
        assert!(!text.lines().any(|l| l == "data"), "{text}");
    }
}
