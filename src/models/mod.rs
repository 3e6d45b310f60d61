//! The classic server models, for comparison with the reactor (`--model`).
//!
//! - `iterative`: one thread; accept a client, serve it until it leaves, then the next (the
//!   sequential server of the socket tutorials).
//! - `threads`: one blocking thread per connection (the classic concurrent server).
//! - `fork`: a process per connection (inetd's `nowait` services).
//! - `select`, `poll`: one thread, non-blocking sockets, the whole interest set handed to
//!   the kernel and scanned every turn (the course's `select.select` loop).
//! - `reactor`: the mio event loop this crate is about (`server`).
//!
//! All of them run the same handlers with the same codecs and the same serve step, so what
//! differs between them is only how one machine's CPUs are shared among clients. The three
//! blocking ones share their accept loop (`accept.rs`) and their serve loop (`blocking.rs`),
//! and differ in what they do with a client: serve it inline, in a thread, in a process. They exist to be
//! measured side by side (docs/apparent-concurrency.md); the production server is the
//! reactor, and only it enforces every limit (the models apply `--max-frame`,
//! `--max-connections` and `--work-us`).
//!
//! Each of them serves the live console (`--listen console=ADDR`, `console/`) from a thread
//! of its own: the loops (`select`, `poll`) stream their turns, the blocking models send
//! snapshots only (they have no turns).

mod accept;
mod blocking;
mod console;
mod fork;
mod iterative;
mod scan;
mod threads;

use std::fmt;
use std::io;
use std::str::FromStr;

use crate::codec::Codec;
use crate::config::{ListenSpec, ServerConfig};
use crate::handlers::{self, Handler};
use crate::server::{Listening, StartError};
use crate::stats::RunSummary;
use crate::sys::address::ListenAddr;

/// How the server shares its CPUs among clients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Model {
    /// The mio event loop: one thread, every client.
    #[default]
    Reactor,
    /// One client at a time.
    Iterative,
    /// A thread per connection.
    Threads,
    /// One thread scanning every socket with `select(2)` each turn.
    Select,
    /// One thread scanning every socket with `poll(2)` each turn.
    Poll,
    /// A process per connection, forked for it.
    Fork,
}

impl FromStr for Model {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "reactor" => Ok(Model::Reactor),
            "iterative" => Ok(Model::Iterative),
            "threads" => Ok(Model::Threads),
            "select" => Ok(Model::Select),
            "poll" => Ok(Model::Poll),
            "fork" => Ok(Model::Fork),
            _ => Err(format!(
                "unknown model '{}': expected reactor, iterative, threads, fork, select or poll",
                text.escape_debug()
            )),
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Model::Reactor => "reactor",
            Model::Iterative => "iterative",
            Model::Threads => "threads",
            Model::Select => "select",
            Model::Poll => "poll",
            Model::Fork => "fork",
        })
    }
}

/// A service of a blocking model: a handler, its codec, its listeners.
pub struct BlockingService {
    /// The handler's name.
    pub name: String,
    /// The handler.
    pub handler: Box<dyn Handler>,
    /// Its codec.
    pub codec: Codec,
    /// Its bound listeners (blocking std sockets), with their real addresses.
    pub listeners: Vec<(std::net::TcpListener, ListenAddr)>,
}

/// Binds `specs` for blocking model `model` (TCP only). Returns the services and the
/// startup lines. What a blocking model cannot do is refused here by what it needs, with
/// one line naming the model: a handler that needs the reactor's sockets or counters, a
/// codec with a handshake (a session per connection), a PROXY header.
pub fn bind(
    model: Model,
    specs: &[ListenSpec],
    config: &ServerConfig,
) -> Result<(Vec<BlockingService>, Vec<Listening>), StartError> {
    let mut services = Vec::new();
    let mut listening = Vec::new();
    if config.proxy_protocol {
        return Err(StartError::Config(format!(
            "--proxy-protocol needs the reactor (a connection is served only after its header): --model {model} cannot read it"
        )));
    }
    for spec in specs {
        config.check_codec(spec.codec).map_err(StartError::Config)?;
        let is_console = spec.handler == "console";
        if is_console {
            crate::server::console_allowed(spec)?;
        }
        if ["file", "metrics", "chat"].contains(&spec.handler.as_str()) {
            return Err(StartError::Config(format!(
                "{} runs on the reactor only (it needs the reactor's sockets or counters), not --model {model}",
                spec.handler
            )));
        }
        // The console's WebSocket is served by its own thread (`console/`), not the model.
        if spec.codec.has_session() && !is_console {
            return Err(StartError::Config(format!(
                "{}:{} needs the reactor (a handshake and a session per connection), not --model {model}",
                spec.handler, spec.codec
            )));
        }
        let handler = handlers::by_name(&spec.handler)
            .ok_or_else(|| StartError::Config(format!("unknown handler '{}'", spec.handler)))?;
        let mut listeners = Vec::new();
        for addr in &spec.addrs {
            let ListenAddr::Tcp(socket_addr) = addr else {
                return Err(StartError::Config(format!(
                    "cannot listen on {addr}: --model {model} serves TCP only"
                )));
            };
            let listener: std::net::TcpListener =
                crate::sys::socket::listen_socket(*socket_addr, config.backlog, false)
                    .map_err(|source| StartError::Bind { addr: addr.clone(), source })?
                    .into();
            let bound = ListenAddr::Tcp(listener.local_addr().map_err(StartError::Io)?);
            listening.push(Listening { handler: spec.handler.clone(), addr: bound.clone() });
            listeners.push((listener, bound));
        }
        services.push(BlockingService { name: spec.handler.clone(), handler, codec: spec.codec, listeners });
    }
    Ok((services, listening))
}

/// Runs `services` under `model` until SIGINT/SIGTERM, within `config`'s limits (the models
/// apply `max_frame`, `max_connections` and `work_per_message`).
pub fn run(model: Model, services: Vec<BlockingService>, config: &ServerConfig) -> io::Result<RunSummary> {
    let limits = config.limits();
    let mut services = services;
    let ws_options = crate::codec::ws::Options {
        origins: config.ws_origins.clone(),
        deflate: cfg!(feature = "deflate"),
        page: crate::console::PAGE,
    };
    let console = console::Console::start(model, &mut services, ws_options, limits.max_output)?;
    let clients = console.as_ref().and_then(console::Console::clients);
    let tap = console.as_ref().and_then(|console| console.tap(model));
    let summary = match model {
        Model::Iterative => iterative::run(services, &limits, clients),
        Model::Threads => threads::run(services, &limits, clients),
        Model::Select => scan::run(scan::Scan::Select, services, &limits, tap),
        Model::Poll => scan::run(scan::Scan::Poll, services, &limits, tap),
        Model::Fork => fork::run(services, &limits, clients),
        Model::Reactor => Err(io::Error::new(io::ErrorKind::InvalidInput, "the reactor runs through Server")),
    };
    if let Some(console) = console {
        console.stop();
    }
    summary
}
