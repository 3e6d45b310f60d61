//! Serving a handler of your own through the evloop reactor: `reverse` answers each line
//! reversed, and `quit` says goodbye and closes the connection.
//!
//! Run:  cargo run --example custom_handler            (or: ... -- 127.0.0.1:0)
//! Try:  nc 127.0.0.1 7010
//!       hello        -> olleh
//!       straße       -> eßarts
//!       quit         -> bye   (and the connection closes)
//!
//! Logging: the server logs through the `log` crate. This example installs `env_logger` (a
//! dev-dependency here); in a crate of your own with `default-features = false`, add
//! `env_logger = "0.11"` for the same, or drop that line: with no logger installed, nothing
//! is printed and the server works the same.

use evloop::{Codec, Handler, Outbox, Peer, Server, ServerConfig};

/// Replies with each message reversed, character by character.
struct Reverse;

impl Handler for Reverse {
    fn on_message(&mut self, _from: Peer<'_>, message: &[u8], out: &mut Outbox) {
        if message == b"quit" {
            out.reply(b"bye");
            out.close(); // after "bye" is written
            return;
        }
        match std::str::from_utf8(message) {
            Ok(text) => out.reply_with(|reply| reply.extend(text.chars().rev().collect::<String>().bytes())),
            Err(_) => out.reply(b"ERR invalid UTF-8"),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:7010".to_string());
    let server = Server::builder(ServerConfig::default())
        .handle_signals(true)
        .serve("reverse", Reverse, Codec::Line, [addr.parse()?])
        .bind()?;
    for listener in server.listening() {
        println!("{listener}");
    }
    let summary = server.run()?;
    println!("custom_handler {summary}");
    Ok(())
}
