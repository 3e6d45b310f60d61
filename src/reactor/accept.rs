//! Joining: new connections join the slab, and once every layer below the handler is ready
//! (at once, for a plain connection without a preamble) they are served: they join their
//! room and their handler hears of them.
//!
//! Accepting is budgeted per turn like reading, and backs off when descriptors run out: with
//! edge-triggered polling the backlog's edge is not raised again, so the listener goes on the
//! owed list (budget spent) or is retried by a timer (backoff over).
//!
//! Ready before served: a connection is served only once its PROXY header is parsed (behind
//! a balancer), and its transport's handshake (TLS) and its protocol's (WebSocket) are done.
//! Until then the handler has not heard of it, it is in no room (no room line reaches it),
//! and it counts as preparing, apart from the connections served; one not ready within
//! `--handshake-timeout` is closed (`close.rs`). Without this, a client that connects
//! straight to a `--proxy-protocol` port and sends nothing would be a room member from its
//! accept on, and read every line of the room with the real senders' addresses.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::IpAddr;
use std::time::Instant;

use log::{debug, error, warn};
use mio::{Interest, Token};

use super::connection::Connection;
use super::record::{Asker, Reply};
use super::{ACCEPT_BACKOFF, ACCEPTS_PER_TURN, MAX_CONNECTIONS, Reactor, Source};
use crate::codec::Notice;
use crate::handlers::{ConnId, Peer};
use crate::sys::address::{ListenAddr, PeerAddr};
use crate::sys::socket::{Stream, client_gave_up, gate, out_of_resources};
use crate::transport::Transport;

impl Reactor {
    /// Accepts from listener `index` until its backlog is empty or the turn's budget is spent.
    pub(super) fn accept_from(&mut self, index: usize) {
        for _ in 0..ACCEPTS_PER_TURN {
            let Some(slot) = self.sources.listeners.get(index) else {
                return;
            };
            if slot.paused_until.is_some() {
                return;
            }
            let (service, proxy) = (slot.service, slot.proxy);
            match gate(|| slot.listener.accept(&mut self.sources.unix_serial)) {
                Ok(Some((stream, peer))) => self.admit(stream, peer, index, (service, proxy)),
                Ok(None) => return,
                Err(error) if client_gave_up(&error) => continue,
                Err(error) => {
                    if !out_of_resources(&error) {
                        error!("accept failed; listener={} error={error}", slot.addr);
                    }
                    self.pause_accepting(index, &error);
                    return;
                }
            }
        }
        if let Some(slot) = self.sources.listeners.get_mut(index) {
            self.queues.owe(Source::Listener(index), &mut slot.owed);
        }
    }

    /// Stops accepting on `index` for [`ACCEPT_BACKOFF`]; the backlog keeps the clients
    /// waiting meanwhile, and established connections are served as usual.
    fn pause_accepting(&mut self, index: usize, error: &std::io::Error) {
        let now = Instant::now();
        self.telemetry.stats.accept_pauses += 1;
        if let Some(slot) = self.sources.listeners.get_mut(index) {
            slot.paused_until = Some(now + ACCEPT_BACKOFF);
            if let Some(held_back) = self.telemetry.accept_log.allow(now) {
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
        for index in 0..self.sources.listeners.len() {
            let slot = &mut self.sources.listeners[index];
            if slot.paused_until.is_some_and(|until| now >= until) {
                slot.paused_until = None;
                self.queues.owe(Source::Listener(index), &mut slot.owed);
            }
        }
    }

    /// Makes an accepted socket a connection of `service`, or turns it away if full. It is
    /// served at once if no layer below its handler has anything to wait for; otherwise it
    /// prepares until they are done or its time is up (`promote_if_ready`).
    fn admit(
        &mut self,
        mut stream: Stream,
        peer: PeerAddr,
        listener: usize,
        (service, proxy): (usize, bool),
    ) {
        if self.conns.len() >= self.limits.max_connections {
            self.turn_away(stream, &peer, listener);
            return;
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        debug_assert!(key < MAX_CONNECTIONS, "connection keys stay below the fixed tokens");
        if let Err(error) = self.poll.registry().register(&mut stream, Token(key), Interest::READABLE) {
            error!("register failed; peer={peer} error={error}");
            return;
        }
        let tls = match &self.sources.listeners[listener].addr {
            ListenAddr::Tls(_) => self.sources.tls.as_ref(),
            _ => None,
        };
        let transport = match Transport::for_listener(tls) {
            Ok(transport) => transport,
            Err(error) => {
                error!("cannot start a TLS session; peer={peer} error={error}");
                return;
            }
        };
        let layers = (transport, self.services[service].codec.protocol(&self.services[service].protocols));
        let until_ms = self.clocks.ms(Instant::now()) + self.limits.handshake_timeout.as_millis() as u64;
        let mut conn =
            Connection::new(stream, peer, service, layers, proxy, (self.clocks.now_tick, until_ms));
        if let Some(wheel) = &mut self.clocks.idle {
            conn.set_timer_slot(wheel.schedule(key, wheel.deadline(self.clocks.now_tick)));
        }
        let ready_at_once = conn.is_ready_to_serve();
        let conn = entry.insert(conn);
        if let Some(console) = &mut self.console {
            console.reset(key);
        }
        self.telemetry.stats.connections_accepted += 1;
        if let Some(recording) = &mut self.telemetry.recording {
            recording.opened(key, conn.peer());
        }
        debug!("opened; conn={key} peer={} service={}", conn.peer(), self.services[service].name);
        self.preparing.start(key, until_ms, ready_at_once);
        if ready_at_once {
            self.promote_if_ready(key);
        }
    }

    /// Tells a client the server is full, in its codec, and closes it. A fresh socket's send
    /// buffer is empty, so the short reply fits in one non-blocking write. What the client
    /// already sent is read and dropped first, and the sending side shut down before
    /// closing, so the close is not a reset that could swallow the reply (see
    /// `connection/closing.rs`);
    /// this connection does not linger, though: a full server keeps no state for it. A TLS
    /// client is closed without a word: nothing can reach it before a handshake.
    fn turn_away(&mut self, mut stream: Stream, peer: &PeerAddr, listener: usize) {
        self.telemetry.stats.connections_rejected += 1;
        let slot = &self.sources.listeners[listener];
        let mut reply = Vec::new();
        let plain = !matches!(slot.addr, ListenAddr::Tls(_));
        if plain && self.services[slot.service].codec.notice(Notice::ServerFull, &mut reply) {
            let _ = gate(|| stream.read(&mut self.scratch.read));
            let _ = gate(|| stream.write(&reply));
        }
        let _ = stream.shutdown_write();
        if let Some(held_back) = self.telemetry.accept_log.allow(Instant::now()) {
            warn!(
                "server full, turning away; peer={peer} max_connections={} repeats={held_back}",
                self.limits.max_connections
            );
        }
    }

    /// Serves `key` if every layer below its handler is now done: it joins its room, and
    /// its handler hears of it.
    pub(super) fn promote_if_ready(&mut self, key: usize) {
        let Some(conn) = self.conns.get(key) else { return };
        if !conn.is_ready_to_serve() {
            return;
        }
        let service = conn.service();
        if let Some(addresses) = &mut self.per_address {
            if !addresses.admit(conn.peer()) {
                return self.turn_away_served(key);
            }
        }
        let room = self.services[service].room;
        // Lines sent before it joined are not for it; those its room keeps for newcomers
        // are, first (its history), then the live ones: nothing lost or repeated between.
        self.release_room(room);
        let Some(conn) = self.conns.get_mut(key) else { return };
        let framing = conn.compresses().then(|| conn.framing(self.services[service].codec));
        conn.serve(self.rooms[room].join(key, framing));
        self.services[service].connections += 1;
        self.preparing.done();
        if let Some(wheel) = &mut self.clocks.keepalive {
            super::keepalive::watch(wheel, key, conn);
        }
        if let Some(console) = self.console.as_mut().filter(|console| console.is_own(service)) {
            // A watcher: a snapshot first.
            console.watch(key);
            let mut console = self.console.take().expect("the console");
            self.send_snapshot(&mut console, Some(key), Instant::now());
            self.console = Some(console);
            return;
        }
        let asker = Asker { key, service };
        match self.records.join(room, asker, self.sources.backplane.as_mut()) {
            Reply::Now(()) => {
                // Its history is here (in memory): in the same step, so nothing comes between.
                let codec = self.services[service].codec;
                for line in self.records.history(room) {
                    conn.push_output(codec, line, true, &mut self.scratch.pool);
                    self.telemetry.stats.messages_out += 1;
                }
                if conn.has_output_waiting() {
                    self.queues.flush(key, conn);
                }
                self.greet(key, service);
            }
            Reply::Later => {
                // The engine reads its history; the room's lines are held for it meanwhile,
                // and it waits to be greeted (`finish_joining`).
                conn.start_joining();
                conn.await_answer();
            }
        }
    }

    /// `key`'s handler hears of it; what it asks for is carried out like a message's.
    fn greet(&mut self, key: usize, service: usize) {
        let Some(conn) = self.conns.get(key) else { return };
        let from = Peer { id: ConnId(key), addr: conn.peer() };
        self.services[service].handler.on_connect(from, &mut self.scratch.outbox);
        self.carry_out(key);
    }

    /// `key`'s history came from the engine: `lines` (its history, then the room's lines
    /// held for it meanwhile) go out first, then the room's lines as they come; its handler
    /// hears of it now.
    pub(super) fn finish_joining(&mut self, key: usize, service: usize, lines: &[Vec<u8>]) {
        // The lines gathered for the room go to the others first: it has them among its own.
        self.release_room(self.services[service].room);
        let Some(conn) = self.conns.get_mut(key) else { return };
        let codec = self.services[service].codec;
        for line in lines {
            conn.push_output(codec, line, true, &mut self.scratch.pool);
            self.telemetry.stats.messages_out += 1;
        }
        if conn.has_output_waiting() {
            self.queues.flush(key, conn);
            if self.budget.count(conn) {
                self.evict_biggest();
            }
        }
        if let Some(conn) = self.conns.get_mut(key) {
            conn.joined();
            self.greet(key, service);
        }
    }

    /// Its address has as many connections as one may (`--max-connections-per-ip`): told
    /// so in its protocol, now that it has one, and closed; its handler never hears of it.
    fn turn_away_served(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        self.telemetry.stats.connections_rejected += 1;
        let (codec, peer) = (self.services[conn.service()].codec, conn.peer().clone());
        conn.push_notice(codec, Notice::TooManyFromAddress, &mut self.scratch.pool);
        conn.stop(super::connection::StopReason::HandlerClosed);
        self.queues.flush(key, conn);
        if let Some(held_back) = self.telemetry.accept_log.allow(Instant::now()) {
            let max = self.per_address.as_ref().map_or(0, |addresses| addresses.max);
            warn!(
                "too many connections from one address, turning away; peer={peer} max_connections_per_ip={max} repeats={held_back}"
            );
        }
    }
}

/// Connections served per client address, for `--max-connections-per-ip` (nginx's
/// `limit_conn`): counted once a connection is ready (behind a balancer, that is once its
/// PROXY header named the real client), until it closes. Per process: under `--workers`,
/// each worker counts its own.
#[derive(Debug)]
pub(super) struct AddressCounts {
    max: usize,
    open: HashMap<IpAddr, usize>,
}

impl AddressCounts {
    /// At most `max` connections per address.
    pub fn new(max: usize) -> AddressCounts {
        AddressCounts { max, open: HashMap::new() }
    }

    /// Counts a connection from `peer`; false (not counted) if its address has `max` already.
    /// Unix and UDP peers have no address to count.
    pub fn admit(&mut self, peer: &PeerAddr) -> bool {
        let PeerAddr::Tcp(addr) = peer else { return true };
        let open = self.open.entry(addr.ip()).or_insert(0);
        if *open >= self.max {
            return false;
        }
        *open += 1;
        true
    }

    /// A connection counted by [`admit`](Self::admit) closed.
    pub fn closed(&mut self, peer: &PeerAddr) {
        let PeerAddr::Tcp(addr) = peer else { return };
        if let Some(open) = self.open.get_mut(&addr.ip()) {
            *open -= 1;
            if *open == 0 {
                self.open.remove(&addr.ip());
            }
        }
    }
}
