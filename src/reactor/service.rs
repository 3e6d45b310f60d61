//! A service: one handler, its codec, and the connections it serves (its room).
//!
//! Every address of one `--listen` spec feeds the same service, so `broadcast` offered on two
//! addresses is still one room. The member list lets `Recipient::AllExcept` reach the room
//! without scanning every connection of the server.

use super::room::RoomLines;
use crate::codec::Codec;
use crate::handlers::Handler;

/// See the module documentation.
pub struct Service {
    /// The handler's name, for the startup line and logs.
    pub name: String,
    /// The handler; one instance for all the service's connections.
    pub handler: Box<dyn Handler>,
    /// How its messages are framed, both ways.
    pub codec: Codec,
    /// Slab keys of its connections, in no particular order.
    pub members: Vec<usize>,
    /// Its room on the backplane, if it has one: lines sent to the room are published, and
    /// lines other servers publish there are delivered to its members.
    pub room: Option<usize>,
    /// Lines for its members this turn, not written yet (`room.rs`).
    pub lines: RoomLines,
}

impl Service {
    /// A service with no members yet.
    pub fn new(name: String, handler: Box<dyn Handler>, codec: Codec) -> Service {
        Service { name, handler, codec, members: Vec::new(), room: None, lines: RoomLines::default() }
    }

    /// Adds a connection; returns its index in `members`, to keep beside the connection.
    pub fn join(&mut self, key: usize) -> usize {
        self.members.push(key);
        self.members.len() - 1
    }

    /// Removes the member at `index` by moving the last one into its place; returns the key
    /// of the member that moved (its stored index must be updated to `index`).
    pub fn leave(&mut self, index: usize) -> Option<usize> {
        self.members.swap_remove(index);
        self.members.get(index).copied()
    }
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("codec", &self.codec)
            .field("members", &self.members.len())
            .finish()
    }
}
