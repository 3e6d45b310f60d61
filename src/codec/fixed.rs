//! The `fixed:N` codec: every message is exactly N bytes, with no framing at all.
//!
//! Replies must be N bytes too, so a shorter reply is padded with spaces and a longer one is
//! cut to N bytes (a simplification, said out loud: pick N large enough for your replies,
//! 32 or more to see whole `ERR` texts).

/// Per-connection state of the fixed-size decoder: only the size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedDecoder {
    size: u32,
}

impl FixedDecoder {
    /// A decoder for messages of `size` bytes.
    pub fn new(size: u32) -> FixedDecoder {
        FixedDecoder { size }
    }

    /// See [`super::Decoder::decode`]; a fixed frame cannot be malformed.
    pub fn decode<'a>(&mut self, input: &mut &'a [u8]) -> Option<&'a [u8]> {
        let size = self.size as usize;
        if input.len() < size {
            return None;
        }
        let (message, rest) = input.split_at(size);
        *input = rest;
        Some(message)
    }
}

/// Ends a frame written in place from `start`: pads it with spaces, or cuts it, to exactly
/// `size` bytes.
pub fn end_frame(size: u32, out: &mut Vec<u8>, start: usize) {
    out.resize(start + size as usize, b' ');
}

#[cfg(test)]
mod tests {
    use super::super::Codec;
    use super::super::test_support::decode_in_pieces;
    use proptest::prelude::*;

    /// Replies are padded or cut to the frame size.
    #[test]
    fn encode_pads_and_cuts() {
        let mut out = Vec::new();
        Codec::Fixed(4).encode(b"ab", &mut out);
        Codec::Fixed(4).encode(b"abcdef", &mut out);
        assert_eq!(out, b"ab  abcd");
    }

    /// A cut-off frame at end of stream is reported.
    #[test]
    fn partial_frame_at_end_is_truncated() {
        assert_eq!(
            decode_in_pieces(Codec::Fixed(4), b"abcdef", &[], 100),
            vec![Ok(b"abcd".to_vec()), Err(super::super::FrameError::Truncated)]
        );
    }

    proptest! {
        /// Any split of a valid stream decodes to the same messages.
        #[test]
        fn any_split_decodes_the_same(
            size in 1u32..20,
            count in 0usize..30,
            cuts in proptest::collection::vec(0usize..700, 0..30),
        ) {
            let messages: Vec<Vec<u8>> =
                (0..count).map(|i| vec![(i % 251) as u8; size as usize]).collect();
            let stream = messages.concat();
            let expected: Vec<_> = messages.into_iter().map(Ok).collect();
            prop_assert_eq!(decode_in_pieces(Codec::Fixed(size), &stream, &cuts, 100), expected);
        }
    }
}
