//! What the server is told to do: its listeners ([`ListenSpec`]) and its limits
//! ([`ServerConfig`]). Every limit has a default that is safe to run with, and each exists
//! to bound something a client could otherwise grow without end.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use log::{debug, warn};

use crate::backplane::{BackplaneUrls, DEFAULT_PING};
use crate::codec::Codec;
use crate::handlers;
use crate::sys::address::ListenAddr;
use crate::sys::rlimit;

/// The server's limits. `ServerConfig::default()` is what `evloop-server` runs with; change
/// what you need on a mutable copy:
///
/// ```
/// let mut config = evloop::ServerConfig::default();
/// config.max_frame = 1024;
/// config.idle_timeout = Some(std::time::Duration::from_secs(30));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Most client connections open at once; past it a new client gets `ERR server full` and
    /// is closed. `None`: the file-descriptor limit less 32 (kept for listeners, the poller
    /// and logs), so that a full server answers clearly instead of failing `accept` with
    /// EMFILE.
    pub max_connections: Option<usize>,
    /// Longest message (line or length-prefixed frame) accepted, in bytes. It bounds the
    /// input a connection can make the server hold.
    pub max_frame: usize,
    /// Pending output a connection may have before it counts as slow: past it the server
    /// stops reading that client's requests until it drains (its own replies), or
    /// disconnects it (messages other clients sent it, e.g. `broadcast`).
    pub max_output: usize,
    /// The most memory all clients together may hold, in bytes: unfinished input, pending
    /// output, what waits inside their transport (TLS records) and protocol (a WebSocket
    /// message's fragments). Past it the clients holding most are evicted (told, then
    /// closed) until they hold less. 0: no budget. Under `--workers N`, each worker gets
    /// an Nth. Default: 256 MiB.
    pub max_client_memory: usize,
    /// Most connections open at once from one IP address; the next is turned away
    /// (`ERR too many connections from your address`). `None`: no limit (load tests come
    /// from one address). Per process: under `--workers`, each worker counts its own.
    pub max_connections_per_ip: Option<usize>,
    /// Lines a room whose handler keeps history (`chat`) keeps for newcomers (`--history`):
    /// a member who joins gets them first. 0: none. Default: 20.
    pub history: usize,
    /// Close connections that moved no bytes for this long. Off by default.
    pub idle_timeout: Option<Duration>,
    /// The listen backlog asked of the kernel (Linux caps it at `net.core.somaxconn`).
    pub backlog: u32,
    /// Log a stats line this often. Off by default.
    pub stats_interval: Option<Duration>,
    /// On SIGINT/SIGTERM, how long to keep flushing pending output before closing anyway.
    pub drain_timeout: Duration,
    /// Bind with `SO_REUSEPORT`, so several worker processes can share one port.
    pub reuse_port: bool,
    /// CPU work (busy, not sleep) added to every message, to study handler cost
    /// (`--work-us`): in one thread, a slow message delays every other client.
    pub work_per_message: Duration,
    /// The pub/sub engine that carries rooms (`broadcast`) between servers: worker
    /// processes and hosts started with the same backplane share their rooms. `None`: each
    /// room is local to this process.
    pub backplane: Option<BackplaneUrls>,
    /// How often an idle backplane link is pinged, and how long a connect, handshake or ping
    /// may take before the link counts as dead and is retried.
    pub backplane_ping: Duration,
    /// The directory `file` listeners serve (`--files`); a `file` listener without one is
    /// refused at start.
    pub files: Option<std::path::PathBuf>,
    /// Files being sent at once, at most, over all connections (each holds a descriptor);
    /// further downloads wait their turn.
    pub max_file_sends: usize,
    /// Write a timeline of the run here, in the Trace Event Format (Perfetto,
    /// chrome://tracing), when the server stops. Off by default.
    pub trace_file: Option<std::path::PathBuf>,
    /// Events the timeline keeps at most; past it, recording stops and the file says so.
    pub trace_limit: usize,
    /// Every TCP listener is behind a balancer that sends the PROXY protocol (v1 or v2):
    /// each connection's first bytes name the real client, which then replaces the
    /// balancer's address everywhere; a connection without a valid header is closed.
    pub proxy_protocol: bool,
    /// `tls://` listeners: the certificate chain (PEM) and its private key (PEM); a
    /// `tls://` listener without both is refused at start. `SIGUSR1` reads them again.
    pub tls_cert: Option<std::path::PathBuf>,
    /// See [`tls_cert`](Self::tls_cert).
    pub tls_key: Option<std::path::PathBuf>,
    /// `ws` listeners: which pages may open a WebSocket (browsers send their page's
    /// origin); by default pages of the same host and port, and clients that send no
    /// Origin (not browsers).
    pub ws_origins: crate::codec::ws::Origins,
    /// `ws` listeners: ping a client that sent nothing for this long, and close it if it
    /// has not answered by the next interval. `None`: never.
    pub ws_ping: Option<Duration>,
    /// How long a new connection may take to be ready to serve: its PROXY header, a TLS or
    /// WebSocket handshake. A connection that is not ready by then is closed; until it is,
    /// its handler has not heard of it and it is in no room.
    pub handshake_timeout: Duration,
    /// Under `--workers`: (the descriptor of the shared memory the supervisor made for the
    /// workers' metrics, this worker's index). Each worker keeps its counters in its slot
    /// there, so a scrape that reaches any of them shows totals over all.
    pub shared_metrics: Option<(i32, usize)>,
}

/// The listen backlog asked for by default: the most the kernel allows. Linux silently caps
/// it at `net.core.somaxconn` (4096 by default since 5.4), so raising that sysctl is all it
/// takes to absorb larger connect storms (measured in docs/benchmarks.md).
pub const DEFAULT_BACKLOG: u32 = 65535;

/// What all clients of a server may hold together by default (`--max-client-memory`): a
/// fixed size that a default server on a small VM survives (a 1 GiB machine keeps most of
/// its memory), and far more than honest clients hold: an echo client holds nothing
/// between messages, a client in the middle of a 1 KiB message one 4 KiB buffer (so 64,000
/// of them at once fit).
pub const DEFAULT_CLIENT_MEMORY: usize = 256 * 1024 * 1024;

/// Descriptors kept back from `max_connections`'s default for listeners, the poller, the
/// signal pipe, standard streams and log files.
const RESERVED_DESCRIPTORS: usize = 32;

/// The limits a server enforces, resolved from a [`ServerConfig`] (the reactor and the
/// blocking models alike).
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    pub max_connections: usize,
    pub max_frame: usize,
    pub max_output: usize,
    pub max_client_memory: usize,
    pub max_connections_per_ip: Option<usize>,
    pub drain_timeout: Duration,
    pub handshake_timeout: Duration,
    pub work_per_message: Duration,
    pub max_file_sends: usize,
    pub trace_file: Option<std::path::PathBuf>,
    pub trace_limit: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: None,
            max_frame: 64 * 1024,
            max_output: 1024 * 1024,
            max_client_memory: DEFAULT_CLIENT_MEMORY,
            max_connections_per_ip: None,
            history: 20,
            idle_timeout: None,
            backlog: DEFAULT_BACKLOG,
            stats_interval: None,
            drain_timeout: Duration::from_secs(5),
            reuse_port: false,
            work_per_message: Duration::ZERO,
            backplane: None,
            backplane_ping: DEFAULT_PING,
            files: None,
            max_file_sends: 256,
            trace_file: None,
            trace_limit: super::timeline::DEFAULT_LIMIT,
            proxy_protocol: false,
            handshake_timeout: Duration::from_secs(10),
            tls_cert: None,
            tls_key: None,
            ws_origins: crate::codec::ws::Origins::SameHost,
            ws_ping: Some(Duration::from_secs(30)),
            shared_metrics: None,
        }
    }
}

impl ServerConfig {
    /// Refuses a codec that would let one connection buffer more than `max_frame`: a
    /// `fixed:N` frame is held whole until complete, so N past the limit would bypass it.
    pub(crate) fn check_codec(&self, codec: Codec) -> Result<(), String> {
        match codec {
            Codec::Fixed(size) if size as usize > self.max_frame => Err(format!(
                "fixed:{size} frames are longer than --max-frame {}: raise --max-frame to at least {size}, or use a smaller N",
                self.max_frame
            )),
            _ => Ok(()),
        }
    }

    /// Turns the configured limits into the enforced ones; `max_connections` defaults to what
    /// the open-file limit allows, and a configured value above that is warned about plainly.
    pub(crate) fn limits(&self) -> Limits {
        let file_limit = rlimit::file_limit().map(|limit| limit.soft).unwrap_or(1024);
        let fits =
            usize::try_from(file_limit).unwrap_or(usize::MAX).saturating_sub(RESERVED_DESCRIPTORS).max(1);
        let max_connections = match self.max_connections {
            Some(wanted) => {
                if wanted > fits {
                    warn!(
                        "max_connections={wanted} but the open-file limit is {file_limit}: about {fits} connections fit in one process; raise the limit (ulimit -n) or use --workers"
                    );
                }
                wanted
            }
            None => fits,
        };
        debug!("limits; max_connections={max_connections} file_limit={file_limit}");
        Limits {
            max_connections,
            max_frame: self.max_frame,
            max_output: self.max_output,
            max_client_memory: self.max_client_memory,
            max_connections_per_ip: self.max_connections_per_ip,
            drain_timeout: self.drain_timeout,
            handshake_timeout: self.handshake_timeout,
            work_per_message: self.work_per_message,
            max_file_sends: self.max_file_sends.max(1),
            trace_file: self.trace_file.clone(),
            trace_limit: self.trace_limit,
        }
    }
}

/// One `--listen HANDLER[:CODEC][@ROOM]=ADDR[,ADDR...]`: a handler, its codec, the room it
/// serves, and where it listens.
///
/// Several addresses in one spec share one handler instance: for `broadcast` that means one
/// chat room reachable over each of them. With a backplane, servers whose specs name the same
/// room share it; a spec without `@ROOM` is in the room `default`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenSpec {
    /// A built-in handler's name (see [`handlers::NAMES`]).
    pub handler: String,
    /// How messages are framed on this listener.
    pub codec: Codec,
    /// Where it listens; at least one.
    pub addrs: Vec<ListenAddr>,
    /// The room it serves (handlers with a room, such as `broadcast`); `None`:
    /// `default`.
    pub room: Option<String>,
}

/// The room of a listener whose spec names none.
pub const DEFAULT_ROOM: &str = "default";

/// Checks a room name: it becomes part of a Redis channel and a NATS subject, so it is kept
/// to letters, digits, `-` and `_` (no spaces, no NATS wildcards or separators).
pub fn check_room_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if valid {
        Ok(())
    } else {
        Err(format!("bad room name {name:?}: expected 1 to 64 letters, digits, '-' or '_'"))
    }
}

impl ListenSpec {
    /// The listeners `evloop-server` runs when given no `--listen`, all on loopback: the
    /// line-framed services on 7000-7003; the broadcast room again over WebSocket on 7080
    /// (one room with 7003: `GET /` there is a chat page, so a browser chats with `nc`); for the classic course's clients (a blocking
    /// `sendall` with no newline, then `recv(1024)`), the same services with `raw` framing
    /// on 7100-7102 over TCP and UDP; and the time-of-day services on 7013 (daytime) and
    /// 7037 (time), over TCP and UDP, one above the port numbers the RFCs gave them (13
    /// and 37), which need privileges.
    pub fn defaults() -> Vec<ListenSpec> {
        let tcp = |port: u16| ListenAddr::Tcp(([127, 0, 0, 1], port).into());
        let udp = |port: u16| ListenAddr::Udp(([127, 0, 0, 1], port).into());
        let spec = |handler: &str, codec: Codec, addrs: Vec<ListenAddr>| ListenSpec {
            handler: handler.to_string(),
            codec,
            addrs,
            room: None,
        };
        vec![
            spec("echo", Codec::Line, vec![tcp(7000)]),
            spec("uppercase", Codec::Line, vec![tcp(7001)]),
            spec("sum", Codec::Line, vec![tcp(7002)]),
            spec("chat", Codec::Line, vec![tcp(7003)]),
            spec("chat", Codec::Ws, vec![tcp(7080)]),
            spec("echo", Codec::Raw, vec![tcp(7100), udp(7100)]),
            spec("uppercase", Codec::Raw, vec![tcp(7101), udp(7101)]),
            spec("sum", Codec::Raw, vec![tcp(7102), udp(7102)]),
            spec("daytime", Codec::Raw, vec![tcp(7013), udp(7013)]),
            spec("time", Codec::Raw, vec![tcp(7037), udp(7037)]),
            spec("console", Codec::Ws, vec![tcp(7090)]),
        ]
    }
}

impl FromStr for ListenSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let Some((service, addrs)) = text.split_once('=') else {
            return Err(format!(
                "bad listener '{}': expected HANDLER[:CODEC][@ROOM]=ADDR, e.g. echo=127.0.0.1:7000",
                text.escape_debug()
            ));
        };
        let (service, room) = match service.split_once('@') {
            Some((service, room)) => {
                check_room_name(room)?;
                (service, Some(room.to_string()))
            }
            None => (service, None),
        };
        let (handler, codec) = match service.split_once(':') {
            Some((handler, codec)) => (handler, codec.parse::<Codec>()?),
            None => (service, handlers::default_codec(service)),
        };
        if !handlers::NAMES.contains(&handler) {
            return Err(format!(
                "unknown handler '{}': expected one of {}",
                handler.escape_debug(),
                handlers::NAMES.join(", ")
            ));
        }
        let addrs = addrs.split(',').map(str::parse::<ListenAddr>).collect::<Result<Vec<_>, _>>()?;
        Ok(ListenSpec { handler: handler.to_string(), codec, addrs, room })
    }
}

impl fmt::Display for ListenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.handler)?;
        if self.codec != handlers::default_codec(&self.handler) {
            write!(f, ":{}", self.codec)?;
        }
        if let Some(room) = &self.room {
            write!(f, "@{room}")?;
        }
        let addrs: Vec<String> = self.addrs.iter().map(ToString::to_string).collect();
        write!(f, "={}", addrs.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The forms the issue names parse, codec included.
    #[test]
    fn parses_listen_specs() {
        let spec: ListenSpec = "echo=127.0.0.1:7000".parse().unwrap();
        assert_eq!(spec.handler, "echo");
        assert_eq!(spec.codec, Codec::Line);
        let spec: ListenSpec = "sum:length=[::1]:0".parse().unwrap();
        assert_eq!(spec.codec, Codec::Length);
        assert_eq!(spec.addrs, vec!["[::1]:0".parse().unwrap()]);
        let spec: ListenSpec = "echo:fixed:16=127.0.0.1:0,unix:/tmp/e.sock".parse().unwrap();
        assert_eq!(spec.codec, Codec::Fixed(16));
        assert_eq!(spec.addrs.len(), 2);
        assert_eq!(spec.to_string(), "echo:fixed:16=127.0.0.1:0,unix:/tmp/e.sock");
        let spec: ListenSpec = "broadcast:length@lobby-2=127.0.0.1:0".parse().unwrap();
        assert_eq!((spec.codec, spec.room.as_deref()), (Codec::Length, Some("lobby-2")));
        assert_eq!(spec.to_string(), "broadcast:length@lobby-2=127.0.0.1:0");
    }

    /// Room names that would not make a clean channel or subject are refused.
    #[test]
    fn refuses_bad_room_names() {
        for text in ["broadcast@=127.0.0.1:0", "broadcast@a.b=127.0.0.1:0", "broadcast@a*=127.0.0.1:0"] {
            let error = text.parse::<ListenSpec>().unwrap_err();
            assert!(error.contains("bad room name"), "{error}");
        }
    }

    /// The default listeners: line services on 7000-7003 (7003 the chat room), the room over
    /// WebSocket on 7080,
    /// raw ones for the course's clients on 7100-7102 (TCP and UDP), daytime on 7013 and time
    /// on 7037 (TCP and UDP).
    #[test]
    fn default_listeners_are_the_documented_ones() {
        let specs: Vec<String> = ListenSpec::defaults().iter().map(ToString::to_string).collect();
        assert_eq!(
            specs,
            [
                "echo=127.0.0.1:7000",
                "uppercase=127.0.0.1:7001",
                "sum=127.0.0.1:7002",
                "chat=127.0.0.1:7003",
                "chat:ws=127.0.0.1:7080",
                "echo:raw=127.0.0.1:7100,udp://127.0.0.1:7100",
                "uppercase:raw=127.0.0.1:7101,udp://127.0.0.1:7101",
                "sum:raw=127.0.0.1:7102,udp://127.0.0.1:7102",
                "daytime=127.0.0.1:7013,udp://127.0.0.1:7013",
                "time=127.0.0.1:7037,udp://127.0.0.1:7037",
                "console=127.0.0.1:7090",
            ]
        );
    }

    /// Unknown handlers and codecs are named in the error.
    #[test]
    fn refuses_unknown_parts() {
        let error = "nope=127.0.0.1:0".parse::<ListenSpec>().unwrap_err();
        assert!(error.contains("unknown handler 'nope'"), "{error}");
        let error = "echo:zip=127.0.0.1:0".parse::<ListenSpec>().unwrap_err();
        assert!(error.contains("unknown codec 'zip'"), "{error}");
        assert!("echo:fixed:0=127.0.0.1:0".parse::<ListenSpec>().is_err());
        assert!("echo".parse::<ListenSpec>().is_err());
    }
}
