//! Handlers: what a listener does with each message.
//!
//! A [`Handler`] gets one decoded message at a time and writes what it wants done into an
//! [`Outbox`]: reply, send to another connection, send to the rest of its room, close. It never
//! touches a socket; the reactor carries the intents out. The built-in handlers are one file
//! each, and [`by_name`] picks one from the command line.

mod broadcast;
mod echo;
mod handler;
mod outbox;
mod sum;
mod uppercase;
pub(crate) mod work;

pub use broadcast::Broadcast;
pub use echo::Echo;
pub use handler::{ConnId, Handler, Peer, Recipient};
pub use outbox::{Intent, Outbox};
pub use sum::Sum;
pub use uppercase::Uppercase;

#[cfg(test)]
pub(crate) use outbox::test_support;
#[cfg(test)]
pub(crate) use sum::sum;

/// The names `--listen` accepts.
pub const NAMES: [&str; 4] = ["echo", "uppercase", "sum", "broadcast"];

/// A fresh instance of the built-in handler called `name`.
pub fn by_name(name: &str) -> Option<Box<dyn Handler>> {
    match name {
        "echo" => Some(Box::new(Echo)),
        "uppercase" => Some(Box::new(Uppercase)),
        "sum" => Some(Box::new(Sum)),
        "broadcast" => Some(Box::new(Broadcast)),
        _ => None,
    }
}
