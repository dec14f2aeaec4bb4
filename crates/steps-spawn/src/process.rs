//! Server processes: who they are (pid, start time, boot and the `PROVISION_INSTANCE` marker
//! in their environment, so a recycled pid is never mistaken for our server), whether they
//! still run, how they exited, and stopping a server with the helpers of its group that carry
//! its marker (SIGTERM, a grace period, SIGKILL), each through a pidfd opened before the check.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use provision_executor::pidfd::{valid_pid, Pidfd};
use provision_plan::outputs::{ServerIdentity, SpawnOutputs};
use provision_plan::StepOutputs;

use crate::identity;

/// How often a stop checks whether the process is gone.
const STOP_POLL: Duration = Duration::from_millis(5);
/// How long to wait for the kernel after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// What `/proc/<pid>/stat` says about a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    /// `R`, `S`, `D`, `Z` (zombie: exited, not reaped), …
    pub state: char,
    pub ppid: u32,
    pub pgrp: u32,
    /// Clock ticks after boot when the process started.
    pub start_time: u64,
}

impl ProcStat {
    pub fn read(pid: u32) -> Option<ProcStat> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) state ppid pgrp session … starttime(22) …`; comm may hold spaces and ')'.
        let rest = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        Some(ProcStat {
            pid,
            state: fields.first()?.chars().next()?,
            ppid: fields.get(1)?.parse().ok()?,
            pgrp: fields.get(2)?.parse().ok()?,
            start_time: fields.get(19)?.parse().ok()?,
        })
    }

    /// Running (a zombie has exited).
    pub fn alive(&self) -> bool {
        self.state != 'Z' && self.state != 'X'
    }
}

/// This boot's id: start times are only comparable within one boot.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// A server process as recorded in the state file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerProcess {
    pub pid: u32,
    /// Its process group (the server leads its own session and group: equal to `pid`).
    pub pgid: u32,
    pub start_time: u64,
    pub boot_id: String,
    /// The `PROVISION_INSTANCE` marker in its environment; `None` in records written before
    /// markers (then only the leader, proven by pid, start time and boot, is ever signalled).
    pub instance: Option<String>,
}

/// Why a recorded process is not running, or not one to signal: gone (it exited, with its
/// status when it was our child), or the pid is another process now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotRunning {
    /// Our child exited, and this is its status.
    #[error("pid {pid} exited with {}", describe_status(*.status))]
    Exited { pid: u32, status: ExitStatus },
    /// It exited, status unknown (not our child, or not reaped yet).
    #[error("pid {pid} has exited")]
    Ended { pid: u32 },
    #[error("pid {pid} is gone")]
    Gone { pid: u32 },
    #[error("pid {pid} was started before the machine rebooted")]
    Rebooted { pid: u32 },
    #[error("pid {pid} is now another process (the server exited and the pid was reused)")]
    Reused { pid: u32 },
    #[error(
        "pid {pid} does not carry {}={marker} in its environment: not the server provision started",
        identity::MARKER_VAR
    )]
    Unmarked { pid: u32, marker: String },
}

impl NotRunning {
    /// It exited or is gone: helpers carrying its marker may remain in its group. Otherwise
    /// the pid is another process now (reused, rebooted, no marker): nothing of it is ours.
    pub fn is_gone(&self) -> bool {
        matches!(
            self,
            NotRunning::Exited { .. } | NotRunning::Ended { .. } | NotRunning::Gone { .. }
        )
    }

    /// The exit status of a server that was our child.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        match self {
            NotRunning::Exited { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl ServerProcess {
    /// The process running now as `pid`, with the marker in its environment, if any.
    pub fn of_pid(pid: u32) -> Option<ServerProcess> {
        let stat = ProcStat::read(pid)?;
        Some(ServerProcess {
            pid,
            pgid: stat.pgrp,
            start_time: stat.start_time,
            boot_id: boot_id(),
            instance: identity::marker_of(pid),
        })
    }

    /// The process a spawn step recorded. `None` when the pid or group is 0 or 1 (never a
    /// server).
    pub fn recorded(identity: &ServerIdentity) -> Option<ServerProcess> {
        let pid = Some(identity.pid).filter(|&p| valid_pid(u64::from(p)))?;
        let pgid = Some(identity.pgid).filter(|&p| valid_pid(u64::from(p)))?;
        Some(ServerProcess {
            pid,
            pgid,
            start_time: identity.start_time,
            boot_id: identity.boot_id.clone(),
            instance: identity.instance.clone().filter(|i| !i.is_empty()),
        })
    }

    /// The process recorded in a step's outputs: a spawn step's; `None` for another kind.
    pub fn from_outputs(outputs: &StepOutputs) -> Option<ServerProcess> {
        Self::recorded(&outputs.get::<SpawnOutputs>()?.server)
    }

    /// The process recorded in a state record's outputs, if any.
    pub fn of_record(outputs: Option<&StepOutputs>) -> Option<ServerProcess> {
        outputs.and_then(Self::from_outputs)
    }

    /// The identity a spawn step records.
    pub fn identity(&self) -> ServerIdentity {
        ServerIdentity {
            pid: self.pid,
            pgid: self.pgid,
            start_time: self.start_time,
            boot_id: self.boot_id.clone(),
            instance: self.instance.clone(),
        }
    }

    /// Is this very process still running? `Err` says why not: gone, exited (with its status
    /// when it was our child), or the pid now belongs to another process.
    pub fn check(&self) -> Result<(), NotRunning> {
        let pid = self.pid;
        if let Some(status) = reap(pid) {
            return Err(NotRunning::Exited { pid, status });
        }
        if !self.boot_id.is_empty() && self.boot_id != boot_id() {
            return Err(NotRunning::Rebooted { pid });
        }
        match ProcStat::read(pid) {
            None => Err(NotRunning::Gone { pid }),
            Some(stat) if stat.start_time != self.start_time => Err(NotRunning::Reused { pid }),
            // It exited between the reap above and this read: reap again for its status.
            Some(stat) if !stat.alive() => Err(match reap_soon(pid) {
                Some(status) => NotRunning::Exited { pid, status },
                None => NotRunning::Ended { pid },
            }),
            Some(_) => match &self.instance {
                Some(m) if !identity::carries(pid, m) => Err(NotRunning::Unmarked {
                    pid,
                    marker: m.clone(),
                }),
                _ => Ok(()),
            },
        }
    }

    pub fn is_running(&self) -> bool {
        self.check().is_ok()
    }
}

/// `exit status 1` or `signal 9 (SIGKILL)`.
pub fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("signal {sig} ({})", signal_name(sig)),
        _ => status.to_string(),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGTERM => "SIGTERM",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGINT => "SIGINT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGHUP => "SIGHUP",
        _ => "signal",
    }
}

/// Children this process started, so their exit status can be read (and zombies reaped).
fn children() -> &'static Mutex<BTreeMap<u32, Child>> {
    static CHILDREN: OnceLock<Mutex<BTreeMap<u32, Child>>> = OnceLock::new();
    CHILDREN.get_or_init(Default::default)
}

/// Exit statuses of children that were reaped, by pid.
fn exited() -> &'static Mutex<BTreeMap<u32, ExitStatus>> {
    static EXITED: OnceLock<Mutex<BTreeMap<u32, ExitStatus>>> = OnceLock::new();
    EXITED.get_or_init(Default::default)
}

/// Keep `child` so that its exit can be observed.
pub fn register(child: Child) {
    let pid = child.id();
    exited().lock().expect("lock").remove(&pid);
    children().lock().expect("lock").insert(pid, child);
}

/// The exit status of a child of ours that has exited (it is reaped); `None` while it runs or
/// when it is not our child.
pub fn reap(pid: u32) -> Option<ExitStatus> {
    if let Some(status) = exited().lock().expect("lock").get(&pid) {
        return Some(*status);
    }
    let mut map = children().lock().expect("lock");
    let child = map.get_mut(&pid)?;
    match child.try_wait() {
        Ok(Some(status)) => {
            map.remove(&pid);
            exited().lock().expect("lock").insert(pid, status);
            Some(status)
        }
        _ => None,
    }
}

/// [`reap`], waiting up to half a second: a multi-threaded process shows as a zombie as soon
/// as its main thread exits, but can be waited for only once every thread has.
fn reap_soon(pid: u32) -> Option<ExitStatus> {
    for _ in 0..100 {
        if let Some(status) = reap(pid) {
            return Some(status);
        }
        if !children().lock().expect("lock").contains_key(&pid) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// Pids whose process group is `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| ProcStat::read(pid).is_some_and(|s| s.pgrp == pgid && s.alive()))
        .collect()
}

/// How a stop went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// It was not running (or the pid belongs to another process now): nothing was signalled.
    NotRunning(String),
    /// It exited after SIGTERM.
    Terminated { after: Duration },
    /// It ignored SIGTERM for the grace period and was killed.
    Killed { grace: Duration },
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stopped::NotRunning(why) => write!(f, "not running ({why})"),
            Stopped::Terminated { after } => {
                write!(f, "stopped by SIGTERM in {} ms", after.as_millis())
            }
            Stopped::Killed { grace } => write!(
                f,
                "killed with SIGKILL: it ignored SIGTERM for {} ms",
                grace.as_millis()
            ),
        }
    }
}

/// Stop a server: SIGTERM, wait up to `grace`, SIGKILL, then SIGKILL for what is left of its
/// group. Only what is proven ours is signalled, each process through a pidfd opened before its
/// check: the leader when pid, start time, boot and marker match; group members only when they
/// carry the leader's marker. A pid that now belongs to another process, or a group whose
/// leader failed the check, is never signalled.
pub fn stop(server: &ServerProcess, grace: Duration) -> Result<Stopped, String> {
    let leader = match open_verified(server)? {
        Ok(fd) => fd,
        Err(why) if why.is_gone() => {
            // The leader is gone; helpers it left in its group, carrying its marker, still go.
            sweep_members(server);
            return Ok(Stopped::NotRunning(why.to_string()));
        }
        Err(why) => return Ok(Stopped::NotRunning(why.to_string())),
    };
    let started = Instant::now();
    if let Err(e) = leader.signal(libc::SIGTERM) {
        if e.raw_os_error() == Some(libc::EPERM) {
            return Err(format!(
                "not permitted to signal pid {} ({e}): it belongs to another user",
                server.pid
            ));
        }
    }
    signal_members(server, libc::SIGTERM);
    let outcome = if wait_gone(server, grace) {
        Stopped::Terminated {
            after: started.elapsed(),
        }
    } else {
        let _ = leader.signal(libc::SIGKILL);
        if !wait_gone(server, KILL_WAIT) {
            return Err(format!(
                "pid {} is still running {} s after SIGKILL (stuck in the kernel?)",
                server.pid,
                KILL_WAIT.as_secs()
            ));
        }
        Stopped::Killed { grace }
    };
    sweep_members(server);
    Ok(outcome)
}

/// SIGKILL what is left of the server's marked group members, and wait (bounded) until they
/// are gone: a helper forked by the server holds what the server held (the copy of its port's
/// reservation), which a restart on the same port takes next.
fn sweep_members(server: &ServerProcess) {
    signal_members(server, libc::SIGKILL);
    let deadline = Instant::now() + KILL_WAIT;
    while !marked_members(server).is_empty() && Instant::now() < deadline {
        thread::sleep(STOP_POLL);
    }
}

/// The running members of the server's process group (not the leader) that carry its marker;
/// none for a record without a marker or a server that does not lead its group.
fn marked_members(server: &ServerProcess) -> Vec<u32> {
    let Some(marker) = server.instance.as_deref() else {
        return Vec::new();
    };
    if server.pgid != server.pid {
        return Vec::new();
    }
    group_members(server.pgid)
        .into_iter()
        .filter(|&pid| pid != server.pid && identity::carries(pid, marker))
        .collect()
}

/// A handle on the recorded process, opened first and then checked, so the check speaks for
/// the very process the handle signals. `Ok(Err)`: not to be signalled, and why; `Err`: no
/// handle could be opened on a process that passed the check (kernel before 5.3).
fn open_verified(server: &ServerProcess) -> Result<Result<Pidfd, NotRunning>, String> {
    let fd = Pidfd::open(server.pid);
    if let Err(m) = server.check() {
        return Ok(Err(m));
    }
    match fd {
        Ok(fd) => Ok(Ok(fd)),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
            Ok(Err(NotRunning::Gone { pid: server.pid }))
        }
        Err(e) => Err(format!(
            "cannot open a pidfd on pid {} ({e}); provision signals servers only through pidfds (Linux 5.3 or later)",
            server.pid
        )),
    }
}

/// Signal the members of the server's process group (not the leader) that carry its marker,
/// each through its own pidfd, checked after the pidfd is open. A record without a marker, or
/// a server that does not lead its group, has no members to signal.
fn signal_members(server: &ServerProcess, sig: i32) {
    let Some(marker) = server.instance.as_deref() else {
        return;
    };
    for pid in marked_members(server) {
        let Ok(fd) = Pidfd::open(pid) else {
            continue;
        };
        let member = ProcStat::read(pid).is_some_and(|s| s.pgrp == server.pgid && s.alive());
        if member && identity::carries(pid, marker) {
            let _ = fd.signal(sig);
        }
    }
}

/// Wait until the process is gone (reaping it when it is our child).
fn wait_gone(server: &ServerProcess, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if !server.is_running() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(STOP_POLL);
    }
}

/// A server left behind without a record (an apply killed between start and record): the pid
/// in `pid_file`, when that process writes its output to `log` (or its rotated `log.1`) and
/// carries no marker but `marker` (the replica's: a process with another marker is another
/// state file's server sharing the runtime dir, its pid file and log; one with none was started
/// before markers existed). `Err` is a warning: the pid file names pid 0, 1 or a negative pid,
/// and is ignored.
pub fn find_by_pid_file(
    pid_file: &Path,
    log: &Path,
    marker: &str,
) -> Result<Option<ServerProcess>, String> {
    use std::io::Read;
    let mut text = String::new();
    let read = std::fs::File::open(pid_file).and_then(|f| f.take(64).read_to_string(&mut text));
    let Ok(pid) = read.map(|_| text.trim().parse::<i64>()) else {
        return Ok(None);
    };
    let Ok(pid) = pid else {
        return Ok(None);
    };
    if !u64::try_from(pid).is_ok_and(valid_pid) {
        return Err(format!(
            "ignored the pid file {}: it names pid {pid}, which no server provision starts can have",
            pid_file.display()
        ));
    }
    let pid = pid as u32;
    let Ok(out) = std::fs::metadata(format!("/proc/{pid}/fd/1")) else {
        return Ok(None);
    };
    let same =
        |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.dev() == out.dev() && m.ino() == out.ino());
    if same(log) || same(&rotated(log)) {
        Ok(ServerProcess::of_pid(pid)
            .filter(|p| ProcStat::read(p.pid).is_some_and(|s| s.alive()))
            .filter(|p| p.instance.as_deref().is_none_or(|m| m == marker)))
    } else {
        Ok(None)
    }
}

/// `<log>.1`: the previous run's log.
pub fn rotated(log: &Path) -> std::path::PathBuf {
    let mut name = log
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".1");
    log.with_file_name(name)
}
