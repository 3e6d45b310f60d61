//! Sockets: TCP and Unix-domain sockets behind one type each for listeners and
//! connections, so the reactor serves both with the same code; the binds that need more
//! than `mio` offers (a real backlog, `SO_REUSEPORT`, a port reserved without listening);
//! and the one gate every non-blocking read and write passes ([`gate`]), in the server, its
//! models, its backplane links and the load generator alike.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use mio::net::{TcpListener, TcpStream, UdpSocket, UnixListener, UnixStream};
use socket2::{Domain, Protocol, Socket, Type};

use crate::sys::address::{ListenAddr, PeerAddr};

// ----- the one gate: how non-blocking I/O says "not now" -----
//
// How non-blocking I/O says "not now". `WouldBlock` and `Interrupted` are control flow, not
// failures; these helpers name them so the reactor reads as what it means.

/// The operation would block: nothing more to do until the poller reports readiness again.
pub fn would_block(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::WouldBlock
}

/// A signal arrived during the system call: simply try again.
pub fn interrupted(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::Interrupted
}

/// The process or the system is out of file descriptors (EMFILE, ENFILE), or the kernel out
/// of socket memory (ENOBUFS, ENOMEM). `accept` cannot succeed until something is closed, so
/// the caller must back off rather than retry at once.
pub fn out_of_resources(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

/// A client gave up between the kernel queueing its connection and our `accept`: that client
/// is gone, the listener is fine, carry on accepting.
pub fn client_gave_up(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::ECONNABORTED | libc::EPROTO | libc::ECONNRESET | libc::EPERM))
}

/// The one gate every non-blocking read and write goes through, in the spirit of mio's
/// `IoSource::do_io`: runs `op`, again if a signal interrupted it, and turns `WouldBlock`
/// into `Ok(None)`, "not now", so that callers see only results and real errors.
#[inline]
pub fn gate<T>(mut op: impl FnMut() -> io::Result<T>) -> io::Result<Option<T>> {
    loop {
        match op() {
            Ok(done) => return Ok(Some(done)),
            Err(error) if would_block(&error) => return Ok(None),
            Err(error) if interrupted(&error) => {}
            Err(error) => return Err(error),
        }
    }
}

/// Writes with `write` (given the bytes not written yet) until all of `bytes` is written or
/// the socket is full; returns how many were written. A write of zero bytes is an error:
/// the socket will take nothing more, ever.
#[inline]
pub fn write_until_full(
    bytes: &[u8],
    mut write: impl FnMut(&[u8]) -> io::Result<usize>,
) -> io::Result<usize> {
    let mut written = 0;
    while written < bytes.len() {
        match gate(|| write(&bytes[written..]))? {
            Some(0) => return Err(io::ErrorKind::WriteZero.into()),
            Some(n) => written += n,
            None => break,
        }
    }
    Ok(written)
}

/// A connected client's socket.
#[derive(Debug)]
pub enum Stream {
    /// A TCP connection.
    Tcp(TcpStream),
    /// A Unix-domain stream connection.
    Unix(UnixStream),
}

impl Stream {
    /// Starts a non-blocking TCP connect to `target`, from `source` if given; it is done
    /// when the socket turns writable (see [`connect_result`](Self::connect_result)).
    pub fn connect_tcp(target: SocketAddr, source: Option<IpAddr>) -> io::Result<Stream> {
        connect_tcp(target, source).map(Stream::Tcp)
    }

    /// Connects to a Unix stream socket (non-blocking; a full backlog, EAGAIN, fails).
    pub fn connect_unix(path: &Path) -> io::Result<Stream> {
        UnixStream::connect(path).map(Stream::Unix)
    }

    /// A connect's outcome once the socket reports writable: `Ok(true)` connected,
    /// `Ok(false)` not yet, or why it failed.
    pub fn connect_result(&self) -> io::Result<bool> {
        let (error, peer) = match self {
            Stream::Tcp(stream) => (stream.take_error(), stream.peer_addr().map(drop)),
            Stream::Unix(stream) => (stream.take_error(), stream.peer_addr().map(drop)),
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

    /// Sends `slices`, in order, as far as the socket takes them; returns the bytes sent.
    /// One slice goes with `send(2)`, several with one `sendmsg(2)`: both go straight to
    /// the socket, where `writev(2)` (what `write_vectored` does) first passes through the
    /// file layer, which measured 13% of the server's CPU against 7% for `send` when
    /// writing room lines to 10,000 members (docs/benchmarks.md, "Speed").
    pub fn send_slices(&mut self, slices: &[io::IoSlice<'_>]) -> io::Result<usize> {
        if let [one] = slices {
            return self.write(one);
        }
        let socket = match self {
            Stream::Tcp(stream) => stream.as_raw_fd(),
            Stream::Unix(stream) => stream.as_raw_fd(),
        };
        // SAFETY: an all-zero msghdr is valid (no name, no control data); the iovec array
        // it points to is `slices`, which `IoSlice` lays out as `iovec`s and which outlives
        // the call; the kernel only reads from it.
        let sent = unsafe {
            let mut message: libc::msghdr = std::mem::zeroed();
            message.msg_iov = slices.as_ptr().cast_mut().cast();
            message.msg_iovlen = slices.len().min(libc::UIO_MAXIOV as usize) as _;
            libc::sendmsg(socket, &message, libc::MSG_NOSIGNAL)
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sent as usize)
    }

    /// Sends up to `count` bytes of `file` from `*offset` with `sendfile(2)`, advancing the
    /// offset: the bytes go from the page cache to the socket without passing through user
    /// space. Like `write`, it may send less, or fail with `WouldBlock` when the socket is
    /// full; `Ok(0)` means the file ends before `*offset`.
    pub fn send_file(&self, file: &fs::File, offset: &mut u64, count: usize) -> io::Result<usize> {
        let socket = match self {
            Stream::Tcp(stream) => stream.as_raw_fd(),
            Stream::Unix(stream) => stream.as_raw_fd(),
        };
        let mut position =
            libc::off_t::try_from(*offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: both descriptors are open for the call (the socket is owned by `self`, the
        // file by `file`), and `position` is a live off_t the kernel updates in place.
        let sent = unsafe { libc::sendfile(socket, file.as_raw_fd(), &mut position, count) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        *offset = position as u64;
        Ok(sent as usize)
    }

    /// Shuts down the sending side: the kernel sends what is queued, then FIN.
    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(stream) => stream.shutdown(std::net::Shutdown::Write),
            Stream::Unix(stream) => stream.shutdown(std::net::Shutdown::Write),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(stream) => stream.read(buf),
            Stream::Unix(stream) => stream.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(stream) => stream.write(buf),
            Stream::Unix(stream) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Implements `mio::event::Source` for an enum of sockets by forwarding each method to
/// whichever socket is inside (the server's [`Stream`] and [`Listener`], the loader's socket).
macro_rules! forward_source {
    ($type:ident { $($variant:ident),* }) => {
        impl ::mio::event::Source for $type {
            fn register(
                &mut self,
                registry: &::mio::Registry,
                token: ::mio::Token,
                interest: ::mio::Interest,
            ) -> ::std::io::Result<()> {
                match self { $($type::$variant(inner) => inner.register(registry, token, interest),)* }
            }
            fn reregister(
                &mut self,
                registry: &::mio::Registry,
                token: ::mio::Token,
                interest: ::mio::Interest,
            ) -> ::std::io::Result<()> {
                match self { $($type::$variant(inner) => inner.reregister(registry, token, interest),)* }
            }
            fn deregister(&mut self, registry: &::mio::Registry) -> ::std::io::Result<()> {
                match self { $($type::$variant(inner) => inner.deregister(registry),)* }
            }
        }
    };
}

#[cfg(feature = "load")]
pub(crate) use forward_source;

forward_source!(Stream { Tcp, Unix });
forward_source!(Listener { Tcp, Unix, InheritedUnix });

/// A socket inherited already bound (`fd:N`), as its type and family say it is.
#[derive(Debug)]
pub enum Inherited {
    /// A listening stream socket (TCP or Unix), and the address it listens on.
    Stream(Listener, ListenAddr),
    /// A UDP socket, and its address.
    Datagram(UdpSocket, SocketAddr),
}

/// Takes over descriptor `fd`, inherited from whoever started this process (systemd socket
/// activation, inetd): a listening TCP or Unix stream socket, or a UDP socket. The kind is
/// read from the socket itself. The descriptor must be one this process was given and no
/// one else here owns (the caller checks each `fd:N` is named once).
pub fn inherited(fd: i32) -> io::Result<Inherited> {
    use std::os::fd::FromRawFd;
    // SAFETY: the descriptor was handed to this process to serve on, and is named once in
    // the configuration, so this is its only owner from here on. An invalid descriptor
    // makes the first call on it fail, and the Socket then closes nothing valid.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above: the descriptor is open (checked) and owned by nobody else here.
    let socket = unsafe { Socket::from_raw_fd(fd) };
    let kind = socket.r#type()?;
    let local = socket.local_addr()?;
    socket.set_nonblocking(true)?;
    if kind == Type::DGRAM {
        let addr = local.as_socket().ok_or_else(|| io::Error::other("a datagram socket that is not UDP"))?;
        return Ok(Inherited::Datagram(UdpSocket::from_std(socket.into()), addr));
    }
    if kind != Type::STREAM {
        return Err(io::Error::other("not a stream or datagram socket"));
    }
    match local.as_socket() {
        Some(addr) => {
            Ok(Inherited::Stream(Listener::Tcp(TcpListener::from_std(socket.into())), ListenAddr::Tcp(addr)))
        }
        None => {
            let path = local.as_pathname().map(Path::to_path_buf).unwrap_or_default();
            // Not ours to remove when we stop: whoever bound it keeps it.
            let listener = UnixListener::from_std(socket.into());
            Ok(Inherited::Stream(Listener::InheritedUnix(listener), ListenAddr::Unix(path)))
        }
    }
}

/// A listening socket. A Unix listener this process bound removes its socket file when
/// dropped: on a clean stop, and just as much when a later listener of the same start fails
/// to bind, so a failed start leaves nothing behind. An inherited one leaves it: it is not
/// ours.
#[derive(Debug)]
pub enum Listener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A Unix-domain stream listener.
    Unix(UnixListener),
    /// A Unix-domain stream listener inherited already bound (`fd:N`).
    InheritedUnix(UnixListener),
}

impl Listener {
    /// Binds `addr` and starts listening with `backlog`; `reuse_port` sets `SO_REUSEPORT` so
    /// several processes can listen on one TCP port. Returns the address actually bound
    /// (port 0 replaced by the real port).
    pub fn bind(addr: &ListenAddr, backlog: u32, reuse_port: bool) -> io::Result<(Listener, ListenAddr)> {
        match addr {
            ListenAddr::Tcp(addr) => {
                let listener = bind_tcp(*addr, backlog, reuse_port)?;
                let bound = listener.local_addr()?;
                Ok((Listener::Tcp(listener), ListenAddr::Tcp(bound)))
            }
            ListenAddr::Tls(addr) => {
                let listener = bind_tcp(*addr, backlog, reuse_port)?;
                let bound = listener.local_addr()?;
                Ok((Listener::Tcp(listener), ListenAddr::Tls(bound)))
            }
            ListenAddr::Unix(path) => {
                let listener = bind_unix(path, backlog)?;
                Ok((Listener::Unix(listener), ListenAddr::Unix(path.clone())))
            }
            ListenAddr::Udp(_) | ListenAddr::Fd(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not an address to bind a stream listener on",
            )),
        }
    }

    /// Accepts one connection. `unix_serial` numbers Unix clients, which have no address.
    pub fn accept(&self, unix_serial: &mut u64) -> io::Result<(Stream, PeerAddr)> {
        match self {
            Listener::Tcp(listener) => {
                let (stream, peer) = listener.accept()?;
                // Replies are batched per wakeup already; Nagle's algorithm would only add
                // delay (up to 40 ms against a delayed ACK) to the last segment of a batch.
                stream.set_nodelay(true)?;
                Ok((Stream::Tcp(stream), PeerAddr::Tcp(peer)))
            }
            Listener::Unix(listener) | Listener::InheritedUnix(listener) => {
                let (stream, _) = listener.accept()?;
                *unix_serial += 1;
                Ok((Stream::Unix(stream), PeerAddr::Unix { serial: *unix_serial }))
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(listener) = self {
            if let Some(path) = listener.local_addr().ok().as_ref().and_then(|addr| addr.as_pathname()) {
                remove_socket_file(path);
            }
        }
    }
}

/// A TCP listener made with socket2, for what `mio::net::TcpListener::bind` does not offer:
/// a real backlog (mio's is 128, and a connect storm past it costs clients 1 s SYN retries)
/// and `SO_REUSEPORT`.
pub fn bind_tcp(addr: SocketAddr, backlog: u32, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = listen_socket(addr, backlog, reuse_port)?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// A blocking TCP socket listening on `addr` (see [`bind_tcp`]); the blocking server models
/// use it as it is.
pub fn listen_socket(addr: SocketAddr, backlog: u32, reuse_port: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(socket)
}

/// A Unix listener at `path`. A socket file left behind by a crashed server (nobody accepts
/// on it) is replaced; a path where a live server answers, or that is not a socket, is an
/// error: binding must never take over or delete someone else's file.
fn bind_unix(path: &Path, backlog: u32) -> io::Result<UnixListener> {
    if let Ok(metadata) = fs::symlink_metadata(path) {
        if !metadata.file_type().is_socket() {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "the path exists and is not a socket"));
        }
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "a live server is listening on this socket",
                ));
            }
            Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
                log::info!("removing stale socket; path={}", path.display());
                fs::remove_file(path)?;
            }
            Err(error) => return Err(error),
        }
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.bind(&socket2::SockAddr::unix(path)?)?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(UnixListener::from_std(socket.into()))
}

/// Removes a Unix socket file this server created.
fn remove_socket_file(path: &Path) {
    if let Err(error) = fs::remove_file(path) {
        log::warn!("could not remove socket file; path={} error={error}", path.display());
    }
}

/// Binds a UDP socket at `addr` (port 0 picks one) and returns it with the address bound.
pub fn bind_udp(addr: SocketAddr) -> io::Result<(UdpSocket, SocketAddr)> {
    let socket = UdpSocket::bind(addr)?;
    let bound = socket.local_addr()?;
    Ok((socket, bound))
}

/// Binds `addr` with `SO_REUSEPORT` without listening: the port is resolved and reserved,
/// and gets no connections (the worker supervisor, `cli/workers.rs`, explains why).
#[cfg(feature = "cli")]
pub fn reserve_port(addr: SocketAddr) -> io::Result<(Socket, SocketAddr)> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    let bound = socket.local_addr()?.as_socket().ok_or_else(|| io::Error::other("not an IP socket"))?;
    Ok((socket, bound))
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
