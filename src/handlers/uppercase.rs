//! `uppercase`: full Unicode uppercasing of valid UTF-8 (`straße` -> `STRASSE`).

use crate::handlers::{Handler, Outbox, Peer};

/// Replies with the message uppercased, or `ERR invalid UTF-8`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Uppercase;

impl Handler for Uppercase {
    fn on_message(&mut self, _from: Peer<'_>, message: &[u8], out: &mut Outbox) {
        if message.is_ascii() {
            // The common case, without decoding: ASCII uppercases byte by byte.
            out.reply_with(|buf| buf.extend(message.iter().map(u8::to_ascii_uppercase)));
            return;
        }
        match std::str::from_utf8(message) {
            Ok(text) => out.reply_with(|buf| uppercase_into(text, buf)),
            Err(_) => out.reply(b"ERR invalid UTF-8"),
        }
    }
}

/// Appends `text` uppercased to `buf`; a character may become several (`ß` -> `SS`).
/// Same result as `str::to_uppercase`, written in place so a reply allocates nothing.
fn uppercase_into(text: &str, buf: &mut Vec<u8>) {
    let mut utf8 = [0; 4];
    for upper in text.chars().flat_map(char::to_uppercase) {
        buf.extend_from_slice(upper.encode_utf8(&mut utf8).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::Uppercase;
    use crate::handlers::test_support::only_reply;
    use proptest::prelude::*;

    /// ASCII and full Unicode uppercasing, including characters that grow.
    #[test]
    fn uppercases() {
        assert_eq!(only_reply(&mut Uppercase, b"hello, world 1"), "HELLO, WORLD 1");
        assert_eq!(only_reply(&mut Uppercase, "straße".as_bytes()), "STRASSE");
        assert_eq!(only_reply(&mut Uppercase, "ǆemal ﬁx".as_bytes()), "ǄEMAL FIX");
    }

    /// Bytes that are not UTF-8 get an error reply.
    #[test]
    fn refuses_invalid_utf8() {
        assert_eq!(only_reply(&mut Uppercase, b"abc\xff"), "ERR invalid UTF-8");
    }

    proptest! {
        /// The in-place uppercasing agrees with the standard library's.
        #[test]
        fn agrees_with_std(text in "\\PC{0,30}") {
            prop_assert_eq!(only_reply(&mut Uppercase, text.as_bytes()), text.to_uppercase());
        }
    }
}
