//! evloop: a single-threaded event-loop (reactor) TCP server on `mio`.
//!
//! One thread and one `mio::Poll` serve every listener and every client: each turn of the
//! loop takes the sockets that are ready, reads what they sent, hands each complete message to
//! the listener's [`Handler`], and writes the replies, never blocking, and never letting one
//! client hold the thread for long. Connections live in a `slab::Slab` keyed by their token.
//!
//! ```no_run
//! use evloop::{Codec, Server, ServerConfig, handlers::Echo};
//!
//! let server = Server::builder(ServerConfig::default())
//!     .serve("echo", Echo, Codec::Line, ["127.0.0.1:7000".parse().unwrap()])
//!     .bind()?;
//! for listener in server.listening() {
//!     println!("{listener}");
//! }
//! server.run()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//! - [`reactor`]: the event loop, in phases: accept, input, output, idle, close.
//! - [`connection`]: one client's state: socket, partial input, pending output, flags.
//! - [`service`]: a handler, its codec and its room of connections.
//! - [`handler`]: the [`Handler`] trait and the [`Outbox`] handlers answer through.
//! - [`handlers`]: the built-in handlers, `echo`, `uppercase`, `sum`, `broadcast`.
//! - [`codec`]: framing, `line`, `length`, `fixed:N`, `raw`; pure, bytes in, messages out.
//! - [`transport`]: TCP and Unix listeners and streams behind one type each.
//! - [`address`]: listen and peer addresses, parsed and printed as users type them.
//! - [`config`]: `--listen` specs and the server's limits.
//! - [`server`]: bind, then run or spawn; the startup line.
//! - [`control`]: a handle to stop a running server or read its stats.
//! - [`stats`]: counters and the periodic stats line.
//! - [`buffer_pool`]: the few buffers busy connections borrow; idle ones hold none.
//! - [`timer_wheel`]: idle timeouts at O(1) per event.
//! - [`load`]: the load generator behind `evloop-load`, its own module tree.
//! - [`log_throttle`]: one log line a second for conditions that repeat.
//! - [`models`]: the iterative and thread-per-connection servers, for comparison.
//! - [`nonblocking`]: naming `WouldBlock`, `Interrupted` and friends.
//! - [`rlimit`]: the open-file limit.
//! - [`units`]: durations and byte sizes as typed on command lines.
//! - [`work`]: `--work-us`, CPU work per message.
//! - [`workers`]: `--workers N`: several reactor processes sharing ports via `SO_REUSEPORT`.

pub mod address;
pub mod buffer_pool;
pub mod codec;
pub mod config;
pub mod connection;
pub mod control;
pub mod handler;
pub mod handlers;
pub mod load;
pub mod log_throttle;
pub mod models;
pub mod nonblocking;
pub mod reactor;
pub mod rlimit;
pub mod server;
pub mod service;
pub mod stats;
pub mod timer_wheel;
pub mod transport;
pub mod units;
pub mod work;
pub mod workers;

pub use address::{ListenAddr, PeerAddr};
pub use codec::Codec;
pub use config::{ListenSpec, ServerConfig};
pub use control::ServerHandle;
pub use handler::{ConnId, Handler, Outbox, Peer, Recipient};
pub use reactor::RunSummary;
pub use server::{Listening, RunningServer, Server, StartError};
pub use stats::Stats;
