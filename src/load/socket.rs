//! The loader's end of a connection: TCP, a Unix stream, or UDP, behind one type.
//!
//! Streams (TCP, Unix) carry framed messages and are read and written in batches. UDP has no
//! connection: each loader "connection" is a UDP socket of its own, `connect`ed to the target
//! so that `send`/`recv` carry one message per datagram and only the server's replies arrive.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};

use mio::net::UdpSocket;

use crate::sys::address::ListenAddr;
use crate::sys::socket::{Stream, forward_source};

/// See the module documentation.
#[derive(Debug)]
pub enum LoadSocket {
    /// A TCP or Unix stream.
    Stream(Stream),
    /// A UDP socket connected to the target.
    Datagram(UdpSocket),
    /// A TCP stream with a TLS session (`--tls`).
    Tls(Box<super::tls::TlsStream>),
}

impl LoadSocket {
    /// Starts connecting to `target`, from `source` if given (IP targets only). Streams
    /// finish connecting later (see [`connect_result`](Self::connect_result)); UDP is ready
    /// at once.
    pub fn open(
        target: &ListenAddr,
        source: Option<IpAddr>,
        tls: Option<(&std::sync::Arc<rustls::ClientConfig>, String)>,
    ) -> io::Result<LoadSocket> {
        match (target, tls) {
            (ListenAddr::Tcp(addr), Some((config, name))) => {
                let stream = Stream::connect_tcp(*addr, source)?;
                let session = Box::new(super::tls::session(config, &name)?);
                Ok(LoadSocket::Tls(Box::new(super::tls::TlsStream { stream, session })))
            }
            (_, Some(_)) => Err(io::Error::new(io::ErrorKind::InvalidInput, "--tls runs over TCP")),
            (target, None) => LoadSocket::open_plain(target, source),
        }
    }

    fn open_plain(target: &ListenAddr, source: Option<IpAddr>) -> io::Result<LoadSocket> {
        match target {
            ListenAddr::Tcp(addr) => Stream::connect_tcp(*addr, source).map(LoadSocket::Stream),
            ListenAddr::Unix(path) => Stream::connect_unix(path).map(LoadSocket::Stream),
            ListenAddr::Udp(addr) => {
                let local = SocketAddr::new(source.unwrap_or(unspecified(addr)), 0);
                let socket = UdpSocket::bind(local)?;
                socket.connect(*addr)?;
                Ok(LoadSocket::Datagram(socket))
            }
            other => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{other} is not a target"))),
        }
    }

    /// Whether this is a UDP socket (one message per datagram, no connect phase).
    pub fn is_datagram(&self) -> bool {
        matches!(self, LoadSocket::Datagram(_))
    }

    /// A stream's connect, once it reports writable: `Ok(true)` done, `Ok(false)` not yet.
    pub fn connect_result(&self) -> io::Result<bool> {
        match self {
            LoadSocket::Stream(stream) => stream.connect_result(),
            LoadSocket::Tls(tls) => tls.stream.connect_result(),
            LoadSocket::Datagram(_) => Ok(true),
        }
    }

    /// Whether it has a TLS session.
    pub fn is_tls(&self) -> bool {
        matches!(self, LoadSocket::Tls(_))
    }

    /// Moves its TLS handshake on (see `TlsStream::drive`); `Ok(false)`: the server closed.
    pub fn drive_tls(&mut self) -> io::Result<bool> {
        match self {
            LoadSocket::Tls(tls) => tls.drive(),
            _ => Ok(true),
        }
    }

    /// Whether its TLS handshake is done (true without TLS).
    pub fn tls_ready(&self) -> bool {
        match self {
            LoadSocket::Tls(tls) => tls.is_ready(),
            _ => true,
        }
    }

    /// The local address as the server sees (and prints) it, for TCP; Unix clients have none.
    pub fn local_name(&self) -> Option<String> {
        match self {
            LoadSocket::Stream(Stream::Tcp(stream)) => stream.local_addr().ok().map(|addr| addr.to_string()),
            LoadSocket::Tls(tls) => match &tls.stream {
                Stream::Tcp(stream) => stream.local_addr().ok().map(|addr| addr.to_string()),
                Stream::Unix(_) => None,
            },
            _ => None,
        }
    }
}

impl Read for LoadSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            LoadSocket::Stream(stream) => stream.read(buf),
            LoadSocket::Datagram(socket) => socket.recv(buf),
            LoadSocket::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for LoadSocket {
    /// For UDP, one call is one datagram.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            LoadSocket::Stream(stream) => stream.write(buf),
            LoadSocket::Datagram(socket) => socket.send(buf),
            LoadSocket::Tls(tls) => tls.write(buf),
        }
    }

    /// TLS: the records waiting in the session (see `TlsStream::flush`).
    fn flush(&mut self) -> io::Result<()> {
        match self {
            LoadSocket::Tls(tls) => tls.flush(),
            _ => Ok(()),
        }
    }
}

forward_source!(LoadSocket { Stream, Datagram, Tls });

fn unspecified(target: &SocketAddr) -> IpAddr {
    match target {
        SocketAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    }
}
