//! The [`Outbox`] a handler answers through: a plain-data list of intents (send this to that
//! connection, close the sender) that the reactor carries out after the handler returns.
//!
//! Payload bytes go into one reusable buffer, so a reply costs no allocation of its own, and
//! the handler never sees a socket.

use std::ops::Range;

use super::handler::Recipient;
use crate::codec::Framing;

/// One thing a handler asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
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
    /// Reply to the sender with the server's metrics, in the Prometheus text format, as an
    /// HTTP/1.1 200 response: the handler cannot see the counters, the reactor renders them.
    Metrics,
    /// Send the sender `length` bytes of the file at `path`, from `offset`, after its
    /// pending replies, as the socket drains (zero-copy where the transport allows). The
    /// sender's further requests wait until it is sent. The handler has checked the path;
    /// if the file no longer has those bytes, the connection is closed (its reply promised
    /// them).
    SendFile {
        /// The file.
        path: std::path::PathBuf,
        /// Where to start.
        offset: u64,
        /// How many bytes.
        length: u64,
    },
}

/// Where a handler writes what it wants done. Payload bytes go into one reusable buffer, so
/// a reply costs no allocation of its own.
///
/// While the reactor hands a stream connection's messages to its handler, replies to the
/// sender skip the intent list: they are framed straight into a buffer of replies that
/// becomes the connection's output (see `Outbox::frame_replies`), so a reply
/// is built once, where it is written from. Everything else, and any reply asked for after
/// something else, is an intent, so that the order of what a handler asked is kept.
#[derive(Debug, Default)]
pub struct Outbox {
    payloads: Vec<u8>,
    intents: Vec<Intent>,
    /// How replies are framed straight into `replies`; `None`: replies are intents like
    /// the rest.
    framing: Option<Framing>,
    /// Framed replies to the sender, in order, before every intent.
    replies: Vec<u8>,
    /// How many replies `replies` holds.
    reply_count: u64,
}

impl Outbox {
    /// Replies `payload` to the sender.
    #[inline]
    pub fn reply(&mut self, payload: &[u8]) {
        self.send_with(Recipient::Sender, |buf| buf.extend_from_slice(payload));
    }

    /// Replies to the sender with a payload written in place by `write`.
    #[inline]
    pub fn reply_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        self.send_with(Recipient::Sender, write);
    }

    /// Sends `payload` to `to`.
    #[inline]
    pub fn send(&mut self, to: Recipient, payload: &[u8]) {
        self.send_with(to, |buf| buf.extend_from_slice(payload));
    }

    /// Sends to `to` a payload written in place by `write`.
    #[inline]
    pub fn send_with(&mut self, to: Recipient, write: impl FnOnce(&mut Vec<u8>)) {
        if let (Recipient::Sender, Some(framing), true) = (to, self.framing, self.intents.is_empty()) {
            let start = framing.begin_frame(&mut self.replies);
            write(&mut self.replies);
            framing.end_frame(&mut self.replies, start);
            self.reply_count += 1;
            return;
        }
        let start = self.payloads.len();
        write(&mut self.payloads);
        self.push_send(to, start);
    }

    /// Records a send of the payload written from `start` (apart, so that the framed reply
    /// above stays small enough to inline into each handler).
    #[inline(never)]
    fn push_send(&mut self, to: Recipient, start: usize) {
        self.intents.push(Intent::Send { to, payload: start..self.payloads.len() });
    }

    /// Closes the sender after its pending replies are written.
    pub fn close(&mut self) {
        self.intents.push(Intent::Close);
    }

    /// Replies with the server's metrics (see [`Intent::Metrics`]).
    pub fn reply_metrics(&mut self) {
        self.intents.push(Intent::Metrics);
    }

    /// Sends the sender `length` bytes of the file at `path` from `offset`, after the
    /// replies before it (see [`Intent::SendFile`]).
    pub fn send_file(&mut self, path: std::path::PathBuf, offset: u64, length: u64) {
        self.intents.push(Intent::SendFile { path, offset, length });
    }

    /// What was asked, in order.
    pub fn intents(&self) -> &[Intent] {
        &self.intents
    }

    /// The bytes of one payload range from an [`Intent::Send`].
    pub fn payload(&self, range: Range<usize>) -> &[u8] {
        &self.payloads[range]
    }

    /// Empties the outbox of intents, keeping its memory for the next message (framed
    /// replies stay until they are taken).
    pub fn clear(&mut self) {
        self.payloads.clear();
        self.intents.clear();
    }

    /// Whether the handler asked for anything but framed replies.
    pub(crate) fn has_intents(&self) -> bool {
        !self.intents.is_empty()
    }

    /// From now on, replies to the sender are framed as `framing` says straight into the
    /// buffer of replies, until [`take_replies`](Self::take_replies). `None` turns that off.
    pub(crate) fn frame_replies(&mut self, framing: Option<Framing>) {
        self.framing = framing;
    }

    /// Whether framed replies are waiting to be taken.
    pub(crate) fn has_replies(&self) -> bool {
        !self.replies.is_empty()
    }

    /// Takes the framed replies and their count, leaving `empty` (a spare buffer) in their
    /// place: the buffer of replies changes hands rather than being copied.
    pub(crate) fn take_replies(&mut self, empty: Vec<u8>) -> (Vec<u8>, u64) {
        (std::mem::replace(&mut self.replies, empty), std::mem::take(&mut self.reply_count))
    }

    /// Appends the framed replies to `out` and empties them; returns their count.
    pub(crate) fn move_replies_to(&mut self, out: &mut Vec<u8>) -> u64 {
        out.extend_from_slice(&self.replies);
        self.discard_replies()
    }

    /// Drops the framed replies (their connection is gone); returns their count.
    pub(crate) fn discard_replies(&mut self) -> u64 {
        self.replies.clear();
        std::mem::take(&mut self.reply_count)
    }

    /// Each intent with its payload bytes (empty for `Close` and `SendFile`), for tests and the blocking
    /// server models.
    pub fn iter(&self) -> impl Iterator<Item = (&Intent, &[u8])> {
        self.intents.iter().map(|intent| match intent {
            Intent::Send { payload, .. } => (intent, &self.payloads[payload.clone()]),
            Intent::Close | Intent::SendFile { .. } | Intent::Metrics => (intent, &[][..]),
        })
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use crate::handlers::{ConnId, Handler, Peer};
    use crate::sys::address::PeerAddr;

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
