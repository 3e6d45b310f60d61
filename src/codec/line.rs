//! The `line` codec: a message ends at `\n`, and one `\r` before it is dropped.
//!
//! Over-long lines are the interesting part: the decoder reports the error once, then skips
//! bytes up to the next `\n` without keeping them, so a client cannot make the server buffer
//! more than `max_frame` bytes by never sending a newline.
//!
//! Finding the newlines is the server's hottest loop after the system calls: [`Newlines`]
//! finds those of one read 64 bytes at a time, with the CPU's vector instructions (below).

use super::FrameError;

/// Per-connection state of the line decoder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LineDecoder {
    /// Inside an over-long line that was already reported: drop bytes until its `\n`.
    discarding: bool,
    /// How many bytes at the front of the undecoded tail are known to hold no `\n`. Without it,
    /// a long line arriving one byte at a time would be searched again on every read:
    /// quadratic work that one slow client could use to burn the server's only thread.
    scanned: u32,
}

impl LineDecoder {
    /// See [`super::Decoder::decode`].
    pub fn decode<'a>(
        &mut self,
        input: &mut &'a [u8],
        max_frame: usize,
    ) -> Result<Option<&'a [u8]>, FrameError> {
        self.decode_with(input, max_frame, &mut Newlines::new(input))
    }

    /// [`decode`](Self::decode), finding newlines with `newlines`: a cursor over a stretch
    /// of input that ends where `input` does, past every newline before `input` starts. It
    /// keeps what it found for the next call (see [`super::Frames`]).
    #[inline]
    pub(super) fn decode_with<'a>(
        &mut self,
        input: &mut &'a [u8],
        max_frame: usize,
        newlines: &mut Newlines<'a>,
    ) -> Result<Option<&'a [u8]>, FrameError> {
        // Where `input` starts in the stretch `newlines` searches; `newlines` has passed
        // every newline before it.
        let offset = newlines.len() - input.len();
        if self.scanned > 0 {
            newlines.skip_to(offset + (self.scanned as usize).min(input.len()));
        }
        loop {
            let offset = newlines.len() - input.len();
            let newline = newlines.next().map(|at| at - offset);
            let Some(end) = newline else {
                if self.discarding {
                    *input = &input[input.len()..];
                    self.scanned = 0;
                    return Ok(None);
                }
                // One byte of slack: the line may be exactly `max_frame` long, with its `\r`
                // here and its `\n` still on the way.
                if input.len() > max_frame.saturating_add(1) {
                    *input = &input[input.len()..];
                    self.discarding = true;
                    self.scanned = 0;
                    return Err(FrameError::LineTooLong { max: max_frame });
                }
                self.scanned = u32::try_from(input.len()).unwrap_or(u32::MAX);
                return Ok(None);
            };
            let line = &input[..end];
            *input = &input[end + 1..];
            self.scanned = 0;
            if self.discarding {
                self.discarding = false;
                continue;
            }
            let line = strip_cr(line);
            if line.len() > max_frame {
                return Err(FrameError::LineTooLong { max: max_frame });
            }
            return Ok(Some(line));
        }
    }

    /// At end of stream, a non-empty unterminated tail is a last line.
    pub fn finish<'a>(&mut self, input: &'a [u8], max_frame: usize) -> Result<Option<&'a [u8]>, FrameError> {
        self.scanned = 0;
        if std::mem::take(&mut self.discarding) || input.is_empty() {
            return Ok(None);
        }
        let line = strip_cr(input);
        if line.len() > max_frame {
            return Err(FrameError::LineTooLong { max: max_frame });
        }
        Ok(Some(line))
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Ends a line written in place: its `\n`.
#[inline]
pub fn end_frame(out: &mut Vec<u8>) {
    out.push(b'\n');
}

// ----- finding the newlines of one read -----
//
// Finding the newlines of one read, 64 bytes at a time: each block of input becomes a
// bitmap of its newlines once (`positions_of`, below: 16 bytes per instruction), and each line
// ending in the block is then two bit operations away. Searching from the start of each
// line with `memchr` instead costs a call and a vector loop per line, which for short lines
// was a third of the server's own time per message (docs/benchmarks.md, "Speed").

/// The size of a block scanned at once.
const BLOCK: usize = 64;

/// The newlines of one stretch of input, in order, found block by block as they are asked
/// for: a cursor that only moves forward.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Newlines<'a> {
    input: &'a [u8],
    /// Where the block scanned last starts; blocks lie on a grid of 64 from the start of
    /// the input, so each byte is scanned once, whatever the length of the lines.
    start: usize,
    /// Bit `i`: `input[start + i]` is a newline not passed yet.
    ahead: u64,
    /// Whether the block at `start` was scanned (nothing is, until asked).
    scanned: bool,
}

impl<'a> Newlines<'a> {
    /// Finds newlines in `input`, from its start.
    pub(crate) fn new(input: &'a [u8]) -> Newlines<'a> {
        Newlines { input, start: 0, ahead: 0, scanned: false }
    }

    /// The length of the input searched.
    pub(crate) fn len(&self) -> usize {
        self.input.len()
    }

    /// Passes over the bytes before `from` (known to hold no newline the caller wants).
    // Kept out of line: it runs once per read, and inlined into the per-line loop it made
    // that loop longer (callgrind: +6 instructions per message).
    #[inline(never)]
    pub(crate) fn skip_to(&mut self, from: usize) {
        let block = from - from % BLOCK;
        if !self.scanned || block != self.start {
            if from >= self.input.len() {
                self.start = self.input.len();
                self.ahead = 0;
                self.scanned = true;
                return;
            }
            self.scan(block);
        }
        self.ahead &= u64::MAX << (from - block);
    }

    /// The position of the next newline, if there is one.
    #[inline]
    pub(crate) fn next(&mut self) -> Option<usize> {
        if !self.scanned {
            self.skip_to(0);
        }
        while self.ahead == 0 {
            let next = self.start + BLOCK;
            if next >= self.input.len() {
                return None;
            }
            self.scan(next);
        }
        let at = self.start + self.ahead.trailing_zeros() as usize;
        self.ahead &= self.ahead - 1;
        Some(at)
    }

    /// Scans the block that begins at `start`. The last, short block of an input of at
    /// least one block is read as the last whole block, overlapping the one before, and
    /// its bitmap shifted into place (no copy); only an input shorter than a block is
    /// zero-padded (a zero byte is no newline).
    fn scan(&mut self, start: usize) {
        let rest = &self.input[start..];
        self.ahead = match rest.first_chunk::<BLOCK>() {
            Some(block) => positions_of(b'\n', block),
            None => match self.input.last_chunk::<BLOCK>() {
                Some(last) => positions_of(b'\n', last) >> (BLOCK - rest.len()),
                None => positions_of(b'\n', &padded(rest)),
            },
        };
        self.start = start;
        self.scanned = true;
    }
}

/// The last, short block of an input, zero-padded to a whole one.
#[cold]
fn padded(rest: &[u8]) -> [u8; BLOCK] {
    let mut block = [0u8; BLOCK];
    block[..rest.len()].copy_from_slice(rest);
    block
}

// ----- where a byte occurs in a block, with the CPU's vector instructions -----
//
// The line codec's newline search is the server's hottest loop after the system calls. On
// x86_64, SSE2 (part of every x86_64 CPU) compares 16 bytes at a time and gathers one bit per
// byte; elsewhere a plain loop does the same, more slowly. (The one `unsafe` outside system
// calls.)
/// Bit `i` is set where `block[i] == byte`.
#[inline]
pub(crate) fn positions_of(byte: u8, block: &[u8; 64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        let mut positions = 0;
        for (index, chunk) in block.chunks_exact(16).enumerate() {
            let chunk = chunk.try_into().expect("chunks of 16");
            // SAFETY: `positions_in_16` needs SSE2, which every x86_64 CPU has (it is in the
            // x86_64 baseline that rustc compiles for).
            positions |= u64::from(unsafe { sse2::positions_in_16(byte, chunk) }) << (index * 16);
        }
        positions
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        block
            .iter()
            .enumerate()
            .fold(0, |positions, (index, &at)| positions | (u64::from(at == byte) << index))
    }
}

#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_movemask_epi8, _mm_set_epi64x, _mm_set1_epi8};

    /// Bit `i` is set where `chunk[i] == byte`: one compare of 16 bytes, one gather of their
    /// top bits.
    #[target_feature(enable = "sse2")]
    pub(super) fn positions_in_16(byte: u8, chunk: &[u8; 16]) -> u16 {
        let (low, high) = chunk.split_at(8);
        let low = i64::from_le_bytes(low.try_into().expect("8 bytes"));
        let high = i64::from_le_bytes(high.try_into().expect("8 bytes"));
        let equal = _mm_cmpeq_epi8(_mm_set_epi64x(high, low), _mm_set1_epi8(byte as i8));
        _mm_movemask_epi8(equal) as u16
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::decode_in_pieces;
    use super::super::{Codec, FrameError};
    use super::Newlines;
    use proptest::prelude::*;

    fn lines(stream: &[u8], cuts: &[usize], max: usize) -> Vec<Result<Vec<u8>, FrameError>> {
        decode_in_pieces(Codec::Line, stream, cuts, max)
    }

    fn ok(text: &str) -> Result<Vec<u8>, FrameError> {
        Ok(text.as_bytes().to_vec())
    }

    /// Lines split at `\n`, with one `\r` dropped and an empty line kept.
    #[test]
    fn splits_lines_and_drops_one_cr() {
        assert_eq!(
            lines(b"hello\r\nworld\n\nend\r\r\n", &[], 100),
            vec![ok("hello"), ok("world"), ok(""), ok("end\r")]
        );
    }

    /// An unterminated tail becomes a last message at end of stream.
    #[test]
    fn unterminated_tail_is_a_last_message() {
        assert_eq!(lines(b"a\nlast", &[3], 100), vec![ok("a"), ok("last")]);
        assert_eq!(lines(b"a\n", &[], 100), vec![ok("a")]);
    }

    /// An over-long line is reported once, skipped to its end, and the next line is served.
    #[test]
    fn over_long_line_is_reported_once_and_skipped() {
        let too_long = Err(FrameError::LineTooLong { max: 4 });
        assert_eq!(lines(b"abcdefgh\nok\n", &[], 4), vec![too_long.clone(), ok("ok")]);
        // Arriving in pieces, the error comes before the newline does.
        assert_eq!(lines(b"abcdefgh\nok\n", &[1, 2, 3, 7], 4), vec![too_long.clone(), ok("ok")]);
        // Exactly max bytes plus "\r\n" is allowed, even when the "\n" comes later.
        assert_eq!(lines(b"abcd\r\n", &[5], 4), vec![ok("abcd")]);
        assert_eq!(lines(b"abcde\r\n", &[6], 4), vec![too_long]);
    }

    /// The decoder never keeps more than max_frame + 1 bytes of one line.
    #[test]
    fn over_long_line_is_not_buffered() {
        let mut decoder = Codec::Line.decoder();
        let mut input: &[u8] = &[b'x'; 1000];
        assert!(decoder.decode(&mut input, 10).is_err());
        assert!(input.is_empty(), "the over-long bytes are consumed, not kept");
        let mut more: &[u8] = &[b'x'; 1000];
        assert_eq!(decoder.decode(&mut more, 10), Ok(None));
        assert!(more.is_empty());
    }

    proptest! {
        /// Any split of a valid stream decodes to the same messages.
        #[test]
        fn any_split_decodes_the_same(
            messages in proptest::collection::vec("[^\n\r]{0,40}", 0..20),
            cuts in proptest::collection::vec(0usize..2000, 0..30),
        ) {
            let mut stream = Vec::new();
            for message in &messages {
                Codec::Line.encode(message.as_bytes(), &mut stream);
            }
            let expected: Vec<_> = messages.iter().map(|m| Ok(m.as_bytes().to_vec())).collect();
            prop_assert_eq!(lines(&stream, &cuts, 200), expected);
        }
    }

    proptest! {
        /// The bitmap marks exactly the bytes that match.
        #[test]
        fn marks_exactly_the_matching_bytes(block in proptest::array::uniform32(0u8..4), more in proptest::array::uniform32(0u8..4)) {
            let mut whole = [0u8; 64];
            whole[..32].copy_from_slice(&block);
            whole[32..].copy_from_slice(&more);
            let positions = super::positions_of(1, &whole);
            for (index, &byte) in whole.iter().enumerate() {
                prop_assert_eq!(positions >> index & 1 == 1, byte == 1, "byte {}", index);
            }
        }

        /// Every newline is found, in order, whatever the input's length and wherever the
        /// search resumes, exactly as a plain search finds them.
        #[test]
        fn finds_what_a_plain_search_finds(
            input in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'x')], 0..300),
            skip in 0usize..320,
        ) {
            let plain = |from: usize| input.iter().skip(from).position(|&b| b == b'\n').map(|at| at + from);
            let mut newlines = Newlines::new(&input);
            let mut from = 0;
            while let Some(at) = newlines.next() {
                prop_assert_eq!(Some(at), plain(from));
                from = at + 1;
            }
            prop_assert_eq!(plain(from), None);
            let mut newlines = Newlines::new(&input);
            newlines.skip_to(skip);
            prop_assert_eq!(newlines.next(), plain(skip), "after skipping to {}", skip);
        }
    }
}
