//! The `line` codec: a message ends at `\n`, and one `\r` before it is dropped.
//!
//! Over-long lines are the interesting part: the decoder reports the error once, then skips
//! bytes up to the next `\n` without keeping them, so a client cannot make the server buffer
//! more than `max_frame` bytes by never sending a newline.

use super::FrameError;
use super::newlines::Newlines;

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

#[cfg(test)]
mod tests {
    use super::super::test_support::decode_in_pieces;
    use super::super::{Codec, FrameError};
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
}
