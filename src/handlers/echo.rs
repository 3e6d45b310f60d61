//! `echo`: the reply is the message.

use crate::handlers::{Handler, Outbox, Peer};

/// Replies with the message, byte for byte.
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

impl Handler for Echo {
    fn on_message(&mut self, _from: Peer<'_>, message: &[u8], out: &mut Outbox) {
        out.reply(message);
    }
}

#[cfg(test)]
mod tests {
    use crate::handlers::test_support::only_reply;

    /// The reply is the message, empty included.
    #[test]
    fn echoes() {
        assert_eq!(only_reply(&mut super::Echo, b"hello"), "hello");
        assert_eq!(only_reply(&mut super::Echo, b""), "");
    }
}
