//! The [`Handler`] trait: what a listener does with each message, and how a handler names
//! connections ([`ConnId`], [`Peer`], [`Recipient`]).
//!
//! Handlers never touch sockets. A handler gets one decoded message and writes its intent into
//! the outbox: reply to the sender, send to another connection, broadcast to the rest of its
//! room, or close the sender. The reactor carries that out (framing each payload with the
//! recipient's codec, queueing it, writing it when the socket can take it). That keeps every
//! handler a small file that unit tests can drive without a network.

use std::fmt;

use super::serve::Outbox;
use crate::sys::address::PeerAddr;

/// A connection, as handlers see it. Valid until [`Handler::on_disconnect`] for it returns;
/// after that the number may be given to a new connection, so a handler that keeps ids
/// (in a map of nicknames, say) must drop them there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub usize);

impl ConnId {
    /// No connection: the room itself. What a handler sends to
    /// `Recipient::RoomNotice(ConnId::NONE)` reaches every member (see
    /// [`Handler::on_member_gone`]); no connection has this number.
    pub const NONE: ConnId = ConnId(usize::MAX);
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The client a message came from.
#[derive(Clone, Copy, Debug)]
pub struct Peer<'a> {
    /// Its connection.
    pub id: ConnId,
    /// Its address, as printed by `broadcast` (`127.0.0.1:50432: hello`).
    pub addr: &'a PeerAddr,
}

/// What a listener does with messages. One instance serves every connection of its listener
/// (or of every address in one `--listen` spec), so it can hold shared state: a room, a
/// counter, a map of nicknames.
pub trait Handler: Send {
    /// A complete message arrived from `from`. Whatever is put in `out` is carried out, in
    /// order, before the next message of any client is handled.
    fn on_message(&mut self, from: Peer<'_>, message: &[u8], out: &mut Outbox);

    /// A client connected. The default does nothing.
    fn on_connect(&mut self, _peer: Peer<'_>, _out: &mut Outbox) {}

    /// A client is gone (it closed, failed, timed out, or was dropped as too slow). Replies
    /// to it are dropped; messages to others are delivered. The default does nothing.
    fn on_disconnect(&mut self, _peer: Peer<'_>, _out: &mut Outbox) {}

    /// Whether this handler needs connections to work at all (a room needs members to
    /// send to, a file a stream to flow over). Connectionless transports (UDP) refuse such
    /// handlers at start-up.
    fn needs_connections(&self) -> bool {
        false
    }

    /// What the room answered about something this handler asked of it for `peer` (a name
    /// claimed, who is here): see [`Outbox::claim_name`] and [`Outbox::who`]. Whatever is put
    /// in `out` is carried out as for a message of `peer`. The default does nothing.
    fn on_room(&mut self, _peer: Peer<'_>, _event: RoomEvent<'_>, _out: &mut Outbox) {}

    /// A member of the room on another server left without a word from that server: it is
    /// gone (it died, and the engine the room is shared over let the member's name expire).
    /// Say so to the room as for a member of one's own who leaves: what is sent to
    /// `Recipient::RoomNotice(ConnId::NONE)` reaches every member. The default does nothing.
    fn on_member_gone(&mut self, _name: &str, _out: &mut Outbox) {}

    /// Whether the room keeps its last lines for newcomers (`--history N`): a member who
    /// joins gets them first, oldest first, exactly as the members got them, then the live
    /// lines, nothing lost or repeated between. The default: no.
    fn keeps_history(&self) -> bool {
        false
    }

    /// Whether this handler's connections watch the loop (the console): the server sends
    /// them its turns and snapshots, and leaves them out of both. The default: no.
    fn watches_the_loop(&self) -> bool {
        false
    }

    /// Whether this handler's connections form a room (they send to each other, as
    /// `broadcast`'s do): a room spans worker processes and hosts only over a backplane.
    fn has_room(&self) -> bool {
        false
    }
}

/// What a room answers a handler about its members (see [`Handler::on_room`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RoomEvent<'a> {
    /// The name asked for ([`Outbox::claim_name`]) is now the member's (`taken: false`; its
    /// earlier name, if any, is free again), or another member of the room has it (`taken:
    /// true`). A guest name asked for is always given.
    Claimed {
        /// The name.
        name: &'a str,
        /// Another member has it: the member keeps its own.
        taken: bool,
    },
    /// The names of the room's members, on every server sharing it ([`Outbox::who`]).
    Present(&'a [String]),
}

/// Who a payload is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recipient {
    /// The client whose message is being handled.
    Sender,
    /// One particular connection (ignored if it has gone).
    Conn(ConnId),
    /// Every connection of this handler's listeners except this one: the room, minus the
    /// sender.
    AllExcept(ConnId),
    /// The same members, as a notice about the room (someone joined, left, changed name):
    /// not one of the lines a room that keeps history keeps for newcomers.
    RoomNotice(ConnId),
}
