//! evloop: a single-threaded event-loop (reactor) server on `mio`.
//!
//! One thread and one `mio::Poll` serve every listener and every client: each turn of the
//! loop takes the sockets that are ready, reads what they sent, hands each complete message to
//! the listener's [`Handler`], and writes the replies, never blocking, and never letting one
//! client hold the thread for long. Connections live in a `slab::Slab` keyed by their token.
//!
//! Serve your own handler on a free port, talk to it, stop it:
//!
//! ```
//! use std::io::{BufRead, BufReader, Write};
//! use std::net::TcpStream;
//!
//! use evloop::{Codec, Handler, ListenAddr, Outbox, Peer, Server, ServerConfig};
//!
//! /// Replies with the message reversed.
//! struct Reverse;
//!
//! impl Handler for Reverse {
//!     fn on_message(&mut self, _from: Peer<'_>, message: &[u8], out: &mut Outbox) {
//!         out.reply_with(|reply| reply.extend(message.iter().rev()));
//!     }
//! }
//!
//! let mut config = ServerConfig::default();
//! config.max_frame = 1024;
//! let server = Server::builder(config)
//!     .serve("reverse", Reverse, Codec::Line, ["127.0.0.1:0".parse()?])
//!     .bind()?
//!     .spawn()?;
//! let ListenAddr::Tcp(addr) = &server.listening()[0].addr else { unreachable!() };
//!
//! let mut client = TcpStream::connect(addr)?;
//! client.write_all(b"hello\n")?;
//! let mut reply = String::new();
//! BufReader::new(&client).read_line(&mut reply)?;
//! assert_eq!(reply, "olleh\n");
//!
//! // Closed first: a stop lets connected clients finish (up to the linger time), and this one
//! // has nothing more to say.
//! drop(client);
//! let summary = server.stop()?;
//! assert_eq!(summary.stats.messages_in, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Features
//! - `cli` (default): what the `evloop-server` binary needs beyond the library (`clap`,
//!   `env_logger`, JSON run summaries): the `cli` module.
//! - `load` (default): the load generator behind `evloop-load`, the `load` module, with its
//!   histograms, progress line, charts and JSON reports.
//! - `serde`: `Serialize`/`Deserialize` for [`Stats`] and [`RunSummary`] (on with `cli`).
//!
//! `evloop = { path = "../evloop", default-features = false }` (or `git = "URL"`: the crate
//! is not on crates.io yet) builds the reactor, the codecs, the handlers and the server
//! builder, on `mio`, `slab`, `log`, `socket2`, `signal-hook` and `libc` alone, with `rustls`
//! for TLS and `flate2` for WebSocket compression (features `tls` and `deflate`, both on by
//! default; `default-features = false` leaves them out).
//!
//! # Layout
//! - [`server`](Server): build, bind, run or spawn a server; its configuration, stats and
//!   run summary.
//! - `reactor`: the event loop (routing each event to its source) and a connection's turn
//!   (read, decode, serve, write, settle); what the loop does for others (accepting, carrying
//!   out intents, rooms, closing); what it owns: connections, services, rooms, the buffer
//!   pool, the timer wheels.
//! - [`handlers`]: the [`Handler`] trait, the serve step every server shares and its
//!   [`Outbox`], and the built-in handlers.
//! - [`codec`]: framing, `line`, `length`, `fixed:N`, `raw`, and `ws` (WebSocket, a session
//!   with a handshake); pure, bytes in, messages out.
//! - `console`: the live console's messages (turns, the cap, snapshots) and its page, sans
//!   I/O, shared by the reactor and the models.
//! - `backplane`: rooms across processes and hosts over Redis or NATS pub/sub.
//! - `sys`: addresses, sockets and every system call, shared by the server and the loader,
//!   and the one gate every non-blocking read and write goes through.
//! - `models`: the iterative, thread-per-connection, process-per-connection, `select` and
//!   `poll` servers, for comparison (`--model`, feature `cli`).
//! - `load`: the load generator, its own module tree (feature `load`).
//! - `cli`: the binaries' support: units, worker processes (feature `cli`).
//!
//! docs/architecture.md draws the picture and says what each module may import.

mod backplane;
pub mod codec;
mod config;
mod console;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod handlers;
mod log_throttle;
#[cfg(feature = "cli")]
mod models;
mod preamble;
mod reactor;
mod server;
mod stats;
mod sys;
mod timeline;
mod transport;

#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "load")]
pub mod load;

pub use backplane::{BackplaneUrl, BackplaneUrls};
pub use codec::Codec;
pub use config::{ListenSpec, ServerConfig};
pub use handlers::{ConnId, Handler, Outbox, Peer, Recipient};
pub use reactor::control::ServerHandle;
pub use server::{Listening, RunningServer, Server, ServerBuilder, StartError};
pub use stats::{PoolStats, RunSummary, Stats};
pub use sys::address::{ListenAddr, PeerAddr};
pub use sys::rlimit::{FileLimit, raise_file_limit};
