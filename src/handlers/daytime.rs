//! `daytime` (RFC 867): the time of day as a line of text. Over TCP the server sends it as
//! soon as a client connects, then closes; over UDP it answers any datagram with it. The
//! classic course's first iterative service: no request, one reply.
//!
//! The line is `YYYY-MM-DDTHH:MM:SSZ\r\n` (UTC; the RFC leaves the format free and asks for
//! ASCII with a line ending). Served with the `raw` codec by default, so those are the exact
//! bytes on the wire.

use super::clock::{iso8601, unix_seconds};
use crate::handlers::{Handler, Outbox, Peer};

/// Sends the UTC time of day on connect (then closes), and to every datagram.
#[derive(Debug, Default, Clone, Copy)]
pub struct Daytime;

impl Daytime {
    fn reply(out: &mut Outbox) {
        out.reply_with(|buf| {
            buf.extend_from_slice(iso8601(unix_seconds()).as_bytes());
            buf.extend_from_slice(b"\r\n");
        });
    }
}

impl Handler for Daytime {
    /// Over UDP, any datagram asks for the time; over TCP, anything sent is ignored (the
    /// reply went out on connect).
    fn on_message(&mut self, from: Peer<'_>, _message: &[u8], out: &mut Outbox) {
        if from.addr.is_datagram() {
            Daytime::reply(out);
        }
    }

    fn on_connect(&mut self, _peer: Peer<'_>, out: &mut Outbox) {
        Daytime::reply(out);
        out.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::{ConnId, Intent, Recipient};
    use crate::sys::address::PeerAddr;

    /// On connect: one line with the time, then close.
    #[test]
    fn sends_the_time_and_closes() {
        let addr = PeerAddr::Tcp("127.0.0.1:50432".parse().unwrap());
        let mut out = Outbox::default();
        Daytime.on_connect(Peer { id: ConnId(1), addr: &addr }, &mut out);
        let sent: Vec<_> = out.iter().collect();
        assert!(matches!(sent[0].0, Intent::Send { to: Recipient::Sender, .. }));
        let line = String::from_utf8(sent[0].1.to_vec()).unwrap();
        assert_eq!(line.len(), 22, "{line:?}");
        assert!(line.ends_with("Z\r\n") && line.as_bytes()[10] == b'T', "{line:?}");
        assert_eq!(sent[1].0, &Intent::Close);
    }
}
