//! The [`Handler`] trait: what a listener does with each message, and the [`Outbox`] it
//! answers through.
//!
//! Handlers never touch sockets. A handler gets one decoded message and writes its intent into
//! the outbox: reply to the sender, send to another connection, broadcast to the rest of its
//! room, or close the sender. The reactor carries that out (framing each payload with the
//! recipient's codec, queueing it, writing it when the socket can take it). That keeps every
//! handler a small file that unit tests can drive without a network.

use std::fmt;
use std::ops::Range;

use crate::address::PeerAddr;

/// A connection, as handlers see it. Valid until [`Handler::on_disconnect`] for it returns;
/// after that the number may be given to a new connection, so a handler that keeps ids
/// (in a map of nicknames, say) must drop them there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub usize);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The client a message came from.
#[derive(Clone, Copy, Debug)]
pub struct Peer<'a> {
    /// Its connection.
    pub id: ConnId,
    /// Its address, as printed by `broadcast` (`127.0.0.1:50432: hello`).
    pub addr: &'a PeerAddr,
}

/// What a listener does with messages. One instance serves every connection of its listener
/// (or of every address in one `--listen` spec), so it can hold shared state: a room, a
/// counter, a map of nicknames.
pub trait Handler: Send {
    /// A complete message arrived from `from`. Whatever is put in `out` is carried out, in
    /// order, before the next message of any client is handled.
    fn on_message(&mut self, from: Peer<'_>, message: &[u8], out: &mut Outbox);

    /// A client connected. The default does nothing.
    fn on_connect(&mut self, _peer: Peer<'_>, _out: &mut Outbox) {}

    /// A client is gone (it closed, failed, timed out, or was dropped as too slow). Replies
    /// to it are dropped; messages to others are delivered. The default does nothing.
    fn on_disconnect(&mut self, _peer: Peer<'_>, _out: &mut Outbox) {}

    /// Whether this handler needs connections to work at all (a room needs members to
    /// send to). Connectionless transports (UDP) refuse such handlers at start-up.
    fn needs_connections(&self) -> bool {
        false
    }
}

/// Who a payload is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recipient {
    /// The client whose message is being handled.
    Sender,
    /// One particular connection (ignored if it has gone).
    Conn(ConnId),
    /// Every connection of this handler's listeners except this one: the room, minus the
    /// sender.
    AllExcept(ConnId),
}

/// One thing a handler asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Intent {
    /// Send `payload` (a range of [`Outbox::payload`]) to `to`. The reactor adds the framing.
    Send {
        /// Who gets it.
        to: Recipient,
        /// Where its bytes are in the outbox.
        payload: Range<usize>,
    },
    /// Close the sender once its pending replies are written; its further input is ignored.
    Close,
}

/// Where a handler writes what it wants done. Payload bytes go into one reusable buffer, so
/// a reply costs no allocation of its own.
#[derive(Debug, Default)]
pub struct Outbox {
    payloads: Vec<u8>,
    intents: Vec<Intent>,
}

impl Outbox {
    /// Replies `payload` to the sender.
    pub fn reply(&mut self, payload: &[u8]) {
        self.send_with(Recipient::Sender, |buf| buf.extend_from_slice(payload));
    }

    /// Replies to the sender with a payload written in place by `write`.
    pub fn reply_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        self.send_with(Recipient::Sender, write);
    }

    /// Sends `payload` to `to`.
    pub fn send(&mut self, to: Recipient, payload: &[u8]) {
        self.send_with(to, |buf| buf.extend_from_slice(payload));
    }

    /// Sends to `to` a payload written in place by `write`.
    pub fn send_with(&mut self, to: Recipient, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.payloads.len();
        write(&mut self.payloads);
        self.intents.push(Intent::Send { to, payload: start..self.payloads.len() });
    }

    /// Closes the sender after its pending replies are written.
    pub fn close(&mut self) {
        self.intents.push(Intent::Close);
    }

    /// What was asked, in order.
    pub fn intents(&self) -> &[Intent] {
        &self.intents
    }

    /// The bytes of one payload range from an [`Intent::Send`].
    pub fn payload(&self, range: Range<usize>) -> &[u8] {
        &self.payloads[range]
    }

    /// Empties the outbox, keeping its memory for the next message.
    pub fn clear(&mut self) {
        self.payloads.clear();
        self.intents.clear();
    }

    /// Each intent with its payload bytes (empty for `Close`), for tests and the blocking
    /// server models.
    pub fn iter(&self) -> impl Iterator<Item = (&Intent, &[u8])> {
        self.intents.iter().map(|intent| match intent {
            Intent::Send { payload, .. } => (intent, &self.payloads[payload.clone()]),
            Intent::Close => (intent, &[][..]),
        })
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// Runs one message through `handler` from a fixed peer and returns the outbox.
    pub fn handle(handler: &mut dyn Handler, message: &[u8]) -> Outbox {
        let addr = PeerAddr::Tcp("127.0.0.1:50432".parse().unwrap());
        let mut out = Outbox::default();
        handler.on_message(Peer { id: ConnId(7), addr: &addr }, message, &mut out);
        out
    }

    /// The single reply a handler gave, as text.
    #[track_caller]
    pub fn only_reply(handler: &mut dyn Handler, message: &[u8]) -> String {
        let out = handle(handler, message);
        let sent: Vec<_> = out.iter().collect();
        assert_eq!(sent.len(), 1, "expected exactly one intent, got {:?}", out.intents());
        let (intent, payload) = sent[0];
        assert!(
            matches!(intent, Intent::Send { to: Recipient::Sender, .. }),
            "expected a reply, got {intent:?}"
        );
        String::from_utf8(payload.to_vec()).unwrap()
    }
}
