//! `broadcast`: a chat room. Each message goes to every other client of the listener as
//! `<sender-addr>: <message>`; the sender gets nothing back.
//!
//! The handler only states the intent; the reactor knows who is in the room and drops a
//! member that cannot keep up (see `ServerConfig::max_output`), so one slow reader cannot
//! grow the server's memory or hold the others back.

use std::io::Write as _;

use crate::handlers::{Handler, Outbox, Peer, Recipient};

/// Relays each message to every other member of the room.
#[derive(Debug, Default, Clone, Copy)]
pub struct Broadcast;

impl Handler for Broadcast {
    fn on_message(&mut self, from: Peer<'_>, message: &[u8], out: &mut Outbox) {
        out.send_with(Recipient::AllExcept(from.id), |buf| {
            let _ = write!(buf, "{}: ", from.addr);
            buf.extend_from_slice(message);
        });
    }

    fn needs_connections(&self) -> bool {
        true
    }

    fn has_room(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::test_support::handle;
    use crate::handlers::{ConnId, Intent};

    /// A message goes to everyone but the sender, prefixed with the sender's address.
    #[test]
    fn relays_to_the_rest_of_the_room() {
        let out = handle(&mut Broadcast, b"hello");
        let sent: Vec<_> = out.iter().collect();
        assert_eq!(sent.len(), 1);
        let (intent, payload) = sent[0];
        assert!(matches!(intent, Intent::Send { to: Recipient::AllExcept(ConnId(7)), .. }));
        assert_eq!(payload, b"127.0.0.1:50432: hello");
    }
}
