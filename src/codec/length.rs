//! The `length` codec: a `u32` length in network byte order (big-endian), then the payload.
//!
//! Binary-safe, and the frame length is known up front, so an over-long frame is refused
//! before any of it is buffered: its payload is counted down and dropped as it arrives.

use super::FrameError;

/// The size of the length prefix.
const HEADER: usize = 4;

/// Per-connection state of the length decoder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LengthDecoder {
    /// Payload bytes of a refused, over-long frame still to drop.
    skipping: u32,
}

impl LengthDecoder {
    /// See [`super::Decoder::decode`].
    pub fn decode<'a>(
        &mut self,
        input: &mut &'a [u8],
        max_frame: usize,
    ) -> Result<Option<&'a [u8]>, FrameError> {
        if self.skipping > 0 {
            let skipped = input.len().min(self.skipping as usize);
            *input = &input[skipped..];
            self.skipping -= skipped as u32;
            if self.skipping > 0 {
                return Ok(None);
            }
        }
        let Some(header) = input.first_chunk::<HEADER>() else {
            return Ok(None);
        };
        let length = u32::from_be_bytes(*header);
        if length as usize > max_frame {
            *input = &input[HEADER..];
            self.skipping = length;
            return Err(FrameError::FrameTooLong { max: max_frame });
        }
        let end = HEADER + length as usize;
        if input.len() < end {
            return Ok(None);
        }
        let payload = &input[HEADER..end];
        *input = &input[end..];
        Ok(Some(payload))
    }

    /// At end of stream, a partial frame is an error (a refused frame being skipped is not).
    pub fn finish<'a>(&mut self, input: &'a [u8]) -> Result<Option<&'a [u8]>, FrameError> {
        if input.is_empty() || self.skipping > 0 { Ok(None) } else { Err(FrameError::Truncated) }
    }
}

/// Starts a frame written in place: room for its length prefix, filled in by [`end_frame`].
pub fn begin_frame(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0; HEADER]);
}

/// Ends a frame begun at `start` by [`begin_frame`]: writes its length.
///
/// # Panics
/// If the payload is over 4 GiB, which no reply here comes near.
pub fn end_frame(out: &mut [u8], start: usize) {
    let length = u32::try_from(out.len() - start - HEADER).expect("a frame is under 4 GiB");
    out[start..start + HEADER].copy_from_slice(&length.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::super::test_support::decode_in_pieces;
    use super::super::{Codec, FrameError};
    use proptest::prelude::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        Codec::Length.encode(payload, &mut out);
        out
    }

    /// Frames decode to their payloads, including an empty one and binary bytes.
    #[test]
    fn decodes_frames() {
        let mut stream = frame(b"hello");
        stream.extend(frame(b""));
        stream.extend(frame(&[0, b'\n', 255]));
        assert_eq!(
            decode_in_pieces(Codec::Length, &stream, &[2, 6], 100),
            vec![Ok(b"hello".to_vec()), Ok(Vec::new()), Ok(vec![0, b'\n', 255])]
        );
    }

    /// An over-long frame is refused at its header and its payload skipped.
    #[test]
    fn over_long_frame_is_refused_and_skipped() {
        let mut stream = frame(&[b'x'; 50]);
        stream.extend(frame(b"ok"));
        assert_eq!(
            decode_in_pieces(Codec::Length, &stream, &[5, 30], 10),
            vec![Err(FrameError::FrameTooLong { max: 10 }), Ok(b"ok".to_vec())]
        );
    }

    /// A frame cut off by the end of the stream is reported.
    #[test]
    fn truncated_frame_is_reported() {
        let stream = frame(b"hello");
        assert_eq!(decode_in_pieces(Codec::Length, &stream[..6], &[], 100), vec![Err(FrameError::Truncated)]);
    }

    proptest! {
        /// Any split of a valid stream decodes to the same messages.
        #[test]
        fn any_split_decodes_the_same(
            messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..60), 0..20),
            cuts in proptest::collection::vec(0usize..2000, 0..30),
        ) {
            let stream: Vec<u8> = messages.iter().flat_map(|m| frame(m)).collect();
            let expected: Vec<_> = messages.iter().cloned().map(Ok).collect();
            prop_assert_eq!(decode_in_pieces(Codec::Length, &stream, &cuts, 100), expected);
        }
    }
}
