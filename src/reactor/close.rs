//! Leaving: the deadlines that end connections (idle, not ready in time, done lingering,
//! told too slow), and the close sweep.
//!
//! Connections are only marked during a turn and removed at its end. Removing a connection
//! in the middle of a turn would free its slab key while other steps of the same turn (a
//! broadcast loop, a queued flush) may still refer to it, or hand the key to a new
//! connection that would then receive the old one's events. Marking (`closing`) and
//! sweeping afterwards, as Redis does with `freeClientAsync`, rules that out.

use std::io;
use std::time::Instant;

use log::{debug, error};

use super::connection::{LINGER_TIMEOUT, StopReason};
use super::{Progress, Reactor, Source};
use crate::codec::Notice;
use crate::handlers::{ConnId, Peer};

/// Why a connection is closed.
#[derive(Debug)]
pub(crate) enum CloseReason {
    /// It stopped reading for this reason and its output is all written.
    Finished(StopReason),
    /// A read or write failed.
    Error(io::Error),
    /// No bytes moved for `--idle-timeout`.
    IdleTimeout,
    /// It did not read what other clients sent it, past `--max-output`.
    SlowConsumer,
    /// Still holding unwritten output when the drain deadline came.
    DrainDeadline,
    /// Lingering after its last reply (it stopped for this reason), the client neither
    /// closed nor stopped sending.
    LingerTimeout(StopReason),
    /// The server ended it (for this reason), and after lingering the client closed too (a
    /// clean end).
    Lingered(StopReason),
    /// It was not ready (preamble, handshakes) within `--handshake-timeout`.
    HandshakeTimeout,
    /// Its TLS failed (counted and logged where it did).
    Tls,
}

impl Reactor {
    /// Idle timeouts, on the timing wheel: a connection that moved no bytes for
    /// `--idle-timeout` is told so in its protocol (`ERR idle timeout` on a line; if its
    /// socket will take it) and closed. A connection's activity only stores the current tick
    /// in it (O(1)); when its slot comes due it either expired or is put back in the slot of
    /// its new deadline, so the reactor never scans all connections.
    pub(super) fn expire_idle(&mut self, now: Instant) {
        let Some(wheel) = &mut self.clocks.idle else { return };
        let mut due = std::mem::take(&mut self.clocks.due);
        wheel.due(now, &mut due);
        for &(key, slot) in &due {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.timer_slot() != slot || conn.is_closing() {
                continue; // stale: the key belongs to a newer connection, or it is going anyway
            }
            let Some(wheel) = &mut self.clocks.idle else { break };
            let deadline = wheel.deadline(conn.last_active());
            if deadline > self.clocks.now_tick {
                conn.set_timer_slot(wheel.schedule(key, deadline));
                continue;
            }
            // Told in its own protocol (`ERR idle timeout`, a close frame), written at once.
            self.notify(key, Notice::IdleTimeout);
            self.serve_conn(key, Progress::writing());
            self.close_later(key, CloseReason::IdleTimeout);
        }
        due.clear();
        self.clocks.due = due;
    }

    /// Closes the connections still preparing at their deadline (`--handshake-timeout`).
    pub(super) fn expire_preparing(&mut self, now: Instant) {
        let now_ms = self.clocks.ms(now);
        while let Some((until_ms, key)) = self.preparing.due(now_ms) {
            let Some(conn) = self.conns.get_mut(key) else { continue };
            if conn.prepares_until(until_ms) {
                debug!("not ready in time; conn={key}");
                self.queues.close(key, conn, CloseReason::HandshakeTimeout);
            }
        }
    }

    /// Closes lingering connections whose time is up, and slow consumers that did not read
    /// what they were told in time.
    pub(super) fn expire_lingering(&mut self, now: Instant) {
        let now_ms = self.clocks.ms(now);
        while let Some((until_ms, key)) = self.queues.lingering_due(now_ms) {
            let Some(conn) = self.conns.get_mut(key) else { continue };
            if let Some(reason) = conn.lingers_until(until_ms) {
                self.queues.close(key, conn, CloseReason::LingerTimeout(reason));
            } else if let Some(reason) = conn.told_until(until_ms) {
                // Told why it goes, and it still has not read it.
                let reason = match reason {
                    StopReason::TooSlow => CloseReason::SlowConsumer,
                    reason => CloseReason::LingerTimeout(reason),
                };
                self.queues.close(key, conn, reason);
            }
        }
    }

    /// All clients hold more than `--max-client-memory` (`budget.rs`): frees what costs
    /// nothing, then evicts the biggest holders, each told in its protocol, until the rest
    /// hold less than seven eighths of the budget. An evicted connection's buffers go at
    /// once; it closes once its notice is written (a lingering close, as for any connection
    /// the server ends).
    pub(super) fn evict_biggest(&mut self) {
        if !self.budget.is_over() {
            return;
        }
        self.scratch.pool.trim();
        for key in self.budget.choose_evictions(&mut self.conns) {
            let Some(conn) = self.conns.get_mut(key) else { continue };
            self.budget.log_eviction(key, conn);
            self.telemetry.stats.clients_evicted += 1;
            let until_ms = self.clocks.deadline_ms(LINGER_TIMEOUT);
            conn.evict(&mut self.scratch.pool, until_ms);
            let codec = self.services[conn.service()].codec;
            if conn.is_ready() && conn.push_notice(codec, Notice::Evicted, &mut self.scratch.pool) {
                self.telemetry.stats.messages_out += 1;
            }
            let file_slot = conn.drop_file();
            self.budget.count(conn);
            self.queues.lingering.push_back((until_ms, key));
            self.queues.flush(key, conn);
            if file_slot {
                self.release_file_slot();
            }
        }
    }

    /// The close phase: removes every marked connection, and tells its handler.
    pub(super) fn close_queued(&mut self) {
        if self.queues.close.is_empty() {
            return;
        }
        // A handler's goodbye can mark more connections (a slow room member); keep going
        // until none are left, so no key outlives its turn.
        while !self.queues.close.is_empty() {
            let queue = std::mem::take(&mut self.queues.close);
            for (key, reason) in queue {
                self.remove(key, reason);
            }
        }
        let conns = &self.conns;
        self.queues.owed.retain(|source| !matches!(source, Source::Conn(key) if !conns.contains(*key)));
    }

    fn remove(&mut self, key: usize, reason: CloseReason) {
        let Some(mut conn) = self.conns.try_remove(key) else {
            return;
        };
        let service = conn.service();
        let served = conn.is_ready();
        if served {
            let room = self.services[service].room;
            if self.rooms[room].is_releasing() {
                // Leaving moves the last member into its place, perhaps among those already
                // written to: the release in progress is finished first.
                self.release_room(room);
            }
            if let Some(moved) = self.rooms[room].leave(conn.member_index()) {
                self.conns[moved].moved_to(conn.member_index());
            }
            self.records.leave(room, key, self.sources.backplane.as_mut());
            self.services[service].connections -= 1;
        } else {
            self.preparing.done();
        }
        self.budget.forget(&conn);
        self.scratch.parked.remove(&key);
        if let Some(console) = &mut self.console {
            match console.is_own(service) {
                true => console.unwatch(key),
                false => console.reset(key),
            }
        }
        if let Some(addresses) = self.per_address.as_mut().filter(|_| conn.is_ready()) {
            addresses.closed(conn.peer());
        }
        conn.release_buffers(&mut self.scratch.pool);
        if conn.drop_file() {
            self.release_file_slot();
        }
        let stats = &mut self.telemetry.stats;
        stats.connections_closed += 1;
        if let Some(recording) = &mut self.telemetry.recording {
            recording.closed(key);
        }
        match &reason {
            CloseReason::Error(error) if client_went_away(error) => {
                stats.closed_by_client += 1;
                debug!("closed; conn={key} peer={} reason=\"{error}\"", conn.peer());
            }
            CloseReason::Error(error) => {
                stats.closed_error += 1;
                error!("closed on error; conn={key} peer={} error={error}", conn.peer())
            }
            CloseReason::SlowConsumer => {
                // Warned about when it was found slow (`linger.rs`).
                stats.closed_slow += 1;
                debug!("closed; conn={key} peer={} reason=slow_consumer", conn.peer());
            }
            CloseReason::IdleTimeout => {
                stats.closed_idle += 1;
                debug!("closed; conn={key} peer={} reason=idle", conn.peer());
            }
            CloseReason::Finished(StopReason::PeerClosed) => {
                stats.closed_by_client += 1;
                debug!("closed; conn={key} peer={} reason=PeerClosed", conn.peer())
            }
            CloseReason::Finished(StopReason::Evicted)
            | CloseReason::Lingered(StopReason::Evicted)
            | CloseReason::LingerTimeout(StopReason::Evicted) => {
                stats.closed_evicted += 1;
                debug!("closed; conn={key} peer={} reason=evicted", conn.peer())
            }
            CloseReason::Finished(why) => {
                stats.closed_other += 1;
                debug!("closed; conn={key} peer={} reason={why:?}", conn.peer())
            }
            CloseReason::DrainDeadline => {
                stats.closed_other += 1;
                debug!("closed; conn={key} peer={} reason=drain_deadline", conn.peer())
            }
            CloseReason::Lingered(StopReason::TooSlow) | CloseReason::LingerTimeout(StopReason::TooSlow) => {
                stats.closed_slow += 1;
                debug!("closed; conn={key} peer={} reason=slow_consumer_told", conn.peer())
            }
            CloseReason::Lingered(StopReason::PingTimeout)
            | CloseReason::LingerTimeout(StopReason::PingTimeout) => {
                stats.closed_ping_timeout += 1;
                debug!("closed; conn={key} peer={} reason=ping_timeout", conn.peer())
            }
            CloseReason::LingerTimeout(why) => {
                stats.closed_other += 1;
                debug!("closed; conn={key} peer={} reason=linger_timeout stopped={why:?}", conn.peer())
            }
            CloseReason::Lingered(why) => {
                stats.closed_other += 1;
                debug!("closed; conn={key} peer={} reason=lingered stopped={why:?}", conn.peer())
            }
            CloseReason::Tls => {
                stats.closed_error += 1;
                debug!("closed; conn={key} peer={} reason=tls", conn.peer())
            }
            CloseReason::HandshakeTimeout => {
                stats.closed_handshake_timeout += 1;
                debug!("closed; conn={key} peer={} reason=handshake_timeout", conn.peer())
            }
        }
        if served && !conn.is_joining() {
            // Only a connection its handler heard of is said goodbye to.
            let peer = Peer { id: ConnId(key), addr: conn.peer() };
            self.services[service].handler.on_disconnect(peer, &mut self.scratch.outbox);
            self.carry_out_for(key, service);
        }
        // Dropping the socket closes it, which also takes it out of the epoll set: no
        // `deregister` syscall needed.
        drop(conn);
    }
}

/// Errors that just mean the client left abruptly: not worth more than a debug line, and
/// counted as closed by the client. `NotConnected` is the client's reset meeting the
/// server's `shutdown` (the lingering close, after the last reply): a browser tab sends its
/// WebSocket close frame and closes without waiting for the answer.
fn client_went_away(error: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        error.kind(),
        ConnectionReset | BrokenPipe | ConnectionAborted | NotConnected | TimedOut | UnexpectedEof
    )
}
