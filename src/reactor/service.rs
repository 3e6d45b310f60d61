//! A service: one handler, its codec, and where its connections belong.
//!
//! Every address of one `--listen` spec feeds the same service, so `broadcast` offered on two
//! addresses is still one room; a handler with a room also shares it with other services
//! naming the same room (`room.rs`).

use crate::codec::{Codec, ProtocolOptions};
use crate::handlers::Handler;

/// See the module documentation.
pub struct Service {
    /// The handler's name, for the startup line and logs.
    pub name: String,
    /// The handler; one instance for all the service's connections.
    pub handler: Box<dyn Handler>,
    /// How its messages are framed, both ways.
    pub codec: Codec,
    /// The room it names (`broadcast@NAME`), for a handler with a room; `None`: `default`.
    pub room_name: Option<String>,
    /// The room its connections join once ready (`room.rs`).
    pub room: usize,
    /// The slot of its codec among the room's framings.
    pub framing: usize,
    /// Its connections being served (ready), for the per-listener gauge.
    pub connections: usize,
    /// What its connections' protocol is told (`ws`: allowed origins, the page `GET /`
    /// serves), set by the reactor.
    pub protocols: ProtocolOptions,
}

impl Service {
    /// A service with no connections yet; its room is set when the reactor forms the rooms.
    pub fn new(name: String, handler: Box<dyn Handler>, codec: Codec) -> Service {
        Service {
            name,
            handler,
            codec,
            room_name: None,
            room: 0,
            framing: 0,
            connections: 0,
            protocols: ProtocolOptions::default(),
        }
    }
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("codec", &self.codec)
            .field("room", &self.room)
            .field("connections", &self.connections)
            .finish()
    }
}
