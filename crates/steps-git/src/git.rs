//! Running git for a step: never prompting, in the C locale, output in the step log.

use std::path::Path;

use provision_executor::command::{CommandError, StepCommand};
use provision_executor::StepContext;

/// A git command: `git [-c protocol.file.allow=always] args…` with a non-interactive
/// environment. `local` allows `file://` submodules: a repository given as a local path may
/// have local submodules (git refuses them by default since 2.38.1).
pub fn git<I, S>(args: I, local: bool) -> StepCommand
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut argv: Vec<String> = vec!["git".into()];
    if local {
        argv.extend(["-c".into(), "protocol.file.allow=always".into()]);
    }
    argv.extend(args.into_iter().map(Into::into));
    let mut cmd = StepCommand::new(argv)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GCM_INTERACTIVE", "never")
        .env("LC_ALL", "C");
    if std::env::var_os("GIT_SSH_COMMAND").is_none() {
        cmd = cmd.env(
            "GIT_SSH_COMMAND",
            "ssh -o BatchMode=yes -o ConnectTimeout=30 -o ServerAliveInterval=15 -o ServerAliveCountMax=4",
        );
    }
    // A host that stops sending (or never answers) fails the command instead of holding the
    // apply: under 1 KB/s for a minute over HTTP. Provision's own environment may say otherwise.
    for (name, value) in [
        ("GIT_HTTP_LOW_SPEED_LIMIT", "1000"),
        ("GIT_HTTP_LOW_SPEED_TIME", "60"),
    ] {
        if std::env::var_os(name).is_none() {
            cmd = cmd.env(name, value);
        }
    }
    cmd
}

/// `git -C dir args…`.
pub fn git_in<I, S>(dir: &Path, args: I, local: bool) -> StepCommand
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut all: Vec<String> = vec!["-C".into(), dir.display().to_string()];
    all.extend(args.into_iter().map(Into::into));
    git(all, local)
}

/// Run and return stdout, trimmed.
pub fn read(cmd: StepCommand, cx: &StepContext<'_>) -> Result<String, CommandError> {
    cmd.read(cx).map(|s| s.trim().to_string())
}

/// A URL that names a repository on this machine.
pub fn is_local(url: &str) -> bool {
    url.starts_with("file://") || url.starts_with('/')
}

/// Append a note from provision itself to the step log.
pub fn note(cx: &StepContext<'_>, message: &str) {
    // 0600, never through a symbolic link.
    let _ = provision_executor::private_file::append(&cx.log, &format!("[provision] {message}\n"));
}
