//! How a connection stops: it stops reading (the client closed, the handler or its protocol
//! ended it, the server is stopping), writes what it has, and goes; or, if it does not read
//! what others send it, it is let go as a slow consumer.
//!
//! Lingering close: a write only hands bytes to the kernel. If the server then closes a
//! socket that still has unread input (a client that pipelined more requests, or kept
//! sending), the kernel answers with a reset and throws away whatever it had not delivered
//! yet: the client loses replies the server "wrote". So once everything is written, the
//! server shuts down its sending side (the kernel delivers what is queued, then FIN), keeps
//! reading and discarding until the client closes too, and only then closes: the lingering
//! close of nginx and Apache. A client that never closes is cut off after
//! [`LINGER_TIMEOUT`] (`close.rs` checks the deadlines).

use std::io;
use std::time::Duration;

use log::{debug, warn};
use mio::Interest;

use super::{CloseReason, Connection, Next, Progress, READS_PER_TURN, Reading, Stamp, StopReason, Turn};
use crate::codec::Notice;
use crate::handlers::serve::Flow;
use crate::reactor::buffer_pool::BufferPool;

/// How long a closing connection waits for its client to close, and a slow consumer told so
/// to read what it was told.
pub(crate) const LINGER_TIMEOUT: Duration = Duration::from_secs(2);

impl Connection {
    /// Never reads again; it closes once its pending output is written. The first reason
    /// given is kept.
    pub fn stop(&mut self, reason: StopReason) {
        if !matches!(self.reading, Reading::Stopped(_)) {
            self.reading = Reading::Stopped(reason);
        }
    }

    /// It is evicted (`budget.rs`): everything it holds goes now (its kept input, its
    /// pending output, what its protocol and transport keep of input); it reads nothing
    /// more, gets nothing more but what it is told next, and is cut at `until_ms` unless it
    /// reads that first (a client that never reads is gone by then, its memory with it).
    pub fn evict(&mut self, pool: &mut BufferPool, until_ms: u64) {
        self.free_buffers(pool);
        self.protocol.drop_input();
        self.transport.drop_input();
        self.told(until_ms, StopReason::Evicted);
    }

    /// Whether it was evicted (`budget.rs`) and is on its way out.
    pub fn is_evicted(&self) -> bool {
        matches!(
            self.reading,
            Reading::Told { reason: StopReason::Evicted, .. }
                | Reading::Lingering { reason: StopReason::Evicted, .. }
        )
    }

    /// Everything is written: shuts down the sending side (the transport's goodbye, then
    /// FIN, which the kernel sends after what is queued) and reads on only to discard,
    /// until the client closes or `until_ms` (see `linger.rs`).
    pub fn linger(&mut self, until_ms: u64, reason: StopReason) -> io::Result<()> {
        self.transport.shutdown(&mut self.stream)?;
        self.reading = Reading::Lingering { until: Stamp::of(until_ms), reason };
        Ok(())
    }

    /// Why it lingers, if it is still the lingering that was to end at `until_ms` (not
    /// closed, not stopped again since).
    pub fn lingers_until(&self, until_ms: u64) -> Option<StopReason> {
        match self.reading {
            Reading::Lingering { until, reason } if until == Stamp::of(until_ms) => Some(reason),
            _ => None,
        }
    }

    /// Why it lingers, if it does.
    pub fn lingering_reason(&self) -> Option<StopReason> {
        match self.reading {
            Reading::Lingering { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// Why it was told to go, if it is still the connection told so at `until_ms` (`told`).
    pub fn told_until(&self, until_ms: u64) -> Option<StopReason> {
        match self.reading {
            Reading::Told { until, reason } if until == Stamp::of(until_ms) => Some(reason),
            _ => None,
        }
    }

    /// It was told why it goes (too slow, evicted: its notice is queued): it reads nothing
    /// more, gets nothing more, and is cut at `until_ms` unless it reads what is queued first.
    pub fn told(&mut self, until_ms: u64, reason: StopReason) {
        self.reading = Reading::Told { until: Stamp::of(until_ms), reason };
    }

    /// Marks it to be removed at the end of the turn; false if it already is.
    pub fn mark_closing(&mut self) -> bool {
        !std::mem::replace(&mut self.closing, true)
    }

    /// Takes it off the owed list (it is being read).
    pub fn clear_owed_read(&mut self) {
        self.owed_read = false;
    }

    /// Gives its buffers back to the pool (it is being removed).
    pub fn release_buffers(&mut self, pool: &mut BufferPool) {
        if let Some(partial) = self.partial_input.take() {
            pool.give(partial);
        }
        self.output.release(pool);
    }

    /// Frees its buffers, not to the pool: it is evicted, memory is short, and its notice
    /// must not get one of them back at the size it grew to.
    fn free_buffers(&mut self, pool: &mut BufferPool) {
        if let Some(partial) = self.partial_input.take() {
            pool.free(partial);
        }
        self.output.free(pool);
    }

    /// The idle-wheel tick of its last activity.
    pub fn last_active(&self) -> u64 {
        self.last_active
    }

    /// The idle-wheel slot its entry sits in (an entry from another slot is stale).
    pub fn timer_slot(&self) -> u32 {
        self.timer_slot
    }

    /// Notes the slot its idle-wheel entry now sits in.
    pub fn set_timer_slot(&mut self, slot: u32) {
        self.timer_slot = slot;
    }

    /// The keepalive-wheel slot its entry sits in.
    pub fn keepalive_slot(&self) -> u32 {
        self.keepalive_slot
    }

    /// Notes the slot its keepalive-wheel entry now sits in.
    pub fn set_keepalive_slot(&mut self, slot: u32) {
        self.keepalive_slot = slot;
    }
}

impl Turn<'_> {
    /// The client half-closed: a non-empty incomplete tail is its last message, then the
    /// connection closes once its replies are written (`Progress::ended`). A connection not
    /// served yet (its preamble or handshake unfinished) just closes.
    pub(super) fn end_of_stream(&mut self, progress: &mut Progress) -> Option<Next> {
        if self.conn.awaits_answer() {
            // Its last messages wait for an answer from the room; the read that follows the
            // answer finds the end of the stream again.
            return None;
        }
        let partial = self.conn.take_partial_input();
        let tail = partial.as_deref().unwrap_or_default();
        let next = if self.conn.awaits_preamble() {
            // Half a PROXY header: nothing to serve.
            None
        } else if let Some(mut decoder) = self.conn.decoder() {
            let (used, flow) = self.decode_and_serve(&mut decoder, tail, true);
            self.conn.set_decoder(decoder);
            if flow == Flow::Pause && used < tail.len() {
                // The rest after a question to the room, served once it has answered.
                let mut rest = self.scratch.pool.take();
                rest.extend_from_slice(&tail[used..]);
                self.conn.keep_partial_input(rest, &mut self.scratch.pool);
                progress.kept_first = true;
            }
            self.scratch.outbox.has_intents().then_some(Next::CarryOut)
        } else if let Some(session) = self.conn.session() {
            session.finish(tail, &mut self.scratch.session);
            self.carry_out_events(0, progress)
        } else {
            None
        };
        if let Some(partial) = partial {
            self.scratch.pool.give(partial);
        }
        next
    }

    /// Stops reading; the connection closes once its pending output is written.
    pub(super) fn stop_reading(&mut self, reason: StopReason) {
        self.conn.stop(reason);
        self.queues.flush(self.key, self.conn);
    }

    /// Reads and drops what a lingering connection's client sends; its end of stream closes
    /// the connection.
    pub(super) fn discard_input(&mut self) {
        let mut buffer = std::mem::take(&mut self.scratch.read);
        for reads in 0.. {
            if self.conn.is_closing() {
                break;
            }
            if reads == READS_PER_TURN {
                self.queues.owe_read(self.key, self.conn);
                break;
            }
            match self.conn.read(&mut buffer, self.clocks.now_tick) {
                Ok(Some(0)) => {
                    let reason = self.conn.lingering_reason().unwrap_or(StopReason::HandlerClosed);
                    self.close_later(CloseReason::Lingered(reason));
                    break;
                }
                Ok(Some(n)) => self.telemetry.stats.bytes_in += n as u64,
                Ok(None) => break,
                Err(error) => {
                    self.close_later(CloseReason::Error(error));
                    break;
                }
            }
        }
        self.scratch.read = buffer;
    }

    /// A stopped connection has written everything: close it now if its client already
    /// closed (nothing more can arrive), else linger.
    pub(super) fn finish_stopped(&mut self, reason: StopReason) {
        if reason == StopReason::PeerClosed {
            return self.close_later(CloseReason::Finished(reason));
        }
        let until_ms = self.clocks.deadline_ms(LINGER_TIMEOUT);
        if let Err(error) = self.conn.linger(until_ms, reason) {
            return self.close_later(CloseReason::Error(error));
        }
        if !self.update_interest(Interest::READABLE) {
            return;
        }
        debug!("lingering; conn={} reason={reason:?}", self.key);
        self.queues.lingering.push_back((until_ms, self.key));
        // Input may be waiting already, and its edge came while reading was stopped.
        self.queues.owe_read(self.key, self.conn);
    }

    /// A member that does not read what others send it: told so in its protocol where the
    /// protocol has words for it (a WebSocket close 1008, after what is queued), then given
    /// [`LINGER_TIMEOUT`] to read it before it is cut; cut at once where it has none (a line
    /// client has always been closed without a word).
    pub(super) fn drop_slow_consumer(&mut self) {
        let until_ms = self.clocks.deadline_ms(LINGER_TIMEOUT);
        self.telemetry.stats.slow_consumers += 1;
        warn!(
            "slow consumer; conn={} peer={} max_output={}",
            self.key,
            self.conn.peer(),
            self.limits.max_output
        );
        if self.conn.push_notice(self.service.codec, Notice::TooSlow, &mut self.scratch.pool) {
            self.conn.told(until_ms, StopReason::TooSlow);
            self.queues.lingering.push_back((until_ms, self.key));
            self.queues.flush(self.key, self.conn);
        } else {
            self.close_later(CloseReason::SlowConsumer);
        }
    }
}
