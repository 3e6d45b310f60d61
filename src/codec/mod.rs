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

mod fixed;
mod length;
mod line;
pub(crate) mod proxy;
mod raw;

use std::fmt;
use std::str::FromStr;

pub use fixed::FixedDecoder;
pub use length::LengthDecoder;
pub use line::LineDecoder;

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
}

/// The largest `fixed:N` accepted: a frame is decoded in one piece, so it must fit in memory
/// comfortably and in a `u32`.
pub const MAX_FIXED_SIZE: u32 = 16 * 1024 * 1024;

impl Codec {
    /// A fresh per-connection decoder for this codec.
    pub fn decoder(self) -> Decoder {
        match self {
            Codec::Line => Decoder::Line(LineDecoder::default()),
            Codec::Length => Decoder::Length(LengthDecoder::default()),
            Codec::Fixed(size) => Decoder::Fixed(FixedDecoder::new(size)),
            Codec::Raw => Decoder::Raw,
        }
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
    pub fn encode(self, payload: &[u8], out: &mut Vec<u8>) {
        match self {
            Codec::Line => line::encode(payload, out),
            Codec::Length => length::encode(payload, out),
            Codec::Fixed(size) => fixed::encode(size, payload, out),
            Codec::Raw => out.extend_from_slice(payload),
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Codec::Line => f.write_str("line"),
            Codec::Length => f.write_str("length"),
            Codec::Fixed(size) => write!(f, "fixed:{size}"),
            Codec::Raw => f.write_str("raw"),
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
            _ => match text.strip_prefix("fixed:") {
                Some(size) => match size.parse::<u32>() {
                    Ok(size) if (1..=MAX_FIXED_SIZE).contains(&size) => Ok(Codec::Fixed(size)),
                    _ => Err(format!(
                        "bad fixed size '{}': expected 1..={MAX_FIXED_SIZE} bytes",
                        size.escape_debug()
                    )),
                },
                None => Err(format!(
                    "unknown codec '{}': expected line, length, fixed:N or raw",
                    text.escape_debug()
                )),
            },
        }
    }
}

/// Input a decoder rejects. The server replies `ERR <this>` and keeps the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
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
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::LineTooLong { max } => write!(f, "line too long (max {max} bytes)"),
            FrameError::FrameTooLong { max } => write!(f, "frame too long (max {max} bytes)"),
            FrameError::Truncated => f.write_str("truncated message at end of stream"),
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
        }
    }

    /// The peer closed its side: what is left in `input` (the undecoded tail) becomes a last
    /// message if the codec allows it, or an error if it is a cut-off frame.
    pub fn finish<'a>(&mut self, input: &'a [u8], max_frame: usize) -> Result<Option<&'a [u8]>, FrameError> {
        match self {
            Decoder::Line(line) => line.finish(input, max_frame),
            Decoder::Length(length) => length.finish(input),
            Decoder::Fixed(_) if !input.is_empty() => Err(FrameError::Truncated),
            Decoder::Fixed(_) | Decoder::Raw => Ok(None),
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// Feeds `stream` to a fresh decoder in the pieces given by `cuts`, following the decoder
    /// contract (the undecoded tail is presented again before the next piece), then finishes.
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
            let mut input: &[u8] = &tail;
            loop {
                match decoder.decode(&mut input, max_frame) {
                    Ok(Some(message)) => results.push(Ok(message.to_vec())),
                    Ok(None) => break,
                    Err(error) => results.push(Err(error)),
                }
            }
            let consumed = tail.len() - input.len();
            tail.drain(..consumed);
        }
        if let Some(last) = decoder.finish(&tail, max_frame).transpose() {
            results.push(last.map(<[u8]>::to_vec));
        }
        results
    }
}
