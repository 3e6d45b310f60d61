//! Codecs turn a byte stream into messages, and messages back into bytes.
//!
//! A codec is pure: bytes in, messages out, no sockets. [`Decoder::decode`] returns the next
//! complete message, `Ok(None)` when the bytes so far do not finish one (a normal state, not an
//! error), or a [`FrameError`] the server answers with `ERR ...` before carrying on. The state a
//! connection keeps between reads is a few bytes, so an idle connection costs almost nothing.
//!
//! The contract with the caller: bytes that `decode` leaves unconsumed must be presented again,
//! at the front, followed by whatever arrives next. The reactor keeps that undecoded tail in a
//! per-connection buffer only while a message is incomplete.
//!
//! This is the protocol layer of a connection's stack (transport, preamble, protocol,
//! handler). Protocols that need more state per connection than a few bytes (a handshake,
//! fragments, bytes of their own to send) implement [`Session`] (`session.rs`), and a
//! connection holds either kind as a [`Protocol`].

mod fixed;
mod length;
mod line;
mod raw;
mod session;
pub mod ws;

use std::fmt;
use std::str::FromStr;

pub use fixed::FixedDecoder;
pub use length::LengthDecoder;
pub use line::LineDecoder;
use line::Newlines;
pub use session::{Event, Notice, Protocol, Session, SessionEvents};

/// How a listener frames its messages, chosen with `HANDLER:CODEC` on the command line.
///
/// Replies are framed by the same codec as the requests of that listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Codec {
    /// A message ends at `\n`; one `\r` before it is dropped. Replies end with `\n`.
    #[default]
    Line,
    /// A `u32` length in network byte order, then that many bytes.
    Length,
    /// Every message is exactly this many bytes. Replies are padded with spaces or cut to fit.
    Fixed(u32),
    /// Each read is one message, and a reply goes out as is: the naive style of the classic
    /// socket tutorials, kept so people can see why framing matters.
    Raw,
    /// WebSocket (RFC 6455): an HTTP upgrade, then one message per WebSocket message;
    /// replies are text frames (binary when not UTF-8). Browsers speak it. See [`ws`].
    Ws,
}

/// What protocols with a session are told by the server's configuration.
#[derive(Clone, Debug, Default)]
pub struct ProtocolOptions {
    /// For `ws`: which origins may connect, whether to compress.
    pub ws: std::sync::Arc<ws::Options>,
}

/// The largest `fixed:N` accepted: a frame is decoded in one piece, so it must fit in memory
/// comfortably and in a `u32`.
pub const MAX_FIXED_SIZE: u32 = 16 * 1024 * 1024;

impl Codec {
    /// A fresh stateless decoder for this codec. For `ws`, it reads frames as a server
    /// sends them (what a client reads: the load generator's side); a server reads `ws`
    /// through a session ([`protocol`](Self::protocol)).
    pub fn decoder(self) -> Decoder {
        match self {
            Codec::Line => Decoder::Line(LineDecoder::default()),
            Codec::Length => Decoder::Length(LengthDecoder::default()),
            Codec::Fixed(size) => Decoder::Fixed(FixedDecoder::new(size)),
            Codec::Raw => Decoder::Raw,
            Codec::Ws => Decoder::Ws(ws::client::ClientDecoder),
        }
    }

    /// A fresh per-connection protocol layer for a server's side of this codec.
    pub fn protocol(self, options: &ProtocolOptions) -> Protocol {
        match self {
            Codec::Ws => Protocol::Session(Box::new(Box::new(ws::WsSession::new(options.ws.clone())))),
            stateless => Protocol::Frames(stateless.decoder()),
        }
    }

    /// Whether a connection of this codec has a handshake before its first message (and
    /// so cannot be served by the blocking models, which have no sessions).
    pub fn has_session(self) -> bool {
        self == Codec::Ws
    }

    /// Writes `notice` to `out` as a message of this codec (`ERR server full`, framed; a
    /// `ws` client, turned away before its handshake, gets an HTTP 503); false if a client
    /// of this codec is closed without a word.
    pub fn notice(self, notice: Notice, out: &mut Vec<u8>) -> bool {
        if self == Codec::Ws {
            return ws::refusal(notice, out);
        }
        let (end, start) = (out.len(), self.begin_frame(out));
        if !notice.write_text(out) {
            out.truncate(end);
            return false;
        }
        self.end_frame(out, start);
        true
    }

    /// How many bytes one read of a stream framed by this codec may take, out of a buffer of
    /// `buffer_len`: all of it, except for `raw`, where one read is one message and so must
    /// not exceed the longest message, `max_frame`.
    pub fn read_limit(self, max_frame: usize, buffer_len: usize) -> usize {
        match self {
            Codec::Raw => max_frame.clamp(1, buffer_len),
            _ => buffer_len,
        }
    }

    /// Appends `payload`, framed by this codec, to `out`.
    #[inline]
    pub fn encode(self, payload: &[u8], out: &mut Vec<u8>) {
        let start = self.begin_frame(out);
        out.extend_from_slice(payload);
        self.end_frame(out, start);
    }

    /// Starts a frame at the end of `out` whose payload the caller then writes in place,
    /// and [`end_frame`](Self::end_frame) finishes. The reactor builds replies this way,
    /// straight into the buffer they are written from, instead of building each payload
    /// somewhere and copying it in.
    #[inline]
    pub fn begin_frame(self, out: &mut Vec<u8>) -> FrameStart {
        let start = FrameStart(out.len());
        match self {
            Codec::Length => length::begin_frame(out),
            Codec::Ws => ws::begin_frame(out),
            _ => {}
        }
        start
    }

    /// Finishes the frame begun at `start`: everything written to `out` since is its payload.
    #[inline]
    pub fn end_frame(self, out: &mut Vec<u8>, start: FrameStart) {
        match self {
            Codec::Line => line::end_frame(out),
            Codec::Length => length::end_frame(out, start.0),
            Codec::Fixed(size) => fixed::end_frame(size, out, start.0),
            Codec::Raw => {}
            Codec::Ws => ws::end_frame(out, start.0, false, None),
        }
    }
}

/// How replies are framed in place: their codec, and (for `ws`) whether they answer a binary
/// message, so that they are binary frames whatever their bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framing {
    /// The codec.
    pub codec: Codec,
    /// A reply to a binary message (WebSocket); other codecs have one kind of message.
    pub binary: bool,
    /// Compressed with this window, in bits (WebSocket's permessage-deflate).
    pub deflate: Option<u8>,
}

impl Framing {
    /// See [`Codec::begin_frame`].
    #[inline]
    pub fn begin_frame(self, out: &mut Vec<u8>) -> FrameStart {
        self.codec.begin_frame(out)
    }

    /// See [`Codec::end_frame`].
    #[inline]
    pub fn end_frame(self, out: &mut Vec<u8>, start: FrameStart) {
        match self.codec {
            Codec::Ws => ws::end_frame(out, start.0, self.binary, self.deflate),
            codec => codec.end_frame(out, start),
        }
    }

    /// Appends `payload`, framed so, to `out`.
    #[inline]
    pub fn encode(self, payload: &[u8], out: &mut Vec<u8>) {
        let start = self.begin_frame(out);
        out.extend_from_slice(payload);
        self.end_frame(out, start);
    }
}

impl From<Codec> for Framing {
    fn from(codec: Codec) -> Framing {
        Framing { codec, binary: false, deflate: None }
    }
}

/// Where a frame being written in place begins (see [`Codec::begin_frame`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameStart(usize);

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Codec::Line => f.write_str("line"),
            Codec::Length => f.write_str("length"),
            Codec::Fixed(size) => write!(f, "fixed:{size}"),
            Codec::Raw => f.write_str("raw"),
            Codec::Ws => f.write_str("ws"),
        }
    }
}

impl FromStr for Codec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "line" => Ok(Codec::Line),
            "length" => Ok(Codec::Length),
            "raw" => Ok(Codec::Raw),
            "ws" => Ok(Codec::Ws),
            _ => match text.strip_prefix("fixed:") {
                Some(size) => match size.parse::<u32>() {
                    Ok(size) if (1..=MAX_FIXED_SIZE).contains(&size) => Ok(Codec::Fixed(size)),
                    _ => Err(format!(
                        "bad fixed size '{}': expected 1..={MAX_FIXED_SIZE} bytes",
                        size.escape_debug()
                    )),
                },
                None => Err(format!(
                    "unknown codec '{}': expected line, length, fixed:N, raw or ws",
                    text.escape_debug()
                )),
            },
        }
    }
}

/// Input a decoder rejects. The server replies `ERR <this>` and keeps the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// A line over the limit; the rest of it, up to its `\n`, is skipped.
    LineTooLong {
        /// The limit, `--max-frame`.
        max: usize,
    },
    /// A length-prefixed frame over the limit; its payload is skipped.
    FrameTooLong {
        /// The limit, `--max-frame`.
        max: usize,
    },
    /// The stream ended in the middle of a frame.
    Truncated,
    /// Bytes the codec's protocol does not allow (a WebSocket frame a client cannot read).
    Protocol(&'static str),
    /// A UDP datagram over the limit: a datagram is one message, so there is no codec to
    /// cut it.
    DatagramTooLong {
        /// The limit, `--max-frame`.
        max: usize,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::LineTooLong { max } => write!(f, "line too long (max {max} bytes)"),
            FrameError::FrameTooLong { max } => write!(f, "frame too long (max {max} bytes)"),
            FrameError::Truncated => f.write_str("truncated message at end of stream"),
            FrameError::Protocol(what) => f.write_str(what),
            FrameError::DatagramTooLong { max } => write!(f, "datagram too long (max {max} bytes)"),
        }
    }
}

impl std::error::Error for FrameError {}

/// One connection's decoding state: a few bytes, so that idle connections stay small.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoder {
    /// See [`Codec::Line`].
    Line(LineDecoder),
    /// See [`Codec::Length`].
    Length(LengthDecoder),
    /// See [`Codec::Fixed`].
    Fixed(FixedDecoder),
    /// See [`Codec::Raw`].
    Raw,
    /// See [`Codec::Ws`]: a server's frames, as a client reads them.
    Ws(ws::client::ClientDecoder),
}

impl Decoder {
    /// Takes the next message from the front of `input`, advancing `input` past every byte
    /// used (framing, skipped bytes, or the message itself).
    ///
    /// `Ok(None)` means "not complete yet": the bytes left in `input` must be presented again,
    /// followed by new ones. After an `Err`, decoding simply continues with the next call.
    pub fn decode<'a>(
        &mut self,
        input: &mut &'a [u8],
        max_frame: usize,
    ) -> Result<Option<&'a [u8]>, FrameError> {
        match self {
            Decoder::Line(line) => line.decode(input, max_frame),
            Decoder::Length(length) => length.decode(input, max_frame),
            Decoder::Fixed(fixed) => Ok(fixed.decode(input)),
            Decoder::Raw => Ok(raw::decode(input, max_frame)),
            Decoder::Ws(ws) => ws.decode(input, max_frame),
        }
    }

    /// The messages at the front of one read's `input`, in order: what calling
    /// [`decode`](Self::decode) until `Ok(None)` gives, with what can be done once per read
    /// done once (the line codec scans for newlines 64 bytes at a time and keeps what it
    /// found for the following lines). [`Frames::rest`] is what is left undecoded.
    pub fn frames<'d, 'a>(&'d mut self, input: &'a [u8], max_frame: usize) -> Frames<'d, 'a> {
        Frames { decoder: self, rest: input, max_frame, newlines: Newlines::new(input), at_end: false }
    }

    /// The peer closed its side: what is left in `input` (the undecoded tail) becomes a last
    /// message if the codec allows it, or an error if it is a cut-off frame.
    pub fn finish<'a>(&mut self, input: &'a [u8], max_frame: usize) -> Result<Option<&'a [u8]>, FrameError> {
        match self {
            Decoder::Line(line) => line.finish(input, max_frame),
            Decoder::Length(length) => length.finish(input),
            Decoder::Fixed(_) | Decoder::Ws(_) if !input.is_empty() => Err(FrameError::Truncated),
            Decoder::Fixed(_) | Decoder::Raw | Decoder::Ws(_) => Ok(None),
        }
    }
}

/// The messages of one read, from [`Decoder::frames`]: each item is a message or a
/// [`FrameError`] (after which decoding carries on), until the input holds no complete one.
#[derive(Debug)]
pub struct Frames<'d, 'a> {
    decoder: &'d mut Decoder,
    rest: &'a [u8],
    max_frame: usize,
    /// The line codec's newlines in the input (unused by the others).
    newlines: Newlines<'a>,
    /// The input is the last of the stream: what is left once no whole message is, is
    /// [`finish`](Decoder::finish)ed.
    at_end: bool,
}

impl<'a> Frames<'_, 'a> {
    /// The bytes not decoded yet: the start of an incomplete message, to be presented again
    /// with the next read's bytes after it.
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// The input is the end of the stream (the peer closed): after the whole messages, the
    /// undecoded rest becomes a last message if the codec allows it, or its error.
    pub fn to_the_end(mut self) -> Self {
        self.at_end = true;
        self
    }
}

impl<'a> Frames<'_, 'a> {
    /// The last message, from what is left at the end of the stream (once).
    #[cold]
    fn finish(&mut self) -> Option<Result<&'a [u8], FrameError>> {
        self.at_end = false;
        let last = std::mem::take(&mut self.rest);
        self.decoder.finish(last, self.max_frame).transpose()
    }
}

impl<'a> Iterator for Frames<'_, 'a> {
    type Item = Result<&'a [u8], FrameError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let decoded = match &mut *self.decoder {
            Decoder::Line(line) => line.decode_with(&mut self.rest, self.max_frame, &mut self.newlines),
            other => other.decode(&mut self.rest, self.max_frame),
        };
        match decoded {
            Ok(None) if self.at_end => self.finish(),
            decoded => decoded.transpose(),
        }
    }
}

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod test_support {
    use super::*;

    /// Feeds `stream` to a fresh decoder in the pieces given by `cuts`, following the decoder
    /// contract (the undecoded tail is presented again before the next piece), then finishes.
    /// Each piece is decoded twice, message by message with `decode` and per read with
    /// `frames`, and the two must agree.
    pub fn decode_in_pieces(
        codec: Codec,
        stream: &[u8],
        cuts: &[usize],
        max_frame: usize,
    ) -> Vec<Result<Vec<u8>, FrameError>> {
        let mut decoder = codec.decoder();
        let mut tail: Vec<u8> = Vec::new();
        let mut results = Vec::new();
        let mut start = 0;
        let mut boundaries: Vec<usize> = cuts.iter().map(|&c| c.min(stream.len())).collect();
        boundaries.sort_unstable();
        boundaries.push(stream.len());
        for end in boundaries {
            if end < start {
                continue;
            }
            tail.extend_from_slice(&stream[start..end]);
            start = end;
            let mut one_by_one = decoder;
            let mut input: &[u8] = &tail;
            let mut each = Vec::new();
            loop {
                match one_by_one.decode(&mut input, max_frame) {
                    Ok(Some(message)) => each.push(Ok(message.to_vec())),
                    Ok(None) => break,
                    Err(error) => each.push(Err(error)),
                }
            }
            let mut frames = decoder.frames(&tail, max_frame);
            let per_read: Vec<_> = frames.by_ref().map(|frame| frame.map(<[u8]>::to_vec)).collect();
            let rest = frames.rest().len();
            assert_eq!((&each, input.len()), (&per_read, rest), "decode and frames disagree");
            assert_eq!(one_by_one, decoder, "decode and frames leave different states");
            results.extend(each);
            tail.drain(..tail.len() - rest);
        }
        if let Some(last) = decoder.finish(&tail, max_frame).transpose() {
            results.push(last.map(<[u8]>::to_vec));
        }
        results
    }
}
