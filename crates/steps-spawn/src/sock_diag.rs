//! Listening TCP sockets, asked of the kernel over `NETLINK_SOCK_DIAG` (what `ss -ltn` uses).
//!
//! Why not `/proc/net/tcp`: every read of it makes the kernel walk its whole
//! established-connection hash table (262,144 buckets on an ordinary machine: ~4 ms of kernel
//! time per table, both tables per port checked, on every spawn). A sock_diag dump that asks
//! for listening sockets only walks the listening table. Linux only; `None` when netlink is
//! unavailable (the caller falls back to `/proc/net/tcp`).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `SOCK_DIAG_BY_FAMILY` (linux/sock_diag.h).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 0x2;
const NLMSG_DONE: u16 = 0x3;
/// `TCP_LISTEN` (linux/tcp_states.h).
const TCP_LISTEN: u32 = 10;
const NLMSG_HDR: usize = 16;
/// `struct inet_diag_req_v2`: family, protocol, ext, pad, states, `inet_diag_sockid` (48).
const REQ_LEN: usize = 56;
/// `struct inet_diag_msg`: up to and including `idiag_inode`.
const MSG_LEN: usize = 72;

/// A listening socket: its local address, port and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listener {
    pub addr: IpAddr,
    pub port: u16,
    pub inode: u64,
}

/// Every listening TCP socket (IPv4 and IPv6), or `None` when the kernel cannot be asked.
pub fn listeners() -> Option<Vec<Listener>> {
    let mut out = Vec::new();
    for family in [libc::AF_INET, libc::AF_INET6] {
        out.extend(dump(family as u8).ok()?);
    }
    Some(out)
}

struct Fd(libc::c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: the fd was returned by socket() and is closed once, here.
        unsafe { libc::close(self.0) };
    }
}

fn request(family: u8) -> [u8; NLMSG_HDR + REQ_LEN] {
    let mut m = [0u8; NLMSG_HDR + REQ_LEN];
    m[0..4].copy_from_slice(&((NLMSG_HDR + REQ_LEN) as u32).to_ne_bytes());
    m[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    m[8..12].copy_from_slice(&1u32.to_ne_bytes()); // sequence number
    let r = NLMSG_HDR;
    m[r] = family;
    m[r + 1] = libc::IPPROTO_TCP as u8;
    m[r + 4..r + 8].copy_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    m
}

/// Parse one datagram of replies into `out`; `Ok(true)` once the dump is done.
fn parse(buf: &[u8], out: &mut Vec<Listener>) -> io::Result<bool> {
    let mut at = 0;
    while at + NLMSG_HDR <= buf.len() {
        let len = u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().expect("2 bytes"));
        if len < NLMSG_HDR || at + len > buf.len() {
            return Err(io::Error::other("truncated netlink message"));
        }
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let errno = buf
                    .get(at + NLMSG_HDR..at + NLMSG_HDR + 4)
                    .map(|b| i32::from_ne_bytes(b.try_into().expect("4 bytes")))
                    .unwrap_or(0);
                return Err(io::Error::from_raw_os_error(-errno));
            }
            SOCK_DIAG_BY_FAMILY if len >= NLMSG_HDR + MSG_LEN => {
                let m = &buf[at + NLMSG_HDR..at + len];
                // idiag_family at 0; id.idiag_sport is big-endian at offset 4, id.idiag_src
                // (network order, 4 or 16 bytes used) at 8; idiag_inode at 68.
                let port = u16::from_be_bytes([m[4], m[5]]);
                let inode = u32::from_ne_bytes(m[68..72].try_into().expect("4 bytes"));
                let addr = if m[0] == libc::AF_INET6 as u8 {
                    let b: [u8; 16] = m[8..24].try_into().expect("16 bytes");
                    IpAddr::V6(Ipv6Addr::from(b))
                } else {
                    IpAddr::V4(Ipv4Addr::new(m[8], m[9], m[10], m[11]))
                };
                if m[1] as u32 == TCP_LISTEN {
                    out.push(Listener {
                        addr,
                        port,
                        inode: u64::from(inode),
                    });
                }
            }
            _ => {}
        }
        at += (len + 3) & !3;
    }
    Ok(false)
}

fn dump(family: u8) -> io::Result<Vec<Listener>> {
    // SAFETY: plain socket(2); the result is checked and owned by `Fd`.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = Fd(fd);
    let tv = libc::timeval {
        tv_sec: 2,
        tv_usec: 0,
    };
    // SAFETY: `tv` outlives the call and its size is passed.
    unsafe {
        libc::setsockopt(
            fd.0,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    // SAFETY: an all-zero sockaddr_nl is valid (pid 0: the kernel).
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    let req = request(family);
    // SAFETY: `req` and `kernel` outlive the call; their sizes are passed.
    let sent = unsafe {
        libc::sendto(
            fd.0,
            req.as_ptr().cast(),
            req.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: `buf` is writable for its whole length.
        let n = unsafe { libc::recv(fd.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 || parse(&buf[..n as usize], &mut out)? {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::os::unix::fs::MetadataExt;

    /// The inode of a socket we own, from `/proc/self/fd`.
    fn inode_of(l: &TcpListener) -> u64 {
        use std::os::fd::AsRawFd;
        let link = std::fs::read_link(format!("/proc/self/fd/{}", l.as_raw_fd())).unwrap();
        let text = link.display().to_string();
        let ino = text
            .trim_start_matches("socket:[")
            .trim_end_matches(']')
            .parse()
            .unwrap();
        assert_eq!(
            std::fs::metadata(format!("/proc/self/fd/{}", l.as_raw_fd()))
                .unwrap()
                .ino(),
            ino
        );
        ino
    }

    #[test]
    fn sees_our_listeners_on_ipv4_and_ipv6_and_not_a_closed_one() {
        let v4 = TcpListener::bind("127.0.0.1:0").unwrap();
        let v6 = TcpListener::bind("[::1]:0").ok();
        let all = listeners().expect("NETLINK_SOCK_DIAG answers on Linux");
        let want = Listener {
            addr: "127.0.0.1".parse().unwrap(),
            port: v4.local_addr().unwrap().port(),
            inode: inode_of(&v4),
        };
        assert!(all.contains(&want), "{want:?} not in {all:?}");
        if let Some(v6) = &v6 {
            let want6 = Listener {
                addr: "::1".parse().unwrap(),
                port: v6.local_addr().unwrap().port(),
                inode: inode_of(v6),
            };
            assert!(all.contains(&want6), "{want6:?} not in {all:?}");
        }
        let port = want.port;
        drop(v4);
        let after = listeners().unwrap();
        assert!(
            !after.iter().any(|l| l.inode == want.inode),
            "a closed listener is still reported on port {port}"
        );
    }

    #[test]
    fn a_connected_socket_is_not_a_listener() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (s, _) = l.accept().unwrap();
        let local = c.local_addr().unwrap().port();
        let all = listeners().unwrap();
        assert_eq!(all.iter().filter(|x| x.port == port).count(), 1);
        assert!(!all.iter().any(|x| x.port == local), "the client's port");
        drop((c, s));
    }

    #[test]
    fn parse_reads_done_errors_and_skips_short_messages() {
        let mut msg = [0u8; NLMSG_HDR + MSG_LEN];
        msg[0..4].copy_from_slice(&((NLMSG_HDR + MSG_LEN) as u32).to_ne_bytes());
        msg[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        let m = NLMSG_HDR;
        msg[m] = libc::AF_INET as u8;
        msg[m + 1] = TCP_LISTEN as u8;
        msg[m + 8..m + 12].copy_from_slice(&[127, 0, 0, 1]);
        msg[m + 4..m + 6].copy_from_slice(&8080u16.to_be_bytes());
        msg[m + 68..m + 72].copy_from_slice(&42u32.to_ne_bytes());
        let mut done = [0u8; NLMSG_HDR + 4];
        done[0..4].copy_from_slice(&((NLMSG_HDR + 4) as u32).to_ne_bytes());
        done[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        let mut out = Vec::new();
        let both: Vec<u8> = msg.iter().chain(done.iter()).copied().collect();
        assert!(parse(&both, &mut out).unwrap());
        assert_eq!(
            out,
            vec![Listener {
                addr: "127.0.0.1".parse().unwrap(),
                port: 8080,
                inode: 42
            }]
        );
        let mut err = done;
        err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err[NLMSG_HDR..NLMSG_HDR + 4].copy_from_slice(&(-libc::EPERM).to_ne_bytes());
        assert_eq!(
            parse(&err, &mut out).unwrap_err().raw_os_error(),
            Some(libc::EPERM)
        );
        assert!(parse(&msg[..20], &mut out).is_err(), "truncated");
    }
}
