//! Does the server provision started own the listener its URL points at? `/health` 200 proves
//! only that *someone* answers on the port: a server that lost a race for its port (another
//! provision, any other program) is alive, loading or lingering after "couldn't bind", while
//! another process answers in its place. Checked where a server is handed off or kept: the
//! sockets listening on the URL's port for its host (sock_diag, microseconds) must all be among
//! the server's own fds (`/proc/<pid>/fd`).

use std::collections::BTreeSet;
use std::net::{IpAddr, ToSocketAddrs};

use crate::port::{self, Holder};

/// Why the listener on a URL is not the server's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotOwned {
    /// The URL names no host and port provision can check.
    BadUrl(String),
    /// The kernel's socket tables cannot be read: ownership cannot be proved.
    Unknown { port: u16 },
    /// Nobody listens there (any more).
    NoListener { port: u16, pid: u32 },
    /// Another process listens there (`None`: one provision cannot see, another user's).
    Foreign {
        port: u16,
        pid: u32,
        holder: Option<Holder>,
    },
}

impl std::fmt::Display for NotOwned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotOwned::BadUrl(url) => write!(f, "`{url}` names no host and port to check"),
            NotOwned::Unknown { port } => write!(
                f,
                "who listens on port {port} cannot be read from the kernel (sock_diag, /proc/net/tcp)"
            ),
            NotOwned::NoListener { port, pid } => write!(
                f,
                "nothing listens on port {port}, so its server (pid {pid}) does not serve there"
            ),
            NotOwned::Foreign { port, pid, holder } => match holder {
                Some(h) => write!(
                    f,
                    "port {port} is held by {h}, not by the server provision started (pid {pid})"
                ),
                None => write!(
                    f,
                    "port {port} is held by a process provision cannot see (another user's), not by the server provision started (pid {pid})"
                ),
            },
        }
    }
}

/// Ok when every socket listening on `url`'s port, for its host, is one of `pid`'s.
pub fn verify(pid: u32, url: &str) -> Result<(), NotOwned> {
    let (host, port) = host_port(url).ok_or_else(|| NotOwned::BadUrl(url.into()))?;
    let targets = addresses(&host, port).ok_or_else(|| NotOwned::BadUrl(url.into()))?;
    let listeners = port::listeners_on(port).ok_or(NotOwned::Unknown { port })?;
    let serving: Vec<u64> = listeners
        .iter()
        .filter(|l| reaches(l.addr, &targets))
        .map(|l| l.inode)
        .collect();
    if serving.is_empty() {
        return Err(NotOwned::NoListener { port, pid });
    }
    let ours = port::socket_inodes(pid);
    let foreign: Vec<u64> = serving.into_iter().filter(|i| !ours.contains(i)).collect();
    if foreign.is_empty() {
        return Ok(());
    }
    Err(NotOwned::Foreign {
        port,
        pid,
        holder: port::socket_owner(&foreign),
    })
}

/// Can a connection to one of `targets` reach a socket listening on `addr`? (Its own address,
/// or a wildcard; `::` may take IPv4 too.)
fn reaches(addr: IpAddr, targets: &BTreeSet<IpAddr>) -> bool {
    let mapped = match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
        IpAddr::V4(_) => None,
    };
    addr.is_unspecified() || targets.contains(&addr) || mapped.is_some_and(|m| targets.contains(&m))
}

/// The addresses `host` stands for (an IP literal as is, a name resolved).
fn addresses(host: &str, port: u16) -> Option<BTreeSet<IpAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some([ip].into());
    }
    let all: BTreeSet<IpAddr> = (host, port)
        .to_socket_addrs()
        .ok()?
        .map(|a| a.ip())
        .collect();
    (!all.is_empty()).then_some(all)
}

/// The host and port of an `http(s)://` URL (the scheme's port when none is given).
fn host_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let default = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let hostport = authority.rsplit('@').next()?;
    let (host, port) = match hostport.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        },
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default,
    };
    (!host.is_empty()).then(|| (host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn urls_give_their_host_and_port() {
        let hp = host_port;
        assert_eq!(
            hp("http://127.0.0.1:8080"),
            Some(("127.0.0.1".into(), 8080))
        );
        assert_eq!(
            hp("http://u:pw@[::1]:9000/v1?x=1"),
            Some(("::1".into(), 9000))
        );
        assert_eq!(
            hp("https://example.org/a"),
            Some(("example.org".into(), 443))
        );
        assert_eq!(hp("http://localhost"), Some(("localhost".into(), 80)));
        assert_eq!(hp("ftp://h:1"), None);
        assert_eq!(hp("http://h:x"), None);
        assert_eq!(hp("http://:80"), None);
        assert_eq!(hp("127.0.0.1:80"), None);
    }

    #[test]
    fn our_listener_is_ours_and_another_process_is_not() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}");
        assert_eq!(verify(std::process::id(), &url), Ok(()));
        assert_eq!(
            verify(std::process::id(), &format!("http://localhost:{port}")),
            Ok(()),
            "a name resolves to the listener's address"
        );
        // Pid 1 does not hold our socket: we are named as the holder.
        match verify(1, &url) {
            Err(NotOwned::Foreign {
                port: p,
                pid: 1,
                holder: Some(h),
            }) => {
                assert_eq!((p, h.pid), (port, std::process::id()));
                let text = verify(1, &url).unwrap_err().to_string();
                assert!(
                    text.contains(&format!("port {port} is held by pid {}", h.pid))
                        && text.contains("(pid 1)"),
                    "{text}"
                );
            }
            other => panic!("{other:?}"),
        }
        drop(l);
        assert_eq!(
            verify(std::process::id(), &url),
            Err(NotOwned::NoListener {
                port,
                pid: std::process::id()
            })
        );
    }

    #[test]
    fn a_wildcard_listener_serves_a_loopback_url_and_another_address_does_not() {
        let any = TcpListener::bind("0.0.0.0:0").unwrap();
        let port = any.local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}");
        assert_eq!(verify(std::process::id(), &url), Ok(()));
        assert!(matches!(
            verify(1, &url),
            Err(NotOwned::Foreign { pid: 1, .. })
        ));
        // A listener on 127.0.0.2 does not take connections to 127.0.0.1.
        if let Ok(other) = TcpListener::bind("127.0.0.2:0") {
            let url = format!("http://127.0.0.1:{}", other.local_addr().unwrap().port());
            assert!(matches!(
                verify(std::process::id(), &url),
                Err(NotOwned::NoListener { .. })
            ));
        }
    }

    #[test]
    fn a_listener_on_another_address_is_not_in_the_way_but_a_wildcard_is() {
        let targets: BTreeSet<IpAddr> = ["127.0.0.1".parse().unwrap()].into();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(reaches(ip("127.0.0.1"), &targets));
        assert!(reaches(ip("0.0.0.0"), &targets));
        assert!(reaches(ip("::"), &targets));
        assert!(reaches(ip("::ffff:127.0.0.1"), &targets));
        assert!(!reaches(ip("127.0.0.2"), &targets));
        assert!(!reaches(ip("::1"), &targets));
    }
}
