//! The `raw` codec: whatever one `read` returned is one message.
//!
//! This is how the classic socket tutorials work (`recv(1024)` and hope), and it is kept so
//! people can watch it fail: TCP is a byte stream, so one client `send` may arrive as two reads,
//! and two sends as one. The reactor hands each read to the decoder on its own.

/// Takes everything (at most `max_frame` bytes) as one message.
pub fn decode<'a>(input: &mut &'a [u8], max_frame: usize) -> Option<&'a [u8]> {
    if input.is_empty() {
        return None;
    }
    let (message, rest) = input.split_at(input.len().min(max_frame.max(1)));
    *input = rest;
    Some(message)
}

#[cfg(test)]
mod tests {
    /// One read is one message, cut at max_frame.
    #[test]
    fn one_read_is_one_message() {
        let mut input: &[u8] = b"hello\nworld\n";
        assert_eq!(super::decode(&mut input, 100), Some(&b"hello\nworld\n"[..]));
        assert_eq!(super::decode(&mut input, 100), None);
        let mut input: &[u8] = b"abcdef";
        assert_eq!(super::decode(&mut input, 4), Some(&b"abcd"[..]));
        assert_eq!(super::decode(&mut input, 4), Some(&b"ef"[..]));
    }
}
