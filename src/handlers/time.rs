//! `time` (RFC 868): the time as a binary number, a lesson in byte order. Over TCP the server
//! sends it as soon as a client connects, then closes; over UDP it answers any datagram.
//!
//! The number is the seconds since 1900-01-01 00:00 UTC as a 32-bit unsigned integer in
//! network byte order (big-endian): four bytes, read with `struct.unpack("!I", data)`. It
//! wraps in 2036, as the RFC's counter does. Served with the `raw` codec by default, so the
//! four bytes are all that is sent.

use super::clock::{SECONDS_1900_TO_1970, unix_seconds};
use crate::handlers::{Handler, Outbox, Peer};

/// Sends the RFC 868 time on connect (then closes), and to every datagram.
#[derive(Debug, Default, Clone, Copy)]
pub struct Time;

/// The RFC 868 value for `unix_seconds`: seconds since 1900, modulo 2^32.
pub(crate) fn rfc868(unix_seconds: u64) -> u32 {
    (unix_seconds + SECONDS_1900_TO_1970) as u32
}

impl Time {
    fn reply(out: &mut Outbox) {
        out.reply(&rfc868(unix_seconds()).to_be_bytes());
    }
}

impl Handler for Time {
    /// Over UDP, any datagram asks for the time; over TCP, anything sent is ignored.
    fn on_message(&mut self, from: Peer<'_>, _message: &[u8], out: &mut Outbox) {
        if from.addr.is_datagram() {
            Time::reply(out);
        }
    }

    fn on_connect(&mut self, _peer: Peer<'_>, out: &mut Outbox) {
        Time::reply(out);
        out.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Unix epoch is 2,208,988,800 s after 1900; the counter wraps in February 2036.
    #[test]
    fn counts_from_1900_in_32_bits() {
        assert_eq!(rfc868(0), 2_208_988_800);
        assert_eq!(rfc868(0).to_be_bytes(), [0x83, 0xaa, 0x7e, 0x80]);
        assert_eq!(rfc868(2_085_978_496), 0, "2036-02-07T06:28:16Z wraps to 0");
    }
}
