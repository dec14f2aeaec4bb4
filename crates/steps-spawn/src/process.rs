//! Server processes: who they are (pid plus start time plus boot, so a recycled pid is never
//! mistaken for our server), whether they still run, how they exited, and stopping a whole
//! process group (SIGTERM, a grace period, SIGKILL).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use provision_executor::Outputs;

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
}

impl ServerProcess {
    /// The process running now as `pid`.
    pub fn of_pid(pid: u32) -> Option<ServerProcess> {
        let stat = ProcStat::read(pid)?;
        Some(ServerProcess {
            pid,
            pgid: stat.pgrp,
            start_time: stat.start_time,
            boot_id: boot_id(),
        })
    }

    /// The process recorded in a spawn step's outputs (`pid`, `pgid`, `start_time`, `boot_id`).
    pub fn from_outputs(outputs: &Outputs) -> Option<ServerProcess> {
        let num = |k: &str| outputs.get(k).and_then(Value::as_u64);
        Some(ServerProcess {
            pid: u32::try_from(num("pid")?).ok()?,
            pgid: num("pgid").and_then(|p| u32::try_from(p).ok())?,
            start_time: num("start_time")?,
            boot_id: outputs
                .get("boot_id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        })
    }

    /// The identity outputs of a spawn step.
    pub fn to_outputs(&self, outputs: &mut Outputs) {
        outputs.insert("pid".into(), json!(self.pid));
        outputs.insert("pgid".into(), json!(self.pgid));
        outputs.insert("start_time".into(), json!(self.start_time));
        outputs.insert("boot_id".into(), json!(self.boot_id));
    }

    /// Is this very process still running? `Err` says why not: gone, exited (with its status
    /// when it was our child), or the pid now belongs to another process.
    pub fn check(&self) -> Result<(), String> {
        let exited_with =
            |status| format!("pid {} exited with {}", self.pid, describe_status(status));
        if let Some(status) = reap(self.pid) {
            return Err(exited_with(status));
        }
        if !self.boot_id.is_empty() && self.boot_id != boot_id() {
            return Err(format!(
                "pid {} was started before the machine rebooted",
                self.pid
            ));
        }
        match ProcStat::read(self.pid) {
            None => Err(format!("pid {} is gone", self.pid)),
            Some(stat) if stat.start_time != self.start_time => Err(format!(
                "pid {} is now another process (the server exited and the pid was reused)",
                self.pid
            )),
            // It exited between the reap above and this read: reap again for its status.
            Some(stat) if !stat.alive() => Err(match reap(self.pid) {
                Some(status) => exited_with(status),
                None => format!("pid {} has exited", self.pid),
            }),
            Some(_) => Ok(()),
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

/// Pids whose process group is `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| ProcStat::read(pid).is_some_and(|s| s.pgrp == pgid && s.alive()))
        .collect()
}

fn signal(target: i32, sig: i32) -> Result<(), std::io::Error> {
    // SAFETY: kill(2) sends a signal; no memory is shared with the target.
    if unsafe { libc::kill(target, sig) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
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

/// Stop a server and its whole process group: SIGTERM, wait up to `grace`, SIGKILL. A pid
/// that now belongs to another process is never signalled.
pub fn stop(server: &ServerProcess, grace: Duration) -> Result<Stopped, String> {
    if let Err(why) = server.check() {
        // The leader is gone; helpers it left in its group still go.
        sweep_group(server);
        return Ok(Stopped::NotRunning(why));
    }
    let target = if server.pgid == server.pid {
        -(server.pid as i32)
    } else {
        server.pid as i32
    };
    let started = Instant::now();
    if let Err(e) = signal(target, libc::SIGTERM) {
        if e.raw_os_error() == Some(libc::EPERM) {
            return Err(format!(
                "not permitted to signal pid {} ({e}): it belongs to another user",
                server.pid
            ));
        }
    }
    let outcome = if wait_gone(server, grace) {
        Stopped::Terminated {
            after: started.elapsed(),
        }
    } else {
        let _ = signal(target, libc::SIGKILL);
        if !wait_gone(server, KILL_WAIT) {
            return Err(format!(
                "pid {} is still running {} s after SIGKILL (stuck in the kernel?)",
                server.pid,
                KILL_WAIT.as_secs()
            ));
        }
        Stopped::Killed { grace }
    };
    sweep_group(server);
    Ok(outcome)
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

/// Kill what is left in the server's process group once the leader is gone. A group id cannot
/// be taken by anyone else while members remain, so this never hits a stranger.
fn sweep_group(server: &ServerProcess) {
    if server.pgid != server.pid {
        return;
    }
    if !group_members(server.pgid).is_empty() {
        let _ = signal(-(server.pgid as i32), libc::SIGKILL);
    }
}

/// A server left behind without a record (an apply killed between start and record): the pid
/// in `pid_file`, when that process writes its output to `log` (or its rotated `log.1`).
pub fn find_by_pid_file(pid_file: &Path, log: &Path) -> Option<ServerProcess> {
    let pid: u32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let out = std::fs::metadata(format!("/proc/{pid}/fd/1")).ok()?;
    let same =
        |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.dev() == out.dev() && m.ino() == out.ino());
    if same(log) || same(&rotated(log)) {
        ServerProcess::of_pid(pid).filter(|p| ProcStat::read(p.pid).is_some_and(|s| s.alive()))
    } else {
        None
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
