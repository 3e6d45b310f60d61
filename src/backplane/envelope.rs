//! What travels over the engine: the room line with who published it and where it falls in
//! that publisher's sequence.
//!
//! ```text
//! <origin: 16 hex digits> <sequence: decimal> <the line as members get it>
//! ```
//!
//! The origin is random per server process: a server skips its own messages (Redis sends a
//! subscriber everything published on the channel, its own included) and never delivers a
//! line twice. The sequence counts one publisher's lines in one room, so a receiver that sees
//! it jump knows how many lines it missed (a link that was down, a subscriber the engine cut
//! off) and counts them as a gap, instead of losing them silently.

use std::io::Write as _;

/// One message as published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The publishing server process.
    pub origin: u64,
    /// Its sequence number in this room, from 1.
    pub sequence: u64,
    /// The line, as the room's members get it (`<sender-addr>: <message>`).
    pub line: &'a [u8],
}

impl<'a> Envelope<'a> {
    /// Appends the envelope's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let _ = write!(out, "{:016x} {} ", self.origin, self.sequence);
        out.extend_from_slice(self.line);
    }

    /// Reads an envelope; `None` for anything else (a message some other program published
    /// on our channel), which the caller counts and drops.
    pub fn decode(bytes: &'a [u8]) -> Option<Envelope<'a>> {
        let origin = bytes.get(..16)?;
        let origin = u64::from_str_radix(std::str::from_utf8(origin).ok()?, 16).ok()?;
        let rest = bytes.get(16..)?.strip_prefix(b" ")?;
        let space = memchr::memchr(b' ', rest)?;
        let sequence = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
        Some(Envelope { origin, sequence, line: &rest[space + 1..] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An envelope reads back as written, whatever the line holds.
    #[test]
    fn round_trips() {
        let envelope =
            Envelope { origin: 0xdead_beef_0000_0001, sequence: 42, line: b"1.2.3.4:5: hi there \r\n" };
        let mut bytes = Vec::new();
        envelope.encode(&mut bytes);
        assert!(bytes.starts_with(b"deadbeef00000001 42 1.2.3.4:5: hi"));
        assert_eq!(Envelope::decode(&bytes), Some(envelope));
    }

    /// Foreign messages on the channel are not envelopes.
    #[test]
    fn refuses_foreign_messages() {
        for bytes in
            [&b""[..], b"hello", b"deadbeef00000001", b"deadbeef00000001 x line", b"zzzzzzzzzzzzzzzz 1 line"]
        {
            assert_eq!(Envelope::decode(bytes), None, "{:?}", String::from_utf8_lossy(bytes));
        }
    }
}
