//! Ports: is one free, the first free one from a base, and who holds a taken one
//! (the listening socket's inode from the kernel's sock_diag, else `/proc/net/tcp{,6}`;
//! `/proc/*/fd` for its owner).
//!
//! A port handed to a replica is reserved host-wide ([`crate::port_reservation`]) from its
//! choice until its server exits: this process holds the reservation until the probe sees the
//! replica's own server listen on it (or the spawn or the probe fails), and the server holds
//! the copy it inherited ([`inheritable`]) for as long as it runs. So two provisions on one
//! host never choose the same port for servers that have not bound yet, and neither does an
//! apply that follows a killed one while the killed one's servers are still loading: a kept
//! server's port is skipped by the auto choice, and a replica restarted on its previous port
//! gets it back once its old server (and any helper of it) has exited.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener, ToSocketAddrs};
use std::sync::{Mutex, OnceLock};

use crate::port_reservation::{self, Reservation};
use crate::sock_diag::Listener;

/// Ports handed to replicas by this process and not released, with their host-wide
/// reservation (`None` where abstract sockets are unavailable: this process only).
fn reserved() -> &'static Mutex<BTreeMap<u16, Option<Reservation>>> {
    static RESERVED: OnceLock<Mutex<BTreeMap<u16, Option<Reservation>>>> = OnceLock::new();
    RESERVED.get_or_init(Default::default)
}

/// Hand back this process's hold on `port`: its server listens on it, or failed to start.
/// The server's own copy of the reservation stays until it exits; a previous port is reserved
/// anew, like any other.
pub fn release(port: u16) {
    reserved().lock().expect("lock").remove(&port);
}

/// A copy of this process's host-wide reservation of `port` (reserved and not yet released),
/// for the server about to start there to inherit, so the reservation lasts as long as the
/// server does. Close-on-exec, like every descriptor here: only the child that clears the flag
/// on this very copy keeps it across exec. `None` where no host-wide reservation is held.
pub fn inheritable(port: u16) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::AsFd;
    let taken = reserved().lock().expect("lock");
    let reservation = taken.get(&port)?.as_ref()?;
    reservation.as_fd().try_clone_to_owned().ok()
}

/// The host-wide reservation of `port`: `None` when another process holds it.
fn reserve_host_wide(port: u16) -> Option<Option<Reservation>> {
    match port_reservation::try_reserve(port) {
        Ok(Some(r)) => Some(Some(r)),
        Ok(None) => None,
        // No abstract sockets here (a sandbox): the listener ownership check still keeps a
        // port taken by someone else from being handed off.
        Err(_) => Some(None),
    }
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

/// Take `port` for a replica when it is free and not reserved already (by this process or by
/// any other provision on the host).
pub fn reserve(host: &str, port: u16) -> bool {
    let mut taken = reserved().lock().expect("lock");
    if taken.contains_key(&port) {
        return false;
    }
    // Reserved first, then tested: no other provision can pass the test meanwhile.
    let Some(reservation) = reserve_host_wide(port) else {
        return false;
    };
    if !is_free(host, port) {
        return false;
    }
    taken.insert(port, reservation);
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
        if reserve(host, p) {
            return Some(p);
        }
    }
    (base..=u16::MAX)
        .filter(|p| !excluded.contains(p))
        .find(|&p| reserve(host, p))
}

/// Inodes of sockets listening on `port` (any address, IPv4 or IPv6).
fn listening_inodes(port: u16) -> Vec<u64> {
    listeners_on(port)
        .unwrap_or_default()
        .into_iter()
        .map(|l| l.inode)
        .collect()
}

/// The sockets listening on `port` (any address, IPv4 or IPv6): from sock_diag, which costs
/// microseconds; `/proc/net/tcp{,6}` (milliseconds of kernel time per read) only when netlink
/// is unavailable; `None` when neither can be read.
pub(crate) fn listeners_on(port: u16) -> Option<Vec<Listener>> {
    let all = crate::sock_diag::listeners().or_else(proc_listeners)?;
    Some(all.into_iter().filter(|l| l.port == port).collect())
}

/// [`listeners_on`] from `/proc/net/tcp{,6}`, every port.
fn proc_listeners() -> Option<Vec<Listener>> {
    let mut out = Vec::new();
    let mut read_any = false;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        read_any = true;
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(local), Some(st), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let Some((addr, port)) = local.rsplit_once(':') else {
                continue;
            };
            let (Some(addr), Ok(port), Ok(inode)) = (
                proc_addr(addr),
                u16::from_str_radix(port, 16),
                inode.parse(),
            ) else {
                continue;
            };
            if *st == "0A" {
                out.push(Listener { addr, port, inode });
            }
        }
    }
    read_any.then_some(out)
}

/// An address of `/proc/net/tcp{,6}`: 32-bit words in hex, each in host byte order.
fn proc_addr(hex: &str) -> Option<IpAddr> {
    let words: Vec<[u8; 4]> = (0..hex.len() / 8)
        .map(|i| {
            let w = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
            Some(w.to_ne_bytes())
        })
        .collect::<Option<_>>()?;
    match (hex.len(), words.as_slice()) {
        (8, [w]) => Some(IpAddr::V4(Ipv4Addr::from(*w))),
        (32, ws) => {
            let bytes: Vec<u8> = ws.iter().flatten().copied().collect();
            let b: [u8; 16] = bytes.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

/// [`listening_inodes`] from `/proc/net/tcp{,6}`.
#[cfg(test)]
fn proc_listening_inodes(port: u16) -> Vec<u64> {
    proc_listeners()
        .unwrap_or_default()
        .into_iter()
        .filter(|l| l.port == port)
        .map(|l| l.inode)
        .collect()
}

/// The process listening on `port`, when it can be found (other users' processes may be
/// hidden from us).
pub fn holder(port: u16) -> Option<Holder> {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return None;
    }
    socket_owner(&inodes)
}

/// The first process with one of the sockets `inodes` among its fds (`/proc/*/fd`).
pub fn socket_owner(inodes: &[u64]) -> Option<Holder> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if socket_inodes(pid).iter().any(|i| inodes.contains(i)) {
            return Some(Holder {
                pid,
                command: command_line(pid),
            });
        }
    }
    None
}

/// The inodes of the sockets among `pid`'s fds (empty when they cannot be read).
pub fn socket_inodes(pid: u32) -> BTreeSet<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return BTreeSet::new();
    };
    fds.flatten()
        .filter_map(|fd| {
            let target = std::fs::read_link(fd.path()).ok()?;
            let text = target.to_str()?;
            text.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// Who holds `port` (its listener, else its host-wide reservation), for an error message.
pub fn describe_holder(port: u16) -> String {
    if let Some(h) = holder(port) {
        return format!("by {h}");
    }
    if reserved().lock().expect("lock").contains_key(&port) {
        return "by another replica of this apply, which is starting on it".into();
    }
    match port_reservation::holder(port) {
        Some(h) => format!(
            "by {h}, which holds its reservation (a server still loading, or the provision starting one)"
        ),
        None => {
            "(the holder is not visible: another user's process, or a server still starting)".into()
        }
    }
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
        // Addresses too, IPv4 and IPv6 (the tables print each 32-bit word in host order).
        let v6 = TcpListener::bind("[::1]:0").ok();
        let ports = [
            Some(port),
            v6.as_ref().map(|l| l.local_addr().unwrap().port()),
        ];
        for p in ports.into_iter().flatten() {
            let mut diag = listeners_on(p).unwrap();
            let mut proc: Vec<Listener> = proc_listeners()
                .unwrap()
                .into_iter()
                .filter(|l| l.port == p)
                .collect();
            diag.sort();
            proc.sort();
            assert_eq!(diag, proc);
            assert_eq!(diag.len(), 1);
        }
        assert_eq!(listeners_on(port).unwrap()[0].addr, Ipv4Addr::LOCALHOST);
        if let Some(v6) = &v6 {
            let p = v6.local_addr().unwrap().port();
            assert_eq!(listeners_on(p).unwrap()[0].addr, Ipv6Addr::LOCALHOST);
        }
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

    /// A `sleep` that holds the host-wide reservation of `port` (the abstract Unix socket
    /// `\0provision-port-<port>`, bound before it execs), as another provision would.
    fn another_process_reserving(port: u16) -> std::process::Child {
        use std::os::unix::process::CommandExt;
        let name = format!("provision-port-{port}");
        // SAFETY: an all-zero sockaddr_un is valid.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (i, b) in name.bytes().enumerate() {
            addr.sun_path[i + 1] = b as libc::c_char;
        }
        let len = (std::mem::size_of::<libc::sa_family_t>() + 1 + name.len()) as libc::socklen_t;
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("600");
        // SAFETY: socket(2) and bind(2) are async-signal-safe; `addr` was built before fork.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                if fd < 0 || libc::bind(fd, (&addr as *const libc::sockaddr_un).cast(), len) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.spawn().expect("sleep holding the reservation")
    }

    #[test]
    fn a_port_reserved_by_another_process_is_skipped_and_its_holder_named() {
        let base = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut other = another_process_reserving(base);
        // Not listening yet, but reserved by someone else: neither the auto choice nor a fixed
        // port takes it.
        let got = reserve_auto("127.0.0.1", base, None, &BTreeSet::new());
        let fixed = reserve("127.0.0.1", base);
        let named = describe_holder(base);
        let _ = other.kill();
        let _ = other.wait();
        if let Some(p) = got {
            release(p);
        }
        assert!(got.is_some_and(|p| p != base), "{got:?} from {base}");
        assert!(!fixed, "a fixed port is refused");
        assert!(
            named.contains(&format!("pid {}", other.id())) && named.contains("sleep 600"),
            "{named}"
        );
        // Its holder gone, the kernel freed the reservation: no files, no cleanup.
        assert!(reserve("127.0.0.1", base));
        release(base);
    }

    #[test]
    fn a_port_another_replica_of_this_apply_reserved_is_not_taken_as_a_previous_port() {
        let base = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Replica 1 chose `base`; its server has not bound yet. Replica 0 had `base` last time.
        assert!(reserve("127.0.0.1", base));
        let got = reserve_auto("127.0.0.1", base, Some(base), &BTreeSet::new());
        if let Some(p) = got {
            release(p);
        }
        release(base);
        assert!(got.is_some_and(|p| p != base), "{got:?}: both on {base}");
    }
}
