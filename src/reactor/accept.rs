//! Accepting: new connections join the slab and their service's room.
//!
//! Accepting is budgeted per turn like reading, and backs off when descriptors run out: with
//! edge-triggered polling the backlog's edge is not raised again, so the listener goes on the
//! owed list (budget spent) or is retried by a timer (backoff over).

use std::io::{Read as _, Write as _};
use std::time::Instant;

use log::{debug, error, warn};
use mio::{Interest, Token};

use super::connection::Connection;
use super::{ACCEPT_BACKOFF, ACCEPTS_PER_TURN, FIRST_DATAGRAM, Reactor};
use crate::handlers::{ConnId, Peer};
use crate::sys::address::PeerAddr;
use crate::sys::nonblocking::{client_gave_up, interrupted, out_of_resources, would_block};
use crate::sys::socket::Stream;

impl Reactor {
    /// Accepts from listener `index` until its backlog is empty or the turn's budget is spent.
    pub(super) fn accept_from(&mut self, index: usize) {
        for _ in 0..ACCEPTS_PER_TURN {
            let Some(slot) = self.listeners.get(index) else {
                return;
            };
            if slot.paused_until.is_some() {
                return;
            }
            let (service, proxy) = (slot.service, slot.proxy);
            match slot.listener.accept(&mut self.unix_serial) {
                Ok((stream, peer)) => self.admit(stream, peer, service, proxy),
                Err(error) if would_block(&error) => return,
                Err(error) if interrupted(&error) || client_gave_up(&error) => continue,
                Err(error) => {
                    if !out_of_resources(&error) {
                        error!("accept failed; listener={} error={error}", slot.addr);
                    }
                    self.pause_accepting(index, &error);
                    return;
                }
            }
        }
        self.owe_accept(index);
    }

    /// Stops accepting on `index` for [`ACCEPT_BACKOFF`]; the backlog keeps the clients
    /// waiting meanwhile, and established connections are served as usual.
    fn pause_accepting(&mut self, index: usize, error: &std::io::Error) {
        let now = Instant::now();
        self.stats.accept_pauses += 1;
        if let Some(slot) = self.listeners.get_mut(index) {
            slot.paused_until = Some(now + ACCEPT_BACKOFF);
            if let Some(held_back) = self.accept_log.allow(now) {
                warn!(
                    "cannot accept, pausing; listener={} error={error} pause_ms={} conns={} repeats={held_back}",
                    slot.addr,
                    ACCEPT_BACKOFF.as_millis(),
                    self.conns.len()
                );
            }
        }
    }

    /// Lets paused listeners try again once their backoff is over.
    pub(super) fn resume_accepting(&mut self, now: Instant) {
        for index in 0..self.listeners.len() {
            let slot = &mut self.listeners[index];
            if slot.paused_until.is_some_and(|until| now >= until) {
                slot.paused_until = None;
                self.owe_accept(index);
            }
        }
    }

    /// Makes an accepted socket a connection of `service`, or turns it away if full.
    fn admit(&mut self, mut stream: Stream, peer: PeerAddr, service: usize, proxy: bool) {
        if self.conns.len() >= self.limits.max_connections {
            self.turn_away(stream, &peer, service);
            return;
        }
        // Lines sent before it joined are not for it.
        self.release_room(service);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        debug_assert!(key < FIRST_DATAGRAM, "connection keys stay below the fixed tokens");
        if let Err(error) = self.poll.registry().register(&mut stream, Token(key), Interest::READABLE) {
            error!("register failed; peer={peer} error={error}");
            return;
        }
        let member_index = self.services[service].join(key);
        let decoder = self.services[service].codec.decoder();
        let mut conn = Connection::new(stream, peer, service, decoder, member_index, self.now_tick);
        if let Some(wheel) = &mut self.idle {
            conn.set_timer_slot(wheel.schedule(key, wheel.deadline(self.now_tick)));
        }
        if proxy {
            conn.expect_proxy_header();
        }
        let conn = entry.insert(conn);
        self.stats.connections_accepted += 1;
        if let Some(recording) = &mut self.recording {
            recording.opened(key, conn.peer());
        }
        debug!("opened; conn={key} peer={} service={}", conn.peer(), self.services[service].name);
        if !proxy {
            self.greet(key);
        }
    }

    /// Tells the handler a client connected, once its address is known (behind a balancer,
    /// after the PROXY header).
    pub(super) fn greet(&mut self, key: usize) {
        let Some(conn) = self.conns.get(key) else { return };
        let service = conn.service();
        let from = Peer { id: ConnId(key), addr: conn.peer() };
        self.services[service].handler.on_connect(from, &mut self.outbox);
        self.carry_out(key, service);
    }

    /// Tells a client the server is full, and closes it. A fresh socket's send buffer is
    /// empty, so the short reply fits in one non-blocking write. What the client already
    /// sent is read and dropped first, and the sending side shut down before closing, so the
    /// close is not a reset that could swallow the reply (see `linger.rs`); this connection
    /// does not linger, though: a full server keeps no state for it.
    fn turn_away(&mut self, mut stream: Stream, peer: &PeerAddr, service: usize) {
        self.stats.connections_rejected += 1;
        let mut reply = Vec::new();
        self.services[service].codec.encode(b"ERR server full", &mut reply);
        let _ = stream.read(&mut self.read_buf);
        let _ = stream.write(&reply);
        let _ = stream.shutdown_write();
        if let Some(held_back) = self.accept_log.allow(Instant::now()) {
            warn!(
                "server full, turning away; peer={peer} max_connections={} repeats={held_back}",
                self.limits.max_connections
            );
        }
    }
}
