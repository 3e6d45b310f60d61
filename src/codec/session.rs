//! Protocols with a state of their own per connection (WebSocket): a handshake before the
//! first message, messages joined from fragments, bytes they send on their own (the
//! handshake's answer, a pong, a close frame), and a close with a reason.
//!
//! They stay sans I/O, like the stateless codecs: a [`Session`] takes bytes and reports what
//! it found as [`SessionEvents`], in order; the reactor carries them out. Messages are owned
//! (copied into the events' buffer): a message joined from fragments, or unmasked, cannot be
//! a slice of what was read. The stateless codecs keep the faster path (`Decoder`).
//!
//! The connection holds its protocol as a [`Protocol`]: a stateless decoder (a few bytes,
//! copied) or a boxed session.

use std::fmt;
use std::ops::Range;

use super::{Codec, Decoder};

/// What the server itself has to tell a client, in the client's own protocol (a line client
/// gets `ERR ...`; a WebSocket client a close frame with its code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// The server is full; the connection is closed.
    ServerFull,
    /// The connection moved nothing for `--idle-timeout`; it is closed.
    IdleTimeout,
    /// The server is stopping (the drain); the connection is closed.
    GoingAway,
    /// The connection did not read what others sent it (a slow consumer); it is closed.
    TooSlow,
    /// Input its codec refused (too long, cut off): answered, and the connection carries on.
    BadInput(super::FrameError),
    /// All clients together hold more memory than the server's budget, and this one holds
    /// the most: it is closed (`--max-client-memory`).
    Evicted,
    /// Its address has as many connections open as one address may (`--max-connections-per-ip`);
    /// the connection is closed.
    TooManyFromAddress,
}

impl Notice {
    /// Writes the notice to `out` as the text of an `ERR` message, for protocols that say it
    /// in a message; false (nothing written) where a line client has always been closed
    /// without a word. Every `ERR` the server itself sends is written here.
    pub fn write_text(self, out: &mut Vec<u8>) -> bool {
        use std::io::Write as _;
        let _ = match self {
            Notice::ServerFull => write!(out, "ERR server full"),
            Notice::IdleTimeout => write!(out, "ERR idle timeout"),
            Notice::BadInput(error) => write!(out, "ERR {error}"),
            Notice::Evicted => write!(out, "ERR evicted: the server's memory for clients is full"),
            Notice::TooManyFromAddress => write!(out, "ERR too many connections from your address"),
            Notice::GoingAway | Notice::TooSlow => return false,
        };
        true
    }
}

/// One thing a session found, in the order found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Its handshake is done: the connection may be served.
    Ready,
    /// A whole message for the handler (a range of [`SessionEvents::bytes`]); `binary`: a
    /// protocol with kinds of messages (WebSocket) got a binary one, and replies to it are
    /// binary too.
    Message {
        /// Its bytes.
        bytes: Range<usize>,
        /// Whether it is binary.
        binary: bool,
    },
    /// Bytes it sends on its own, as they are (a range of [`SessionEvents::bytes`]).
    Send(Range<usize>),
    /// It is done: close the connection once what is queued is written. `reason` is for
    /// the log.
    Close {
        /// Why, in a few words.
        reason: &'static str,
    },
}

/// What one call of a session found: events, and the bytes they refer to. Reused from call
/// to call (the reactor keeps one), so a busy connection allocates nothing.
#[derive(Debug, Default)]
pub struct SessionEvents {
    events: Vec<Event>,
    bytes: Vec<u8>,
}

impl SessionEvents {
    /// Reports a whole message, written into [`buffer`](Self::buffer) since `start`.
    pub fn message_from(&mut self, start: usize, binary: bool) {
        self.events.push(Event::Message { bytes: start..self.bytes.len(), binary });
    }

    /// Reports bytes to send, written into [`buffer`](Self::buffer) since `start`.
    pub fn send_from(&mut self, start: usize) {
        self.events.push(Event::Send(start..self.bytes.len()));
    }

    /// Reports bytes to send.
    pub fn send(&mut self, bytes: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        self.send_from(start);
    }

    /// Reports that the handshake is done.
    pub fn ready(&mut self) {
        self.events.push(Event::Ready);
    }

    /// Reports that the connection is to close.
    pub fn close(&mut self, reason: &'static str) {
        self.events.push(Event::Close { reason });
    }

    /// The buffer messages and bytes to send are written into; the position of its end
    /// marks where the next one starts.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// The events found, in order.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The bytes of a message or a send.
    pub fn bytes(&self, range: Range<usize>) -> &[u8] {
        &self.bytes[range]
    }

    /// Empties it for the next call, keeping its memory (up to a bound).
    pub fn clear(&mut self) {
        self.events.clear();
        self.bytes.clear();
        if self.bytes.capacity() > 1 << 20 {
            self.bytes = Vec::new();
        }
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// A protocol's state for one connection, when it needs more than a few bytes of it.
pub trait Session: Send + fmt::Debug {
    /// Whether its handshake is done (the connection is served from then on).
    fn is_ready(&self) -> bool;

    /// Takes what it can use from the front of `input` and reports what it found; returns
    /// how many bytes it used. Bytes it leaves (a frame not complete yet) are presented
    /// again, at the front, with whatever arrives next.
    fn receive(&mut self, input: &[u8], max_frame: usize, events: &mut SessionEvents) -> usize;

    /// The peer closed its side; `input` is what was left unused.
    fn finish(&mut self, input: &[u8], events: &mut SessionEvents) {
        let _ = (input, events);
    }

    /// Whether messages may still be sent to it (a protocol that has sent its close takes
    /// nothing more).
    fn accepts_messages(&self) -> bool {
        self.is_ready()
    }

    /// Bytes it holds between reads (a message being put together from its fragments, say),
    /// counted towards `--max-client-memory`.
    fn held(&self) -> usize {
        0
    }

    /// Drops what it holds of input not complete yet (the connection reads nothing more:
    /// it is evicted, `--max-client-memory`).
    fn drop_input(&mut self) {}

    /// Whether messages to it are compressed, and with what window (in bits): its replies
    /// and room lines are framed apart from uncompressed members' (`Framing::deflate`).
    fn compression(&self) -> Option<u8> {
        None
    }

    /// Writes `notice` to `out` as this protocol says it, in its current state; false if it
    /// has nothing to say (the connection is then closed without a word). A notice that
    /// closes the protocol (a close frame) means no message follows it.
    fn notice(&mut self, notice: Notice, out: &mut Vec<u8>) -> bool;

    /// Called once per keepalive interval (`--ws-ping`) while the connection is served:
    /// a protocol that pings quiet peers sends a ping into `events` if nothing came since
    /// the last call, and returns false if its last ping went unanswered (the connection
    /// is then closed, with what it put in `events`). The default: always alive.
    fn keepalive(&mut self, events: &mut SessionEvents) -> bool {
        let _ = events;
        true
    }
}

/// A connection's protocol layer: a stateless decoder (a few bytes, the fast path), or a
/// session.
#[derive(Debug)]
pub enum Protocol {
    /// A stateless codec's decoder; messages are slices of what was read.
    Frames(Decoder),
    /// A protocol with a state of its own. Boxed twice: a thin pointer keeps a
    /// connection's entry (`Frames` is the usual case) at 16 bytes here, not 24.
    Session(Box<Box<dyn Session>>),
}

impl Protocol {
    /// Whether the protocol's handshake, if it has one, is done.
    pub fn is_ready(&self) -> bool {
        match self {
            Protocol::Frames(_) => true,
            Protocol::Session(session) => session.is_ready(),
        }
    }

    /// Writes `notice` to `out` for this connection, whose replies `codec` frames; false if
    /// there is nothing to say.
    pub fn notice(&mut self, codec: Codec, notice: Notice, out: &mut Vec<u8>) -> bool {
        match self {
            Protocol::Frames(_) => codec.notice(notice, out),
            Protocol::Session(session) => session.notice(notice, out),
        }
    }

    /// How messages to it are framed, `codec` being its listener's.
    #[inline]
    pub fn framing(&self, codec: Codec) -> super::Framing {
        match self {
            Protocol::Frames(_) => codec.into(),
            Protocol::Session(session) => {
                super::Framing { codec, binary: false, deflate: session.compression() }
            }
        }
    }

    /// Bytes it holds between reads (a session's buffers; a stateless decoder's are none).
    #[inline]
    pub fn held(&self) -> usize {
        match self {
            Protocol::Frames(_) => 0,
            Protocol::Session(session) => session.held(),
        }
    }

    /// Drops what it holds of input not complete yet (see [`Session::drop_input`]).
    pub fn drop_input(&mut self) {
        if let Protocol::Session(session) = self {
            session.drop_input();
        }
    }

    /// Whether messages may still be sent to it.
    #[inline]
    pub fn accepts_messages(&self) -> bool {
        match self {
            Protocol::Frames(_) => true,
            Protocol::Session(session) => session.accepts_messages(),
        }
    }
}
