//! Addresses: where a listener listens ([`ListenAddr`]) and who a client is ([`PeerAddr`]).
//!
//! Both print the way users type them, so the startup line `echo listening on 127.0.0.1:7000`
//! can be pasted back into `--listen` or `--target`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

/// Where a listener listens.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ListenAddr {
    /// A TCP address, `HOST:PORT` (IPv4 or `[IPv6]`); port 0 picks a free port.
    Tcp(SocketAddr),
    /// A TCP address whose connections speak TLS, `tls://HOST:PORT` (the server needs
    /// `--tls-cert` and `--tls-key`).
    Tls(SocketAddr),
    /// A Unix-domain stream socket, `unix:/path/to.sock`.
    Unix(PathBuf),
    /// A UDP socket, `udp://HOST:PORT`.
    Udp(SocketAddr),
    /// A socket inherited already bound, `fd:N` (systemd socket activation, inetd): TCP,
    /// Unix stream or UDP, as the socket itself says.
    Fd(i32),
}

impl ListenAddr {
    /// Whether this is a UDP address (one message per datagram, no connections).
    pub fn is_datagram(&self) -> bool {
        matches!(self, ListenAddr::Udp(_))
    }

    /// Whether only this machine can reach it: a loopback IP, or a Unix socket (an
    /// inherited socket says nothing here, and counts as reachable).
    pub fn is_loopback(&self) -> bool {
        match self {
            ListenAddr::Tcp(addr) | ListenAddr::Tls(addr) | ListenAddr::Udp(addr) => addr.ip().is_loopback(),
            ListenAddr::Unix(_) => true,
            ListenAddr::Fd(_) => false,
        }
    }

    /// The TCP address of a TCP or TLS listener.
    pub fn tcp(&self) -> Option<SocketAddr> {
        match self {
            ListenAddr::Tcp(addr) | ListenAddr::Tls(addr) => Some(*addr),
            _ => None,
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            // Control characters escaped: a startup line or an error stays one line.
            ListenAddr::Unix(path) => {
                f.write_str("unix:")?;
                path.display().to_string().chars().try_for_each(|c| match c.is_control() {
                    true => write!(f, "{}", c.escape_default()),
                    false => write!(f, "{c}"),
                })
            }
            ListenAddr::Udp(addr) => write!(f, "udp://{addr}"),
            ListenAddr::Tls(addr) => write!(f, "tls://{addr}"),
            ListenAddr::Fd(fd) => write!(f, "fd:{fd}"),
        }
    }
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("bad address 'unix:': expected unix:/path/to.sock".to_string());
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        if let Some(fd) = text.strip_prefix("fd:") {
            return match fd.parse::<i32>() {
                Ok(fd) if fd >= 0 => Ok(ListenAddr::Fd(fd)),
                _ => Err(format!(
                    "bad address 'fd:{}': expected fd:N, an inherited descriptor",
                    fd.escape_debug()
                )),
            };
        }
        if let Some(host_port) = text.strip_prefix("udp://") {
            return parse_socket_addr(host_port).map(ListenAddr::Udp);
        }
        if let Some(host_port) = text.strip_prefix("tls://") {
            return parse_socket_addr(host_port).map(ListenAddr::Tls);
        }
        parse_socket_addr(text).map(ListenAddr::Tcp)
    }
}

/// Parses `HOST:PORT` with an IP literal (`[v6]` in brackets) or `localhost`.
///
/// No name resolution: a server should bind exactly the address it was given, and `localhost`
/// is the one name people type that has a single obvious meaning. A host name is refused, but
/// looked up to say why (it does not resolve, or what to type instead): the loader takes
/// names, and shows this error when its own look-up fails too. The look-up only happens on this
/// error path, so an IP address never waits for DNS.
pub(crate) fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Some(port) = text.strip_prefix("localhost:") {
        if let Ok(port) = port.parse::<u16>() {
            return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
        }
    }
    if let Some((host, port)) = host_name(text) {
        use std::net::ToSocketAddrs as _;
        let lookup = (host, port).to_socket_addrs().map(|mut addrs| addrs.next());
        return Err(host_name_error(text, host, lookup));
    }
    Err(format!(
        "bad address '{}': expected HOST:PORT with an IPv4 or [IPv6] address, e.g. 127.0.0.1:7000",
        text.escape_debug()
    ))
}

/// `HOST:PORT` where HOST looks like a host name (letters, digits, `-` and `.`, with at least
/// one letter) and PORT is a port: what a look-up could make sense of.
fn host_name(text: &str) -> Option<(&str, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let port = port.parse::<u16>().ok()?;
    let name_like = host.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'.')
        && host.bytes().any(|byte| byte.is_ascii_alphabetic());
    name_like.then_some((host, port))
}

/// The error for a host name, from what looking it up gave: it does not resolve (the
/// resolver's reason), or it does, and the address to type instead.
fn host_name_error(text: &str, host: &str, lookup: std::io::Result<Option<SocketAddr>>) -> String {
    let text = text.escape_debug();
    match lookup {
        Ok(Some(addr)) => format!(
            "bad address '{text}': {host} is a host name, and a listener takes an IP address: {host} resolves to {addr}"
        ),
        Ok(None) => format!("bad address '{text}': the host name {host} could not be resolved (no address)"),
        Err(error) => format!("bad address '{text}': the host name {host} could not be resolved ({error})"),
    }
}

/// Who a connected client is, as shown to handlers (the `broadcast` prefix) and in logs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PeerAddr {
    /// A TCP client's address and port.
    Tcp(SocketAddr),
    /// A Unix-socket client. Such clients rarely bind a name of their own, so they are told
    /// apart by the order in which the server accepted them.
    Unix {
        /// 1 for the first Unix client this server accepted, 2 for the next, ...
        serial: u64,
    },
    /// The sender of a UDP datagram.
    Udp(SocketAddr),
}

impl PeerAddr {
    /// Whether this is a UDP sender (a handler answering a datagram, not a connection).
    pub fn is_datagram(&self) -> bool {
        matches!(self, PeerAddr::Udp(_))
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Tcp(addr) => write!(f, "{addr}"),
            PeerAddr::Unix { serial } => write!(f, "unix#{serial}"),
            PeerAddr::Udp(addr) => write!(f, "{addr}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Listen addresses parse from what users type and print back the same way.
    #[test]
    fn listen_addresses_round_trip() {
        for text in [
            "127.0.0.1:7000",
            "[::1]:0",
            "unix:/tmp/x.sock",
            "udp://127.0.0.1:9",
            "fd:3",
            "tls://0.0.0.0:443",
        ] {
            let addr: ListenAddr = text.parse().unwrap();
            assert_eq!(addr.to_string(), text);
        }
        assert_eq!("localhost:80".parse::<ListenAddr>().unwrap().to_string(), "127.0.0.1:80");
    }

    /// Host names other than localhost, missing ports and bad ports are refused.
    #[test]
    fn bad_addresses_are_refused() {
        for text in ["example.com:80", "127.0.0.1", "127.0.0.1:99999", "::1:80", "unix:", ""] {
            assert!(text.parse::<ListenAddr>().is_err(), "{text} should be refused");
        }
    }

    /// A host name is refused with the reason: it does not resolve, or it does and a listener
    /// takes the address instead (issue 36: both were called a malformed address).
    #[test]
    fn host_names_are_refused_with_the_reason() {
        assert_eq!(host_name("nosuchhost.invalid:7000"), Some(("nosuchhost.invalid", 7000)));
        assert_eq!(host_name("db-1:6379"), Some(("db-1", 6379)));
        for text in ["127.0.0.1", "1.2.3:80", "::1:80", "host:99999", "a b:80", "[::1:80"] {
            assert_eq!(host_name(text), None, "{text}");
        }
        let unresolved = std::io::Error::other("Name or service not known");
        assert_eq!(
            host_name_error("nosuchhost.invalid:7000", "nosuchhost.invalid", Err(unresolved)),
            "bad address 'nosuchhost.invalid:7000': the host name nosuchhost.invalid could not be resolved (Name or service not known)"
        );
        let resolved = Ok(Some(SocketAddr::from(([192, 0, 2, 7], 80))));
        assert_eq!(
            host_name_error("web:80", "web", resolved),
            "bad address 'web:80': web is a host name, and a listener takes an IP address: web resolves to 192.0.2.7:80"
        );
        let error = "nosuchhost.invalid:7000".parse::<ListenAddr>().unwrap_err();
        assert!(error.contains("the host name nosuchhost.invalid could not be resolved"), "{error}");
    }
}
