//! The loader's end of a connection: TCP, a Unix stream, or UDP, behind one type.
//!
//! Streams (TCP, Unix) carry framed messages and are read and written in batches. UDP has no
//! connection: each loader "connection" is a UDP socket of its own, `connect`ed to the target
//! so that `send`/`recv` carry one message per datagram and only the server's replies arrive.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use mio::net::{TcpStream, UdpSocket, UnixStream};
use socket2::{Domain, Protocol, Socket, Type};

use crate::sys::address::ListenAddr;
use crate::sys::transport::{Stream, forward_source};

/// See the module documentation.
#[derive(Debug)]
pub enum LoadSocket {
    /// A TCP or Unix stream.
    Stream(Stream),
    /// A UDP socket connected to the target.
    Datagram(UdpSocket),
}

impl LoadSocket {
    /// Starts connecting to `target`, from `source` if given (IP targets only). Streams
    /// finish connecting later (see [`connect_result`](Self::connect_result)); UDP is ready
    /// at once.
    pub fn open(target: &ListenAddr, source: Option<IpAddr>) -> io::Result<LoadSocket> {
        match target {
            ListenAddr::Tcp(addr) => {
                connect_tcp(*addr, source).map(|stream| LoadSocket::Stream(Stream::Tcp(stream)))
            }
            ListenAddr::Unix(path) => {
                connect_unix(path).map(|stream| LoadSocket::Stream(Stream::Unix(stream)))
            }
            ListenAddr::Udp(addr) => {
                let local = SocketAddr::new(source.unwrap_or(unspecified(addr)), 0);
                let socket = UdpSocket::bind(local)?;
                socket.connect(*addr)?;
                Ok(LoadSocket::Datagram(socket))
            }
        }
    }

    /// Whether this is a UDP socket (one message per datagram, no connect phase).
    pub fn is_datagram(&self) -> bool {
        matches!(self, LoadSocket::Datagram(_))
    }

    /// A stream's connect, once it reports writable: `Ok(true)` done, `Ok(false)` not yet.
    pub fn connect_result(&self) -> io::Result<bool> {
        let (error, peer) = match self {
            LoadSocket::Stream(Stream::Tcp(stream)) => (stream.take_error(), stream.peer_addr().map(drop)),
            LoadSocket::Stream(Stream::Unix(stream)) => (stream.take_error(), stream.peer_addr().map(drop)),
            LoadSocket::Datagram(_) => return Ok(true),
        };
        if let Some(error) = error? {
            return Err(error);
        }
        match peer {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// The local address as the server sees (and prints) it, for TCP; Unix clients have none.
    pub fn local_name(&self) -> Option<String> {
        match self {
            LoadSocket::Stream(Stream::Tcp(stream)) => stream.local_addr().ok().map(|addr| addr.to_string()),
            _ => None,
        }
    }
}

impl Read for LoadSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            LoadSocket::Stream(stream) => stream.read(buf),
            LoadSocket::Datagram(socket) => socket.recv(buf),
        }
    }
}

impl Write for LoadSocket {
    /// For UDP, one call is one datagram.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            LoadSocket::Stream(stream) => stream.write(buf),
            LoadSocket::Datagram(socket) => socket.send(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

forward_source!(LoadSocket { Stream, Datagram });

fn unspecified(target: &SocketAddr) -> IpAddr {
    match target {
        SocketAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    }
}

/// A non-blocking TCP connect to `target`, from `source` if given. `IP_BIND_ADDRESS_NO_PORT`
/// lets the kernel pick the port at connect time, per destination, instead of reserving
/// one per source address at bind time.
fn connect_tcp(target: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(target), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if let Some(source) = source {
        // Best effort: without it, each source still reaches ~28k ports.
        let _ = set_bind_address_no_port(&socket);
        socket.bind(&SocketAddr::new(source, 0).into())?;
    }
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(error) if error.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(error) => return Err(error),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// A non-blocking Unix-socket connect; a full backlog (EAGAIN) is a failed connect.
fn connect_unix(path: &Path) -> io::Result<UnixStream> {
    UnixStream::connect(path)
}

/// Sets `IP_BIND_ADDRESS_NO_PORT` (Linux 4.2+), which socket2 does not wrap.
fn set_bind_address_no_port(socket: &Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let enable: libc::c_int = 1;
    // SAFETY: the pointer and length describe a live c_int for the duration of the call, and
    // the descriptor belongs to `socket`, which outlives the call.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const enable).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
