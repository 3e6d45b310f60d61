//! Ready before served. A connection is served only once every layer below its handler is
//! done: its PROXY header parsed (behind a balancer), its transport's handshake (TLS) and its
//! protocol's (WebSocket) finished. Until then the handler has not heard of it, it is in no
//! room (no room line reaches it), and it counts as preparing, apart from the connections
//! served. A connection that is not ready within `--handshake-timeout` is closed, counted as
//! its own close reason.
//!
//! Without this, a client that connects straight to a `--proxy-protocol` port and sends
//! nothing would be a room member from its accept on, and read every line of the room with
//! the real senders' addresses.

use std::time::Instant;

use log::debug;

use super::{CloseReason, Reactor};
use crate::codec::Notice;
use crate::handlers::{ConnId, Peer};

impl Reactor {
    /// Serves `key` if every layer below its handler is now done: it joins its room, and
    /// its handler hears of it.
    pub(super) fn promote_if_ready(&mut self, key: usize) {
        let Some(conn) = self.conns.get(key) else { return };
        if conn.is_closing() || !conn.is_ready_to_serve() {
            return;
        }
        let service = conn.service();
        let room = self.services[service].room;
        // Lines sent before it joined are not for it.
        self.release_room(room);
        let member_index = self.rooms[room].join(key);
        if conn_compresses(self, key) {
            // Lines framed for its compression from now on.
            let framing = self.conns[key].framing(self.services[service].codec);
            self.rooms[room].slot_for(framing);
        }
        if let Some(conn) = self.conns.get_mut(key) {
            conn.serve(member_index);
        }
        self.services[service].connections += 1;
        self.telemetry.preparing -= 1;
        self.watch_keepalive(key);
        self.greet(key);
    }

    /// Tells the handler a client connected, once it is served.
    fn greet(&mut self, key: usize) {
        let Some(conn) = self.conns.get(key) else { return };
        let service = conn.service();
        let from = Peer { id: ConnId(key), addr: conn.peer() };
        self.services[service].handler.on_connect(from, &mut self.scratch.outbox);
        self.carry_out(key, service);
    }

    /// Closes the connections still preparing at their deadline.
    pub(super) fn expire_preparing(&mut self, now: Instant) {
        let now_ms = self.clocks.ms(now);
        while let Some(&(until_ms, key)) = self.queues.preparing.front() {
            if until_ms > now_ms {
                break;
            }
            self.queues.preparing.pop_front();
            let still_preparing = self.conns.get(key).is_some_and(|conn| conn.prepares_until(until_ms));
            if still_preparing {
                debug!("not ready in time; conn={key}");
                self.close_later(key, CloseReason::HandshakeTimeout);
            }
        }
    }

    /// Tells `key` `notice` in its own protocol, after what it has queued (a served
    /// connection only: one still preparing has no protocol to be told in yet).
    pub(super) fn notify(&mut self, key: usize, notice: Notice) {
        self.release_room_of(key);
        let Some(conn) = self.conns.get_mut(key) else { return };
        if conn.is_closing() || !conn.is_ready() {
            return;
        }
        let codec = self.services[conn.service()].codec;
        if conn.push_notice(codec, notice, &mut self.scratch.pool) {
            self.telemetry.stats.messages_out += 1;
            self.queue_flush(key);
        }
    }
}

/// Whether `key`'s protocol compresses what it is sent.
fn conn_compresses(reactor: &Reactor, key: usize) -> bool {
    reactor.conns.get(key).is_some_and(|conn| conn.compresses())
}
