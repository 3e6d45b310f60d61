//! Serving a message, the step every server shares: a [`Handler`] gets a decoded message and
//! writes what it wants done into an [`Outbox`] (reply, send to another connection, to the
//! rest of its room, close, send a file), and the server carries that out. The reactor, its
//! UDP endpoints and the blocking and scanning models (`models/`) differ in how they reach
//! sockets and share the CPU, not in this:
//!
//! - [`serve`]: the step itself: count each message, do the busy work (`--work-us`), call
//!   the handler, time it for a timeline, and answer input the codec refused with its
//!   [`Notice`]. Written once, called by every server.
//! - [`Outbox`]: a plain-data list of intents, with payload bytes in one reusable buffer, so
//!   a reply costs no allocation of its own and the handler never sees a socket.
//! - [`carry_out`]: the one place intents are told apart; a server says what each means for
//!   it by implementing [`Carrier`].
//!
//! What a handler asks for beyond replies waits in the outbox until the messages of one read
//! are served, then the server carries it out, in order, before it serves anyone else: so a
//! handler's requests are kept in order, for the sender and for everyone else.

use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

use super::handler::{ConnId, Handler, Peer, Recipient};
use crate::codec::{FrameError, Framing, Notice};

/// What a server counts and records while the step serves its messages.
pub(crate) trait Serving {
    /// The busy work each message costs (`--work-us`); zero, the usual.
    fn work(&self) -> Duration {
        Duration::ZERO
    }
    /// One more message decoded, about to be handled.
    fn received(&mut self);
    /// Input the codec refused (the step answers it): counted and logged by the server.
    fn refused(&mut self, error: &FrameError);
    /// Whether each message is timed (a timeline is being recorded).
    fn timing(&self) -> bool {
        false
    }
    /// A message of `length` bytes was handled from `started` until now.
    fn handled(&mut self, started: Instant, length: usize) {
        let _ = (started, length);
    }
}

/// Whether the sender's requests go on after a serve step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Its messages ran out; the next read brings more.
    Next,
    /// The handler asked its room something (a name, who is here) whose answer its later
    /// messages may depend on: carry out what it asked, then serve the rest.
    Pause,
    /// The handler closed it (its later messages are dropped) or sent it a file (they wait
    /// until the file is out): no more of its messages now.
    Stop,
}

/// The serve step: hands each message `messages` yields to `handler`, as sent by `from`, until
/// they run out, the handler stops the sender's requests, or it asks its room something its
/// next messages may depend on (the server answers, then serves the rest: [`Flow`]). Replies and intents gather in
/// `outbox` (replies framed in place if the outbox frames them) for the server to write and
/// carry out once the step returns; input the codec refused is answered with
/// [`Notice::BadInput`] (`ERR line too long ...`), and the messages after it are served.
///
/// This is the server's hottest loop, so per message it does only what must be done per
/// message: what is the same for the whole batch is looked at once.
#[inline]
pub(crate) fn serve<'m>(
    handler: &mut dyn Handler,
    from: Peer<'_>,
    messages: &mut impl Iterator<Item = Result<&'m [u8], FrameError>>,
    outbox: &mut Outbox,
    serving: &mut impl Serving,
) -> Flow {
    let (timing, work) = (serving.timing(), serving.work());
    for decoded in messages {
        match decoded {
            Ok(message) => {
                serving.received();
                // Only while recording a timeline: otherwise one branch per message.
                let started = timing.then(Instant::now);
                if !work.is_zero() {
                    super::work::busy_work(work);
                }
                handler.on_message(from, message, outbox);
                if let Some(started) = started {
                    serving.handled(started, message.len());
                }
            }
            Err(error) => {
                serving.refused(&error);
                outbox.reply_with(|out| {
                    Notice::BadInput(error).write_text(out);
                });
            }
        }
        if outbox.has_intents() {
            if outbox.stops_requests() {
                return Flow::Stop;
            }
            if outbox.asks_room() {
                return Flow::Pause;
            }
        }
    }
    Flow::Next
}

/// What a server does with each kind of intent, for the message of one sender.
pub(crate) trait Carrier {
    /// `payload` (not framed yet) for the sender.
    fn reply(&mut self, payload: &[u8]);
    /// `payload` for another connection (which may have gone).
    fn send_to(&mut self, to: ConnId, payload: &[u8]);
    /// `payload` for every member of the sender's room but `except`.
    fn send_to_room(&mut self, except: ConnId, payload: &[u8]);
    /// A notice about the room for every member but `except`: as `send_to_room`, but not
    /// kept in a room's history (the default: sent as any line).
    fn notify_room(&mut self, except: ConnId, payload: &[u8]) {
        self.send_to_room(except, payload);
    }
    /// Close the sender once its replies are written.
    fn close(&mut self);
    /// Send the sender `length` bytes of the file at `path` from `offset`. A server that
    /// cannot (no connection, or no way to stream a file) closes the sender: the reply
    /// before promised the bytes.
    fn send_file(&mut self, path: &Path, offset: u64, length: u64) {
        let _ = (path, offset, length);
        self.close();
    }
    /// Reply with the server's metrics. A server without them closes the sender.
    fn send_metrics(&mut self) {
        self.close();
    }
    /// Claim `name` (a guest name if `None`) for the sender in its room; the answer comes
    /// back to the handler (`Handler::on_room`). A server without rooms does nothing.
    fn claim_name(&mut self, name: Option<&str>) {
        let _ = name;
    }
    /// Ask who is in the sender's room; the answer comes back to the handler.
    fn who(&mut self) {}
}

/// Carries out, in order, what the handler put in `outbox` for a message of `sender`.
pub(crate) fn carry_out(outbox: &Outbox, sender: ConnId, carrier: &mut impl Carrier) {
    for (intent, payload) in outbox.iter() {
        match intent {
            Intent::Send { to: Recipient::Sender, .. } => carrier.reply(payload),
            Intent::Send { to: Recipient::Conn(id), .. } if *id == sender => carrier.reply(payload),
            Intent::Send { to: Recipient::Conn(id), .. } => carrier.send_to(*id, payload),
            Intent::Send { to: Recipient::AllExcept(except), .. } => carrier.send_to_room(*except, payload),
            Intent::Send { to: Recipient::RoomNotice(except), .. } => carrier.notify_room(*except, payload),
            Intent::Close => carrier.close(),
            Intent::SendFile { path, offset, length } => carrier.send_file(path, *offset, *length),
            Intent::Metrics => carrier.send_metrics(),
            Intent::ClaimName(name) => carrier.claim_name(name.as_deref()),
            Intent::Who => carrier.who(),
        }
    }
}

// ----- the outbox -----

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
    /// Claim a name for the sender in its room (`None`: a guest name the room picks); the
    /// room answers the handler with [`RoomEvent::Claimed`](super::RoomEvent::Claimed).
    ClaimName(Option<String>),
    /// Ask the room who is in it; it answers with
    /// [`RoomEvent::Present`](super::RoomEvent::Present).
    Who,
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
    /// An intent that stops the sender's requests is among the intents (kept as a flag, so
    /// that the serve step asks in O(1) per message however many intents a batch holds).
    stops: bool,
    /// A question to the room is among the intents (likewise).
    asks: bool,
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
        self.stops = true;
    }

    /// Replies with the server's metrics (see [`Intent::Metrics`]).
    pub fn reply_metrics(&mut self) {
        self.intents.push(Intent::Metrics);
    }

    /// Claims `name` for the sender in its room (`None`: a guest name, `guest-N`, the room
    /// picks, unique in it); the room answers with [`Handler::on_room`]. A name is unique
    /// in the room, on every server sharing it; a member holds one, and it is free again
    /// once the member leaves or takes another.
    pub fn claim_name(&mut self, name: Option<&str>) {
        self.intents.push(Intent::ClaimName(name.map(String::from)));
        self.asks = true;
    }

    /// Asks the room who is in it; it answers with [`Handler::on_room`].
    pub fn who(&mut self) {
        self.intents.push(Intent::Who);
        self.asks = true;
    }

    /// Sends the sender `length` bytes of the file at `path` from `offset`, after the
    /// replies before it (see [`Intent::SendFile`]).
    pub fn send_file(&mut self, path: std::path::PathBuf, offset: u64, length: u64) {
        self.intents.push(Intent::SendFile { path, offset, length });
        self.stops = true;
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
        (self.stops, self.asks) = (false, false);
    }

    /// Whether the handler asked for anything but framed replies.
    #[inline]
    pub(crate) fn has_intents(&self) -> bool {
        !self.intents.is_empty()
    }

    /// Whether the handler stopped the sender's requests: it closed the sender (its later
    /// messages are dropped) or sent it a file (they wait until the file is out).
    #[inline]
    pub(crate) fn stops_requests(&self) -> bool {
        self.stops
    }

    /// Whether the handler asked its room something (a name, who is here), which the room
    /// answers to it: its next messages may depend on the answer (a name to write lines
    /// under).
    #[inline]
    pub(crate) fn asks_room(&self) -> bool {
        self.asks
    }

    /// From now on, replies to the sender are framed as `framing` says straight into the
    /// buffer of replies, until [`take_replies`](Self::take_replies). `None` turns that off.
    pub(crate) fn frame_replies(&mut self, framing: Option<Framing>) {
        self.framing = framing;
    }

    /// The framed replies, and how many there are.
    pub(crate) fn replies(&self) -> (&[u8], u64) {
        (&self.replies, self.reply_count)
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
            Intent::Close
            | Intent::SendFile { .. }
            | Intent::Metrics
            | Intent::ClaimName(_)
            | Intent::Who => (intent, &[][..]),
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
