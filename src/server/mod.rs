//! Building and starting a server: bind the listeners, then run the reactor, in this thread
//! ([`Server::run`]) or a new one ([`Server::spawn`], for tests and embedding).
//!
//! Binding happens before anything runs, so a bad address fails fast with the address named,
//! and port 0 is resolved so the caller can print (or connect to) the real address.
//!
//! Beside the builder sit the plain types a server is described and read by: its
//! configuration (`config.rs`) and its counters and run summary (`stats.rs`). They import
//! nothing from the reactor, so the reactor, the blocking models and the worker supervisor
//! can all share them.

use std::fmt;
use std::io;
use std::thread::JoinHandle;

use crate::config::{ListenSpec, ServerConfig};
use crate::stats::{RunSummary, Stats};

use crate::codec::Codec;
use crate::handlers::{self, Handler};
use crate::reactor::control::ServerHandle;
use crate::reactor::{MAX_LISTENERS, Reactor, Service};
use crate::sys::address::ListenAddr;
use crate::sys::socket::{Inherited, Listener, bind_udp, inherited};
use crate::transport::load_tls;

/// Why a server could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// An address could not be bound (in use, not local, no permission).
    Bind {
        /// The address as given.
        addr: ListenAddr,
        /// What the system said.
        source: io::Error,
    },
    /// The listeners asked for do not make sense together.
    Config(String),
    /// Setting up the poller failed.
    Io(io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            StartError::Config(message) => f.write_str(message),
            StartError::Io(error) => write!(f, "cannot start: {error}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Bind { source, .. } | StartError::Io(source) => Some(source),
            StartError::Config(_) => None,
        }
    }
}

/// One bound listener: what the startup line prints.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Listening {
    /// The handler's name.
    pub handler: String,
    /// The address actually bound (port 0 resolved).
    pub addr: ListenAddr,
}

impl fmt::Display for Listening {
    /// The startup line scripts rely on: `<handler> listening on <addr>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} listening on {}", self.handler, self.addr)
    }
}

impl Listening {
    /// The startup line as `evloop-server` prints it: the [`Display`](fmt::Display) line,
    /// then in parentheses what a client speaks there (`codec` is the listener's). The address
    /// names the transport (`udp://`, `tls://`, `unix:`) but not the codec, and raw echo on
    /// :7100 read like line echo on :7000:
    ///
    /// ```text
    /// echo listening on 127.0.0.1:7000 (line)
    /// echo listening on 127.0.0.1:7100 (raw)
    /// echo listening on udp://127.0.0.1:7100 (datagrams, no framing)
    /// broadcast listening on 127.0.0.1:7080 (ws, chat page at /)
    /// metrics listening on 127.0.0.1:9100 (http, GET /metrics)
    /// ```
    ///
    /// The line still starts `<handler> listening on <addr>`, the address one word (the
    /// fourth), so scripts that read up to it are unaffected.
    pub fn startup_line(&self, codec: Codec) -> String {
        let speaks = match (&self.addr, codec) {
            // A datagram is the message: the codec plays no part (docs/protocol.md, UDP).
            (ListenAddr::Udp(_), _) => "datagrams, no framing".to_string(),
            // The console's page, and its stream at /live (reactor/console.rs).
            (_, Codec::Ws) if self.handler == "console" => "http, console page at /".to_string(),
            // Any other ws listener serves the chat page on a plain GET / (codec/ws/handshake.rs).
            (_, Codec::Ws) => "ws, chat page at /".to_string(),
            _ if self.handler == "metrics" => "http, GET /metrics".to_string(),
            (_, codec) => codec.to_string(),
        };
        format!("{self} ({speaks})")
    }
}

struct ServiceSpec {
    name: String,
    handler: Box<dyn Handler>,
    codec: Codec,
    addrs: Vec<ListenAddr>,
    room: Option<String>,
}

/// Collects services, then binds them all at once with [`ServerBuilder::bind`].
pub struct ServerBuilder {
    config: ServerConfig,
    services: Vec<ServiceSpec>,
    handle_signals: bool,
}

impl ServerBuilder {
    /// Serves `handler` (named `name` in logs and the startup line) with `codec` on `addrs`.
    /// All of `addrs` share this one handler instance (one room, for a broadcast handler).
    pub fn serve(
        mut self,
        name: &str,
        handler: impl Handler + 'static,
        codec: Codec,
        addrs: impl IntoIterator<Item = ListenAddr>,
    ) -> Self {
        self.services.push(ServiceSpec {
            name: name.to_string(),
            handler: Box::new(handler),
            codec,
            addrs: addrs.into_iter().collect(),
            room: None,
        });
        self
    }

    /// Serves a built-in handler as a `--listen` spec describes.
    pub fn listen(mut self, spec: &ListenSpec) -> Result<Self, StartError> {
        let handler: Box<dyn Handler> = if spec.handler == "file" {
            let Some(root) = &self.config.files else {
                return Err(StartError::Config(
                    "a file listener needs the directory it serves: add --files DIR".to_string(),
                ));
            };
            let server = handlers::FileServer::new(root).map_err(|error| {
                StartError::Config(format!(
                    "cannot serve files from {}: {error}",
                    root.display().to_string().escape_debug()
                ))
            })?;
            Box::new(server)
        } else if spec.handler == "console" {
            console_allowed(spec)?;
            Box::new(handlers::Console)
        } else {
            handlers::by_name(&spec.handler)
                .ok_or_else(|| StartError::Config(format!("unknown handler '{}'", spec.handler)))?
        };
        self.services.push(ServiceSpec {
            name: spec.handler.clone(),
            handler,
            codec: spec.codec,
            addrs: spec.addrs.clone(),
            room: spec.room.clone(),
        });
        Ok(self)
    }

    /// Handle SIGINT and SIGTERM as a request to drain and stop (for binaries; an embedding
    /// program or test uses [`ServerHandle::shutdown`] instead).
    pub fn handle_signals(mut self, handle_signals: bool) -> Self {
        self.handle_signals = handle_signals;
        self
    }

    /// Binds every listener. Nothing is served until [`Server::run`] or [`Server::spawn`].
    pub fn bind(self) -> Result<Server, StartError> {
        let listener_count: usize = self.services.iter().map(|spec| spec.addrs.len()).sum();
        if listener_count == 0 {
            return Err(StartError::Config("nothing to listen on".to_string()));
        }
        if listener_count > MAX_LISTENERS {
            return Err(StartError::Config(format!("too many listeners (max {MAX_LISTENERS})")));
        }
        let wants_tls =
            self.services.iter().flat_map(|spec| &spec.addrs).any(|addr| matches!(addr, ListenAddr::Tls(_)));
        let tls = match wants_tls {
            true => Some(
                load_tls(self.config.tls_cert.as_deref(), self.config.tls_key.as_deref())
                    .map_err(StartError::Config)?,
            ),
            false => None,
        };
        let mut services = Vec::new();
        let mut listeners = Vec::new();
        let mut datagrams = Vec::new();
        let mut listening = Vec::new();
        let mut fds = Vec::new();
        for spec in &self.services {
            self.config.check_codec(spec.codec).map_err(StartError::Config)?;
            for addr in &spec.addrs {
                if let ListenAddr::Fd(fd) = addr {
                    if fds.contains(fd) {
                        return Err(StartError::Config(format!(
                            "fd:{fd} is named twice: a socket serves one listener"
                        )));
                    }
                    fds.push(*fd);
                }
            }
        }
        for (index, spec) in self.services.into_iter().enumerate() {
            let no_udp = |addr: &ListenAddr| match spec.handler.needs_connections() {
                true => Err(StartError::Config(format!(
                    "{} cannot run over UDP ({addr}): there are no connections to send to; use TCP or a Unix socket",
                    spec.name
                ))),
                false => Ok(()),
            };
            for addr in &spec.addrs {
                let failed = |source| StartError::Bind { addr: addr.clone(), source };
                let bound = match addr {
                    ListenAddr::Fd(fd) => match inherited(*fd).map_err(failed)? {
                        Inherited::Stream(listener, bound) => {
                            listeners.push((listener, bound.clone(), index));
                            bound
                        }
                        Inherited::Datagram(socket, local) => {
                            no_udp(addr)?;
                            let bound = ListenAddr::Udp(local);
                            datagrams.push((socket, bound.clone(), index));
                            bound
                        }
                    },
                    ListenAddr::Udp(socket_addr) => {
                        no_udp(addr)?;
                        let (socket, bound) = bind_udp(*socket_addr).map_err(failed)?;
                        let bound = ListenAddr::Udp(bound);
                        datagrams.push((socket, bound.clone(), index));
                        bound
                    }
                    _ => {
                        let (listener, bound) =
                            Listener::bind(addr, self.config.backlog, self.config.reuse_port)
                                .map_err(failed)?;
                        listeners.push((listener, bound.clone(), index));
                        bound
                    }
                };
                listening.push(Listening { handler: spec.name.clone(), addr: bound });
            }
            let mut service = Service::new(spec.name, spec.handler, spec.codec);
            service.room_name = spec.room;
            services.push(service);
        }
        let (reactor, handle) =
            Reactor::new(services, listeners, datagrams, tls, &self.config, self.handle_signals)
                .map_err(StartError::Io)?;
        Ok(Server { reactor, handle, listening })
    }
}

/// A server with its listeners bound, ready to run.
pub struct Server {
    reactor: Reactor,
    handle: ServerHandle,
    listening: Vec<Listening>,
}

impl Server {
    /// Starts describing a server with these limits.
    pub fn builder(config: ServerConfig) -> ServerBuilder {
        ServerBuilder { config, services: Vec::new(), handle_signals: false }
    }

    /// The bound listeners, in the order they were given.
    pub fn listening(&self) -> &[Listening] {
        &self.listening
    }

    /// A handle to stop the server or read its stats from another thread.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Serves in this thread until shut down and drained.
    pub fn run(self) -> io::Result<RunSummary> {
        self.reactor.run()
    }

    /// Serves in a new thread. Dropping the returned value shuts the server down and waits.
    pub fn spawn(self) -> io::Result<RunningServer> {
        let handle = self.handle.clone();
        let listening = self.listening.clone();
        let thread =
            std::thread::Builder::new().name("evloop-reactor".to_string()).spawn(move || self.run())?;
        Ok(RunningServer { handle, listening, thread: Some(thread) })
    }
}

/// A server running in its own thread.
pub struct RunningServer {
    handle: ServerHandle,
    listening: Vec<Listening>,
    thread: Option<JoinHandle<io::Result<RunSummary>>>,
}

impl RunningServer {
    /// The bound listeners.
    pub fn listening(&self) -> &[Listening] {
        &self.listening
    }

    /// A handle to the server.
    pub fn handle(&self) -> &ServerHandle {
        &self.handle
    }

    /// A copy of the server's stats.
    pub fn stats(&self) -> io::Result<Stats> {
        self.handle.stats()
    }

    /// Shuts down gracefully and waits for the reactor to finish.
    pub fn stop(mut self) -> io::Result<RunSummary> {
        self.handle.shutdown();
        self.join()
    }

    fn join(&mut self) -> io::Result<RunSummary> {
        match self.thread.take() {
            Some(thread) => {
                thread.join().unwrap_or_else(|_| Err(io::Error::other("the reactor thread panicked")))
            }
            None => Err(io::Error::other("already stopped")),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.handle.shutdown();
            let _ = self.join();
        }
    }
}

/// The console speaks HTTP and WebSocket, and shows every client's address: a
/// non-loopback address is served, with a warning. Checked the same way for the reactor
/// and for the models (`models/`), which serve the console on a thread of their own.
pub(crate) fn console_allowed(spec: &ListenSpec) -> Result<(), StartError> {
    if spec.codec != Codec::Ws {
        return Err(StartError::Config(format!(
            "the console speaks HTTP and WebSocket, not {}: --listen console=ADDR",
            spec.codec
        )));
    }
    for addr in &spec.addrs {
        if !addr.is_loopback() {
            log::warn!(
                "the console shows every client's address and traffic to whoever opens it; listen={addr} is not a loopback address (docs/operations.md)"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A startup line ends with what its listener speaks: the codec, none for datagrams, the
    /// chat page of a ws listener, HTTP for metrics; the address stays the fourth word.
    #[test]
    fn startup_lines_say_what_a_listener_speaks() {
        let line = |handler: &str, addr: &str, codec: Codec| {
            Listening { handler: handler.to_string(), addr: addr.parse().unwrap() }.startup_line(codec)
        };
        assert_eq!(line("echo", "127.0.0.1:7000", Codec::Line), "echo listening on 127.0.0.1:7000 (line)");
        assert_eq!(line("echo", "127.0.0.1:7100", Codec::Raw), "echo listening on 127.0.0.1:7100 (raw)");
        assert_eq!(
            line("echo", "unix:/tmp/e.sock", Codec::Fixed(16)),
            "echo listening on unix:/tmp/e.sock (fixed:16)"
        );
        assert_eq!(
            line("sum", "udp://127.0.0.1:7102", Codec::Line),
            "sum listening on udp://127.0.0.1:7102 (datagrams, no framing)"
        );
        assert_eq!(
            line("broadcast", "tls://127.0.0.1:7443", Codec::Ws),
            "broadcast listening on tls://127.0.0.1:7443 (ws, chat page at /)"
        );
        assert_eq!(
            line("metrics", "127.0.0.1:9100", Codec::Raw),
            "metrics listening on 127.0.0.1:9100 (http, GET /metrics)"
        );
    }
}
