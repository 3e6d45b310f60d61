//! The built-in handlers, one file each, and [`by_name`] to pick one from the command line.

mod broadcast;
mod echo;
mod sum;
mod uppercase;

pub use broadcast::Broadcast;
pub use echo::Echo;
pub use sum::{Sum, SumError, sum};
pub use uppercase::Uppercase;

use crate::handler::Handler;

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
