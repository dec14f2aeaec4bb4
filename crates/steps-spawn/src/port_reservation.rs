//! The host-wide reservation of a port, from the moment a provision chooses it until the
//! server it starts there exits: the abstract Unix stream socket `\0provision-port-<port>` (the
//! namespace of abstract names is per socket type: every provision binds a `SOCK_STREAM` one;
//! `ss -xlp | grep provision-port` shows who holds which).
//!
//! Binding that name is the reservation: a second bind, by any process of any user on the host,
//! fails with `EADDRINUSE`, so two provisions (other runtime dirs, other users) never choose the
//! same port for servers that have not bound yet. The socket is held by the provision that
//! chose the port and, from its start, by the server itself: spawn hands the server a copy of
//! the socket (its only inherited descriptor besides stdio), so the reservation outlives the
//! apply that made it (killed or done) for as long as the server runs: a server still loading
//! keeps its port from other replicas and other projects. The kernel releases the name when the
//! last copy is closed, i.e. when the server (and any helper it forked) has exited, even by
//! SIGKILL: no file, no lock file, nothing to clean up. Abstract names are per network
//! namespace, exactly like the TCP ports they stand for.
//!
//! Any process can bind such a name: one that squats on it only makes provision skip that port
//! (or refuse a fixed one, naming the holder); it cannot make provision hand off its server.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};

use crate::port::{socket_owner, Holder};

/// The reservation of one port, held while this value (or a copy of its socket, in a server
/// that inherited it) lives.
#[derive(Debug)]
pub struct Reservation {
    socket: UnixListener,
}

impl AsFd for Reservation {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// The abstract socket name (without the leading NUL) that reserves `port`.
pub fn name(port: u16) -> String {
    format!("provision-port-{port}")
}

/// Reserve `port` host-wide: `Ok(None)` when another process (or another reservation of this
/// one) holds it; `Err` when abstract sockets cannot be used here.
pub fn try_reserve(port: u16) -> io::Result<Option<Reservation>> {
    let addr = SocketAddr::from_abstract_name(name(port).as_bytes())?;
    match UnixListener::bind_addr(&addr) {
        Ok(socket) => Ok(Some(Reservation { socket })),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Ok(None),
        Err(e) => Err(e),
    }
}

/// The process holding the reservation of `port`, when it can be seen (`/proc/net/unix` names
/// the socket; `/proc/*/fd` its owner; other users' processes may be hidden).
pub fn holder(port: u16) -> Option<Holder> {
    let text = std::fs::read_to_string("/proc/net/unix").ok()?;
    let inodes = inodes_named(&text, &format!("@{}", name(port)));
    if inodes.is_empty() {
        return None;
    }
    socket_owner(&inodes)
}

/// The inodes of the sockets in `/proc/net/unix` text whose path is `path`.
fn inodes_named(text: &str, path: &str) -> Vec<u64> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            // Num RefCount Protocol Flags Type St Inode Path
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.get(7) == Some(&path)).then(|| f.get(6)?.parse().ok())?
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port nobody else is likely to reserve while the test runs.
    fn some_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[test]
    fn a_reservation_is_exclusive_named_and_released_when_dropped() {
        let port = some_port();
        let held = try_reserve(port).unwrap().expect("free");
        assert!(try_reserve(port).unwrap().is_none(), "held: not twice");
        let h = holder(port).expect("our own reservation is visible");
        assert_eq!(h.pid, std::process::id());
        drop(held);
        assert!(holder(port).is_none());
        assert!(try_reserve(port).unwrap().is_some(), "released");
    }

    #[test]
    fn proc_net_unix_lines_are_matched_by_exact_name() {
        let text = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000000000000: 00000002 00000000 00000000 0002 01 4242 @provision-port-8080\n\
            0000000000000000: 00000002 00000000 00000000 0002 01 4343 @provision-port-80800\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 4444 /run/a.sock\n\
            0000000000000000: 00000002 00000000 00000000 0002 01 4545\n";
        assert_eq!(inodes_named(text, "@provision-port-8080"), vec![4242]);
        assert!(inodes_named(text, "@provision-port-808").is_empty());
    }
}
