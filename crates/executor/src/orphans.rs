//! Commands left running by an apply that was killed (`kill -9`): a step's command runs in its
//! own process group, so it outlives a killed provision; so do the jobs a build tool runs in
//! groups or sessions of their own (ninja does).
//!
//! Before a step's command is started, a record is written beside the step's log
//! (`<step>.log.token`, 0600, never through a link) naming a fresh random token, and the
//! command gets the token in its environment (`PROVISION_STEP_TOKEN`). Every process it starts
//! inherits it, whatever group or session it runs in. So there is no moment at which a command
//! runs and no record names it. The record is removed when the command has finished.
//!
//! The next apply, holding the lock (so the old one is surely dead), reaps: every process of
//! this user whose environment carries a recorded token gets SIGTERM (ninja then stops its
//! jobs), then SIGKILL after a grace, in rounds until none is left. Nothing without a recorded
//! token is signalled. Each process is signalled through a pidfd opened *before* its
//! environment is checked, so a pid reused after the check is never hit: the handle still
//! names the process that was checked.

use std::collections::BTreeSet;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::pidfd::{valid_pid, Pidfd};

/// The environment variable that carries a step command's token to all its descendants.
pub const TOKEN_VAR: &str = "PROVISION_STEP_TOKEN";

/// Records are `<step>.log.token`.
const RECORD_EXT: &str = "token";

/// Records of earlier versions (`pid start boot` of the group leader, written after the
/// spawn): removed, never acted on.
const LEGACY_EXT: &str = "pgid";

/// Hex digits of a token (128 bits).
const TOKEN_LEN: usize = 32;

/// The largest `environ` read: a larger environment is not searched past this.
const ENVIRON_CAP: u64 = 1 << 20;

/// How long processes have after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(2);

/// How long killed processes have to be gone before the next round looks again.
const KILL_WAIT: Duration = Duration::from_secs(1);

/// SIGKILL rounds at most: a process forked between a look and its signal is found by the next.
const ROUNDS: usize = 20;

/// The record of the command of the step whose log is `log`.
pub fn record_path(log: &Path) -> PathBuf {
    let mut name = log
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".");
    name.push(RECORD_EXT);
    log.with_file_name(name)
}

/// A fresh token: 128 bits from the kernel's random source, mixed with what makes this call
/// unique (process, time, a counter, the log) so that two tokens never collide even without it.
fn new_token(log: &Path) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut random = [0u8; 16];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut random));
    let mut hash = Sha256::new();
    hash.update(random);
    hash.update(std::process::id().to_le_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    hash.update(now.as_nanos().to_le_bytes());
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    hash.update(n.to_le_bytes());
    hash.update(log.as_os_str().as_encoded_bytes());
    hash.finalize()[..TOKEN_LEN / 2]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Record that a command is about to run for the step whose log is `log`; returns the token to
/// put in its environment ([`TOKEN_VAR`]). Call before the command is started.
pub fn register(log: &Path) -> io::Result<String> {
    let token = new_token(log);
    // Written anew (0600, a link at the name replaced, never followed; a newline added).
    crate::state::write_atomic(
        &record_path(log),
        token.as_bytes(),
        crate::state::Durability::NoSync,
    )?;
    Ok(token)
}

/// The command of the step whose log is `log` finished.
pub fn unregister(log: &Path) {
    let _ = std::fs::remove_file(record_path(log));
}

/// A record's token: exactly one line of 32 lowercase hex digits; `None` for anything else.
fn parse(text: &str) -> Option<String> {
    let token = text.strip_suffix('\n').unwrap_or(text);
    let hex = token.len() == TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    hex.then(|| token.to_string())
}

/// Stop every process carrying a token recorded under `dir`, then remove the records (and
/// those of earlier versions, unread). Returns what was stopped, as `pid (record)`.
pub fn reap(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut records = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        match path.extension().and_then(|e| e.to_str()) {
            Some(RECORD_EXT) => {
                let text = read_record(&path).unwrap_or_default();
                records.push((path, parse(&text)));
            }
            Some(LEGACY_EXT) => {
                let _ = std::fs::remove_file(&path);
            }
            _ => {}
        }
    }
    let tokens: Vec<String> = records.iter().filter_map(|(_, t)| t.clone()).collect();
    let stopped = stop(&tokens);
    let mut report = Vec::new();
    for (path, token) in &records {
        for (pid, t) in &stopped {
            if Some(t) == token.as_ref() {
                report.push(format!("{pid} ({})", path.display()));
            }
        }
        let _ = std::fs::remove_file(path);
    }
    report
}

/// A record's text: a small regular file, read without following a link.
fn read_record(path: &Path) -> io::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let mut text = String::new();
    file.take(256).read_to_string(&mut text)?;
    Ok(text)
}

/// Stop every process of this user that carries one of `tokens`: SIGTERM, then SIGKILL after
/// [`GRACE`] to whatever carries one still, in rounds until none is left. Returns each process
/// signalled with its token.
pub fn stop(tokens: &[String]) -> Vec<(u32, String)> {
    let tokens: BTreeSet<&str> = tokens.iter().map(String::as_str).collect();
    let mut signalled: Vec<(u32, String)> = Vec::new();
    if tokens.is_empty() {
        return signalled;
    }
    let first = carriers(&tokens);
    for c in &first {
        let _ = c.handle.signal(libc::SIGTERM);
    }
    await_gone(&first, GRACE);
    signalled.extend(first.iter().map(|c| (c.pid, c.token.clone())));
    // Rounds of SIGKILL; done after two looks in a row find nothing (a process caught in
    // `execve` may show no environment for an instant).
    let mut empty_looks = 0;
    for _ in 0..ROUNDS {
        let left = carriers(&tokens);
        if left.is_empty() {
            empty_looks += 1;
            if empty_looks == 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        empty_looks = 0;
        for c in &left {
            let _ = c.handle.signal(libc::SIGKILL);
            if !signalled.iter().any(|(pid, _)| *pid == c.pid) {
                signalled.push((c.pid, c.token.clone()));
            }
        }
        await_gone(&left, KILL_WAIT);
    }
    signalled
}

/// A process found carrying a token, with a handle opened before the check.
struct Carrier {
    handle: Pidfd,
    pid: u32,
    start: u64,
    token: String,
}

/// Processes of this user (not this one) whose environment carries one of `tokens`.
fn carriers(tokens: &BTreeSet<&str>) -> Vec<Carrier> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    // SAFETY: geteuid(2) cannot fail.
    let me = unsafe { libc::geteuid() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| valid_pid(u64::from(pid)) && pid != std::process::id())
        // Only this user's processes: provision never signals another user's.
        .filter(|&pid| std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == me))
        .filter(|&pid| token_of(pid).is_some_and(|t| tokens.contains(t.as_str())))
        .filter_map(|pid| {
            // The handle first, then the check: the check speaks for the process it signals.
            let handle = Pidfd::open(pid).ok()?;
            let token = token_of(pid).filter(|t| tokens.contains(t.as_str()))?;
            let start = start_time(pid).filter(|_| running(pid))?;
            Some(Carrier {
                handle,
                pid,
                start,
                token,
            })
        })
        .collect()
}

/// The token in the environment of process `pid` (`None`: none, unreadable, or gone).
pub fn token_of(pid: u32) -> Option<String> {
    let file = std::fs::File::open(format!("/proc/{pid}/environ")).ok()?;
    let mut bytes = Vec::new();
    file.take(ENVIRON_CAP).read_to_end(&mut bytes).ok()?;
    let prefix = format!("{TOKEN_VAR}=");
    bytes
        .split(|&b| b == 0)
        .find_map(|e| e.strip_prefix(prefix.as_bytes()))
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_string)
}

/// Wait (at most `bound`) until every one of `carriers` has exited.
fn await_gone(carriers: &[Carrier], bound: Duration) {
    let deadline = Instant::now() + bound;
    let alive = |c: &Carrier| running(c.pid) && start_time(c.pid) == Some(c.start);
    while carriers.iter().any(alive) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The start time of a process (clock ticks since boot), from `/proc/<pid>/stat`.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The process exists and has not exited (a zombie has).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 1..].trim_start().chars().next()))
        .flatten()
        .is_some_and(|state| state != 'Z' && state != 'X')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    /// A `sleep 30` in a session of its own, carrying `token` (or none).
    fn sleeper(token: Option<&str>) -> std::process::Child {
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("30").env_remove(TOKEN_VAR);
        if let Some(t) = token {
            cmd.env(TOKEN_VAR, t);
        }
        // SAFETY: setsid(2) in the child before exec; async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while token.is_some() && token_of(child.id()).as_deref() != token {
            assert!(Instant::now() < deadline, "the token never showed");
            std::thread::sleep(Duration::from_millis(5));
        }
        child
    }

    fn exited(child: &mut std::process::Child) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if child.try_wait().unwrap().is_some() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_process_carrying_a_recorded_token_is_stopped_and_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("step.log");
        let token = register(&log).unwrap();
        assert_eq!(
            std::fs::read_to_string(record_path(&log)).unwrap(),
            format!("{token}\n")
        );
        // No pid of it is recorded anywhere: the token finds it.
        let mut ours = sleeper(Some(&token));
        let mut other = sleeper(Some(&new_token(&log)));
        let longer = format!("{token}0");
        let mut prefixed = sleeper(Some(&longer));
        let mut none = sleeper(None);
        let stopped = reap(dir.path());
        assert_eq!(stopped.len(), 1, "{stopped:?}");
        assert!(
            stopped[0].starts_with(&format!("{} (", ours.id())),
            "{stopped:?}"
        );
        assert!(exited(&mut ours));
        for c in [&mut other, &mut prefixed, &mut none] {
            assert!(c.try_wait().unwrap().is_none(), "only the token's process");
            c.kill().unwrap();
            c.wait().unwrap();
        }
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "the record is removed"
        );
    }

    #[test]
    fn a_record_that_is_not_a_token_and_a_legacy_record_signal_nothing_and_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = sleeper(None);
        let pid = child.id();
        let start = start_time(pid).unwrap();
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
        // What an earlier version wrote: pid, start time, boot of a group leader.
        std::fs::write(
            dir.path().join("a.log.pgid"),
            format!("{pid} {start} {}", boot.trim()),
        )
        .unwrap();
        std::fs::write(dir.path().join("b.log.token"), format!("{pid}\n")).unwrap();
        std::fs::write(dir.path().join("c.log.token"), "").unwrap();
        assert!(reap(dir.path()).is_empty());
        assert!(child.try_wait().unwrap().is_none(), "nothing was signalled");
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn only_a_token_of_32_hex_digits_is_read_from_a_record() {
        let good = "0123456789abcdef0123456789abcdef";
        assert_eq!(parse(&format!("{good}\n")).as_deref(), Some(good));
        assert_eq!(parse(good).as_deref(), Some(good));
        for bad in [
            "",
            "\n",
            "0123456789ABCDEF0123456789ABCDEF\n",
            "0123456789abcdef0123456789abcde\n",
            "0123456789abcdef0123456789abcdef0\n",
            "0123456789abcdef0123456789abcdef\n\n",
            "12 5 boot\n",
            " 0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn tokens_are_fresh_and_well_formed() {
        let log = Path::new("/x/step.log");
        let (a, b) = (new_token(log), new_token(log));
        assert_ne!(a, b);
        assert_eq!(parse(&a).as_deref(), Some(a.as_str()));
    }

    #[test]
    fn stopping_no_tokens_signals_nothing() {
        assert!(stop(&[]).is_empty());
        assert!(reap(Path::new("/nonexistent/provision/logs")).is_empty());
    }
}
