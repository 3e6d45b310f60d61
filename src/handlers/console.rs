//! `console`: the loop, watched live in a browser (`--listen console=ADDR`). `GET /` is the
//! console page, and a WebSocket opened on it (at `/live`) is a watcher: the reactor sends it
//! every turn that served a client, and a snapshot of the connections, rooms and loop figures
//! every second (`reactor/console.rs` writes them). The handler has nothing to do with what a
//! watcher sends; what it marks is that its connections watch the loop, and so are never in
//! what it shows (watching must not feed itself).

use crate::handlers::{Handler, Outbox, Peer};

/// See the module documentation.
#[derive(Debug, Default, Clone, Copy)]
pub struct Console;

impl Handler for Console {
    fn on_message(&mut self, _from: Peer<'_>, _message: &[u8], _out: &mut Outbox) {}

    /// A watcher is a WebSocket connection.
    fn needs_connections(&self) -> bool {
        true
    }

    fn watches_the_loop(&self) -> bool {
        true
    }
}
