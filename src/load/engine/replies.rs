//! What a workload may do with a connection: [`Replies`], with the bytes it brought (take
//! a reply, answer the oldest request, count, close), and [`Prep`], before the run starts
//! (send a message of its own). The engine makes them; the workload never sees the engine.

use std::mem;

use super::MAX_REPLY;
use super::conns::{Connections, InFlight};
use super::wire::Wire;
use crate::load::config::LoadConfig;
use crate::load::shared::Shared;
use crate::load::tally::Tally;
use crate::load::workloads::Exchange;

/// What evloop answers a client it cannot take (`--max-connections`, select's FD_SETSIZE).
const TURNED_AWAY: &[u8] = b"ERR server full";

/// One connection's replies, as its workload takes them: the bytes that came at `now`.
pub(crate) struct Replies<'e, W: Exchange> {
    pub(super) wire: Wire<'e, W>,
    pub(super) key: usize,
    pub(super) now: u64,
}

impl<W: Exchange> Replies<'_, W> {
    /// The connection's id.
    pub fn id(&self) -> u32 {
        self.wire.conns[self.key].id
    }

    /// When the bytes came.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Whether the connection is still open (an answer may close it: a write that failed).
    pub fn is_open(&self) -> bool {
        self.wire.conns.contains(self.key)
    }

    /// The oldest request outstanding, whose reply comes next.
    pub fn oldest(&self) -> Option<InFlight> {
        self.wire.conns.get(self.key)?.oldest().copied()
    }

    /// What the workload keeps for this connection.
    pub fn state(&mut self) -> &mut W::Conn {
        &mut self.wire.conns[self.key].workload
    }

    /// The start of a reply cut by a read, kept for the next.
    pub fn partial(&mut self) -> &mut Vec<u8> {
        &mut self.wire.conns[self.key].partial
    }

    /// Bytes of replies taken so far on this connection (offsets in mismatch reports).
    pub fn received_bytes(&mut self) -> &mut u64 {
        &mut self.wire.conns[self.key].received_bytes
    }

    /// The thread's tally.
    pub fn tally(&mut self) -> &mut Tally {
        self.wire.tally
    }

    /// The start of the run, which every thread knows.
    pub fn epoch_ns(&self) -> u64 {
        self.wire.schedule.run_start_ns
    }

    /// Whether a message due at `intended_ns` counts in the figures (it was due after the
    /// warmup).
    pub fn measured(&self, intended_ns: u64) -> bool {
        self.wire.schedule.measured(intended_ns)
    }

    /// Counts a verified message that was due at `intended_ns` and sent at `sent_ns` in
    /// the figures (latency, throughput, `wire_bytes` both ways).
    pub fn measure(&mut self, intended_ns: u64, sent_ns: u64, wire_bytes: u64) {
        self.wire.count_measured(intended_ns, sent_ns, self.now, wire_bytes);
    }

    /// The oldest request's reply came, `reply_len` bytes: taken off, counted as verified
    /// if `right` (a wrong one is counted as a mismatch by the caller), and the closed loop
    /// sends the next.
    pub fn answer(&mut self, reply_len: usize, right: bool) {
        let Some(flight) = self.wire.conns.take_oldest(self.key) else { return };
        if right {
            self.wire.count_verified(&flight, reply_len, self.now);
        }
        self.wire.send_after_reply(self.key, self.now);
    }

    /// The default reply: the answer to the oldest request, checked by the workload; a
    /// reply with nothing outstanding is a mismatch.
    pub fn answer_checked(&mut self, reply: &[u8], offset: u64) {
        let id = self.id();
        let Some(flight) = self.oldest() else {
            return self.wire.tally.mismatch(id, b"(no reply: nothing was outstanding)", reply);
        };
        let workload = self.wire.workload;
        let right = workload.check(id, flight.seq, reply, self.wire.scratch);
        if !right {
            workload.mismatch(id, flight.seq, reply, offset, self.wire.tally, self.wire.scratch);
        }
        self.answer(reply.len(), right);
    }

    /// The stream cannot be followed any further: the connection is closed, what it had
    /// outstanding lost.
    pub fn close(&mut self) {
        self.wire.lose(self.key, None);
    }

    /// A whole reply came at `offset`: counted as received, and given to `each` (unless it
    /// is the server's notice that it is full, which closes the connection).
    pub fn whole(&mut self, reply: &[u8], offset: u64, each: &mut impl FnMut(&mut Self, &[u8], u64)) {
        self.wire.tally.received += 1;
        if reply == TURNED_AWAY {
            return self.wire.turned_away(self.key);
        }
        each(self, reply, offset);
    }

    /// Cuts `bytes` (after any incomplete tail) into the codec's frames, each a whole
    /// reply given to `each` with its offset in the stream; keeps what is left for the next.
    pub fn frames(&mut self, bytes: &[u8], mut each: impl FnMut(&mut Self, &[u8], u64)) {
        let conn = &mut self.wire.conns[self.key];
        // Where `input` starts in the connection's stream of replies.
        let base = conn.received_bytes - conn.partial.len() as u64;
        conn.received_bytes += bytes.len() as u64;
        let mut partial = mem::take(&mut conn.partial);
        let mut decoder = conn.decoder();
        let input: &[u8] = if partial.is_empty() {
            bytes
        } else {
            partial.extend_from_slice(bytes);
            &partial
        };
        let mut frames = decoder.frames(input, MAX_REPLY);
        while self.is_open() {
            let at = base + (input.len() - frames.rest().len()) as u64;
            match frames.next() {
                None => break,
                Some(Ok(reply)) => self.whole(reply, at, &mut each),
                Some(Err(error)) => {
                    let id = self.id();
                    self.wire.tally.mismatch_at(id, Some(at), b"(a reply)", error.to_string().as_bytes());
                }
            }
        }
        let used = input.len() - frames.rest().len();
        let tail_in_bytes = partial.is_empty();
        if let Some(conn) = self.wire.conns.get_mut(self.key) {
            conn.set_decoder(decoder);
            if tail_in_bytes {
                conn.partial.extend_from_slice(&bytes[used..]);
            } else {
                partial.drain(..used);
                conn.partial = partial;
            }
        }
    }
}

/// The connections before the run starts, as a workload's `prepare` sees them.
pub(crate) struct Prep<'e, C> {
    pub(super) config: &'e LoadConfig,
    pub(super) shared: &'e Shared,
    pub(super) conns: &'e mut Connections<C>,
    pub(super) tally: &'e mut Tally,
}

impl<C> Prep<'_, C> {
    /// The run's settings.
    pub fn config(&self) -> &LoadConfig {
        self.config
    }

    /// What the threads share.
    pub fn shared(&self) -> &Shared {
        self.shared
    }

    /// The thread's tally.
    pub fn tally(&mut self) -> &mut Tally {
        self.tally
    }

    /// Sends `payload`, framed by the codec, on connection `id` if it is up in this
    /// thread; returns whether it was.
    pub fn send(&mut self, id: u32, payload: &[u8]) -> bool {
        let Some(key) = self.conns.key_of(id) else { return false };
        self.conns[key].frame(self.config.codec, u64::MAX, |out| out.extend_from_slice(payload));
        self.conns.queue_flush(key);
        true
    }
}
