//! Handlers: what a listener does with each message.
//!
//! A [`Handler`] gets one decoded message at a time and writes what it wants done into an
//! [`Outbox`]: reply, send to another connection, send to the rest of its room, close. It never
//! touches a socket; the reactor carries the intents out. The built-in handlers are one file
//! each, and [`by_name`] picks one from the command line.

mod broadcast;
mod chat;
mod clock;
mod console;
mod daytime;
mod echo;
mod file;
mod handler;
mod metrics;
pub(crate) mod serve;
mod sum;
mod time;
mod uppercase;
pub(crate) mod work;

pub use broadcast::Broadcast;
pub use chat::Chat;
pub use console::Console;
pub use daytime::Daytime;
pub use echo::Echo;
pub use file::FileServer;
pub use handler::{ConnId, Handler, Peer, Recipient, RoomEvent};
pub use metrics::Metrics;
pub use serve::{Intent, Outbox};
pub use sum::Sum;
pub use time::Time;
pub use uppercase::Uppercase;

use crate::codec::Codec;

#[cfg(test)]
pub(crate) use serve::test_support;
/// For the loader's sum workload to check its expected totals against (its tests only).
#[cfg(all(test, feature = "load"))]
pub(crate) use sum::sum;

/// The names `--listen` accepts.
pub const NAMES: [&str; 10] =
    ["echo", "uppercase", "sum", "broadcast", "chat", "daytime", "time", "file", "metrics", "console"];

/// The codec a listener of handler `name` uses when its spec names none: `line` for the
/// request-reply handlers; `raw` for `daytime` and `time`, whose replies are exact bytes
/// (a `\r\n`-ended line, a 4-byte number).
pub fn default_codec(name: &str) -> Codec {
    match name {
        "daytime" | "time" | "metrics" => Codec::Raw,
        "console" => Codec::Ws,
        _ => Codec::Line,
    }
}

/// A fresh instance of the built-in handler called `name`; `None` for an unknown name, and
/// for `file`, which needs its directory ([`FileServer::new`]).
pub fn by_name(name: &str) -> Option<Box<dyn Handler>> {
    match name {
        "echo" => Some(Box::new(Echo)),
        "uppercase" => Some(Box::new(Uppercase)),
        "sum" => Some(Box::new(Sum)),
        "broadcast" => Some(Box::new(Broadcast)),
        "chat" => Some(Box::new(Chat::default())),
        "daytime" => Some(Box::new(Daytime)),
        "time" => Some(Box::new(Time)),
        "metrics" => Some(Box::new(Metrics::default())),
        "console" => Some(Box::new(Console)),
        _ => None,
    }
}
