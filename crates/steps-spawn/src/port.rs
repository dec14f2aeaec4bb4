//! Ports: is one free, the first free one from a base, and who holds a taken one
//! (the listening socket's inode from the kernel's sock_diag, else `/proc/net/tcp{,6}`;
//! `/proc/*/fd` for its owner).

use std::collections::BTreeSet;
use std::net::{TcpListener, ToSocketAddrs};
use std::sync::{Mutex, OnceLock};

/// Ports handed to replicas by this process and not released: two replicas spawning at once
/// never get the same auto port.
fn reserved() -> &'static Mutex<BTreeSet<u16>> {
    static RESERVED: OnceLock<Mutex<BTreeSet<u16>>> = OnceLock::new();
    RESERVED.get_or_init(Default::default)
}

/// Hand `port` back (its replica stopped).
pub fn release(port: u16) {
    reserved().lock().expect("lock").remove(&port);
}

/// Who listens on a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// The command line, shortened.
    pub command: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} (`{}`)", self.pid, self.command)
    }
}

/// Can a server bind `host:port` now?
pub fn is_free(host: &str, port: u16) -> bool {
    if !listening_inodes(port).is_empty() {
        return false;
    }
    let Ok(addrs) = (host, port).to_socket_addrs() else {
        return false;
    };
    let addrs: Vec<_> = addrs.collect();
    !addrs.is_empty() && addrs.iter().all(|a| TcpListener::bind(a).is_ok())
}

/// Take `port` for a replica when it is free and not handed out already.
pub fn reserve(host: &str, port: u16) -> bool {
    let mut taken = reserved().lock().expect("lock");
    if taken.contains(&port) || !is_free(host, port) {
        return false;
    }
    taken.insert(port);
    true
}

/// Take back the port this replica had (reserved by it, or by nobody) when it is free again.
pub fn reclaim(host: &str, port: u16) -> bool {
    let mut taken = reserved().lock().expect("lock");
    if !is_free(host, port) {
        return false;
    }
    taken.insert(port);
    true
}

/// Take the first free port from `base`, skipping `excluded` (ports other replicas are
/// configured with), trying `preferred` first (the port this replica had last time).
pub fn reserve_auto(
    host: &str,
    base: u16,
    preferred: Option<u16>,
    excluded: &BTreeSet<u16>,
) -> Option<u16> {
    if let Some(p) = preferred.filter(|p| *p >= base && !excluded.contains(p)) {
        if reclaim(host, p) {
            return Some(p);
        }
    }
    (base..=u16::MAX)
        .filter(|p| !excluded.contains(p))
        .find(|&p| reserve(host, p))
}

/// Inodes of sockets listening on `port` (any address, IPv4 or IPv6): from sock_diag, which
/// costs microseconds; `/proc/net/tcp{,6}` (milliseconds of kernel time per read) only when
/// netlink is unavailable.
fn listening_inodes(port: u16) -> Vec<u64> {
    match crate::sock_diag::listeners() {
        Some(all) => all
            .into_iter()
            .filter(|l| l.port == port)
            .map(|l| l.inode)
            .collect(),
        None => proc_listening_inodes(port),
    }
}

/// [`listening_inodes`] from `/proc/net/tcp{,6}`.
fn proc_listening_inodes(port: u16) -> Vec<u64> {
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(local), Some(st), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let Some(p) = local.rsplit(':').next() else {
                continue;
            };
            if *st == "0A" && u16::from_str_radix(p, 16) == Ok(port) {
                if let Ok(i) = inode.parse() {
                    out.push(i);
                }
            }
        }
    }
    out
}

/// The process listening on `port`, when it can be found (other users' processes may be
/// hidden from us).
pub fn holder(port: u16) -> Option<Holder> {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if wanted.iter().any(|w| target.as_os_str() == w.as_str()) {
                return Some(Holder {
                    pid,
                    command: command_line(pid),
                });
            }
        }
    }
    None
}

/// `/proc/<pid>/cmdline` as text, at most 120 characters.
pub fn command_line(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut text: String = String::from_utf8_lossy(&raw)
        .split('\0')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if text.chars().count() > 120 {
        text = text.chars().take(117).collect::<String>() + "...";
    }
    if text.is_empty() {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into())
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_names_its_holder_and_is_skipped() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(!is_free("127.0.0.1", port));
        let h = holder(port).expect("we hold it");
        assert_eq!(h.pid, std::process::id());
        assert!(!h.command.is_empty());
        let got = reserve_auto("127.0.0.1", port, None, &BTreeSet::new()).unwrap();
        assert!(got > port, "{got}");
        // Reserved now: a second replica gets another one.
        let again = reserve_auto("127.0.0.1", got, None, &BTreeSet::new()).unwrap();
        assert_ne!(again, got);
        release(got);
        release(again);
        drop(l);
        assert!(holder(port).is_none());
    }

    #[test]
    fn sock_diag_and_proc_net_tcp_agree_on_a_listener() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let from_proc = proc_listening_inodes(port);
        assert_eq!(from_proc.len(), 1, "{from_proc:?}");
        assert_eq!(listening_inodes(port), from_proc);
        drop(l);
        assert!(listening_inodes(port).is_empty());
        assert!(proc_listening_inodes(port).is_empty());
    }

    #[test]
    fn excluded_ports_are_skipped_and_the_previous_port_is_preferred() {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = probe.local_addr().unwrap().port();
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let previous = other.local_addr().unwrap().port();
        drop(probe);
        drop(other);
        let excluded: BTreeSet<u16> = [base].into();
        let got = reserve_auto("127.0.0.1", base, None, &excluded).unwrap();
        assert!(got > base, "the excluded base is skipped: {got}");
        release(got);
        let low = base.min(previous);
        let pref = reserve_auto("127.0.0.1", low, Some(previous), &BTreeSet::new()).unwrap();
        release(pref);
        assert_eq!(pref, previous, "the previous port comes first when free");
    }
}
