//! The traffic of a loader thread's connections: requests queued (one `write` per
//! connection per turn) or sent at once (a datagram, `--write-each`), replies counted, and
//! connections given up. [`Wire`] borrows the parts of the engine this touches, so a
//! workload handed a connection's replies (`replies.rs`) can answer a request and send the
//! next without reaching into the engine.

use std::io;

use super::conns::{Connections, InFlight};
use super::schedule::Schedule;
use super::{DATAGRAM_MATCH_WINDOW, REPLY_CHECK_MAX_NS, REPLY_CHECK_MIN_NS, REPLY_CHECKS_PER_TIMEOUT};
use crate::load::config::LoadConfig;
use crate::load::tally::Tally;
use crate::load::workloads::{Exchange, Request};

/// The parts of a loader thread a connection's traffic touches, borrowed together.
pub(crate) struct Wire<'e, W: Exchange> {
    pub(super) config: &'e LoadConfig,
    pub(super) workload: &'e W,
    pub(super) conns: &'e mut Connections<W::Conn>,
    pub(super) schedule: &'e mut Schedule,
    pub(super) tally: &'e mut Tally,
    /// A buffer for a datagram being built, or an expected reply.
    pub(super) scratch: &'e mut Vec<u8>,
    /// Whether the run is in its running phase (replies then send the next request).
    pub(super) running: bool,
}

impl<W: Exchange> Wire<'_, W> {
    /// The connections that send: the first `--active` of those up.
    pub fn sending_keys(&self) -> &[usize] {
        self.conns.sending_keys()
    }

    /// Connection `key`'s id.
    pub fn id(&self, key: usize) -> u32 {
        self.conns[key].id
    }

    /// Connection `key`'s oldest request outstanding.
    pub fn oldest(&self, key: usize) -> Option<InFlight> {
        self.conns.get(key)?.oldest().copied()
    }

    /// `key`'s oldest request was answered elsewhere (broadcast: every other member has
    /// the line): taken off, and the closed loop sends the next.
    pub fn answered_elsewhere(&mut self, key: usize, now: u64) {
        if self.conns.take_oldest(key).is_some() {
            self.send_after_reply(key, now);
        }
    }

    /// Open loop: sends every message whose scheduled time has come, round robin over the
    /// connections that send, then arms the pacer for the next one.
    pub(super) fn send_due(&mut self, now: u64) {
        while let Some(due) = self.schedule.next_due() {
            let senders = self.conns.sending_keys();
            if due > now || senders.is_empty() {
                break;
            }
            let key = senders[(self.schedule.take_due() % senders.len() as u64) as usize];
            self.send_next(key, due, now);
        }
        self.schedule.arm_pacer();
    }

    /// Closed loop: fills every sending connection's pipeline; each reply then sends the
    /// next.
    pub(super) fn fill_pipelines(&mut self, now: u64) {
        for index in 0..self.conns.sending_keys().len() {
            let key = self.conns.sending_keys()[index];
            for _ in 0..self.config.pipeline {
                self.send_next(key, now, now);
            }
        }
    }

    /// Queues the next request of `key`, scheduled for `intended_ns`, if the budget allows.
    pub(super) fn send_next(&mut self, key: usize, intended_ns: u64, now: u64) {
        if !self.schedule.spend() {
            return;
        }
        let conn = &mut self.conns[key];
        let seq = conn.next_seq;
        conn.next_seq += 1;
        let request =
            Request { id: conn.id, seq, intended_ns, sent_ns: now, epoch_ns: self.schedule.run_start_ns };
        let (workload, tally) = (self.workload, &mut *self.tally);
        let mut write_payload = |out: &mut Vec<u8>| workload.request(&request, out, tally);
        let mut failed = None;
        let wire_bytes = if conn.stream.is_datagram() {
            self.scratch.clear();
            write_payload(self.scratch);
            failed = conn.send_datagram(self.scratch).err();
            self.scratch.len()
        } else {
            // Framed in place, in the buffer it is written from.
            conn.frame(self.config.codec, seq, write_payload)
        };
        // Open-loop broadcast lines: nothing answers them (their deliveries are counted
        // apart).
        if W::ANSWERED_ON_ITS_CONNECTION || !self.schedule.open_loop() {
            let request = InFlight { seq, intended_ns, sent_ns: now, wire_bytes: wire_bytes as u32 };
            self.conns.await_reply(key, request);
        }
        self.tally.sent += 1;
        if self.schedule.open_loop() {
            Tally::record(&mut self.tally.schedule_lag, now.saturating_sub(intended_ns));
        }
        if let Some(error) = failed {
            return self.lose(key, Some(error));
        }
        let conn = &self.conns[key];
        if conn.has_output() {
            if self.config.write_each && !conn.queued_for_flush() {
                // Now, in a write of its own (unless output is already waiting).
                self.flush(key);
            } else {
                self.conns.queue_flush(key);
            }
        }
    }

    /// Closed loop: an answered (or lost) request makes room for the next one.
    pub(super) fn send_after_reply(&mut self, key: usize, now: u64) {
        if self.running && self.schedule.follows_reply(now) {
            self.send_next(key, now, now);
        }
    }

    /// Writes what `key` has waiting.
    pub(super) fn flush(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if let Err(error) = conn.write_out() {
            self.lose(key, Some(error));
        }
    }

    /// Writes every connection queued this turn, one `write` each.
    pub(super) fn flush_queued(&mut self) {
        let queue = self.conns.take_flush_queue();
        for &key in &queue {
            self.flush(key);
        }
        self.conns.restore_flush_queue(queue);
    }

    /// A reply matched its request: counted, and measured if the request was due after the
    /// warmup.
    pub(super) fn count_verified(&mut self, flight: &InFlight, reply_len: usize, now: u64) {
        self.tally.verified += 1;
        if self.schedule.measured(flight.intended_ns) {
            let wire_bytes = u64::from(flight.wire_bytes) + reply_len as u64;
            self.count_measured(flight.intended_ns, flight.sent_ns, now, wire_bytes);
        }
    }

    /// A verified message after the warmup: its latency (from when it was due; open loop
    /// also from its send) and its bytes count in the figures.
    pub(super) fn count_measured(&mut self, intended_ns: u64, sent_ns: u64, now: u64, wire_bytes: u64) {
        self.tally.measured += 1;
        self.tally.measured_bytes += wire_bytes;
        self.tally.last_reply_ns = now;
        Tally::record(&mut self.tally.latency, now.saturating_sub(intended_ns));
        if self.schedule.open_loop() {
            Tally::record(&mut self.tally.uncorrected, now.saturating_sub(sent_ns));
        }
    }

    /// UDP may drop datagrams (and, off loopback, reorder them): a reply belongs to the first
    /// outstanding request it matches, within [`DATAGRAM_MATCH_WINDOW`]; the requests before
    /// that one lost their replies.
    pub(super) fn on_datagram(&mut self, key: usize, reply: &[u8], now: u64) {
        self.tally.received += 1;
        let Some(conn) = self.conns.get(key) else { return };
        let id = conn.id;
        let mut matched = None;
        for index in 0..conn.outstanding().min(DATAGRAM_MATCH_WINDOW) {
            let seq = self.conns[key].in_flight_at(index).seq;
            if self.workload.check(id, seq, reply, self.scratch) {
                matched = Some(index);
                break;
            }
        }
        let Some(index) = matched else {
            return self.tally.mismatch(id, b"(a reply to an outstanding request)", reply);
        };
        for _ in 0..index {
            self.conns.take_oldest(key);
            self.count_lost_datagram(key, now);
        }
        let flight = self.conns.take_oldest(key).expect("the matched request");
        self.count_verified(&flight, reply.len(), now);
        self.send_after_reply(key, now);
    }

    /// A UDP request whose reply never came (already taken off).
    fn count_lost_datagram(&mut self, key: usize, now: u64) {
        self.tally.lost += 1;
        // The closed loop goes on: a lost datagram must not stall its connection.
        self.send_after_reply(key, now);
    }

    /// Every wait for a reply ends at `--reply-timeout` (checked a few times per timeout, see
    /// `REPLY_CHECKS_PER_TIMEOUT`), in every phase: the closed loop sends only when a reply
    /// comes, so a reply that never came, or never came whole, would stop its connection
    /// for good, and a counted run (`-n`) with it.
    pub(super) fn expire_replies(&mut self, now: u64) {
        let timeout = self.config.reply_timeout.as_nanos() as u64;
        let every = (timeout / REPLY_CHECKS_PER_TIMEOUT).clamp(REPLY_CHECK_MIN_NS, REPLY_CHECK_MAX_NS);
        if !self.conns.reply_check_due(now, every) {
            return;
        }
        // Backwards: a connection given up is swapped out for the last one, already seen.
        for index in (0..self.conns.up_keys().len()).rev() {
            self.expire_replies_of(self.conns.up_keys()[index], now, timeout);
        }
    }

    /// `key`'s overdue requests: over UDP each is lost and the closed loop goes on; a stream
    /// that heard nothing for the timeout is closed, its requests lost (a late reply could
    /// no longer be told from the next request's); a connection whose answers come
    /// elsewhere (a broadcast sender) gives its requests up and stops sending.
    fn expire_replies_of(&mut self, key: usize, now: u64, timeout: u64) {
        let Some(conn) = self.conns.get(key) else { return };
        let Some(oldest) = conn.oldest() else { return };
        if conn.stream.is_datagram() {
            while self.oldest(key).is_some_and(|flight| flight.sent_ns + timeout <= now) {
                self.conns.take_oldest(key);
                self.count_lost_datagram(key, now);
            }
        } else if !W::ANSWERED_ON_ITS_CONNECTION {
            // Its wait counts from its send: what it hears are the others' requests.
            if oldest.sent_ns + timeout <= now {
                log::debug!("no answer in time; conn={} outstanding={}", conn.id, conn.outstanding());
                self.conns.take_all(key);
                self.tally.run_failures.reply_timeout += 1;
            }
        } else if oldest.sent_ns.max(conn.heard_ns) + timeout <= now {
            log::debug!("no reply in time; conn={} outstanding={}", conn.id, conn.outstanding());
            self.tally.run_failures.reply_timeout += 1;
            self.show_incomplete(key);
            self.drop_up(key);
        }
    }

    /// A connection given up in the middle of a reply (one shorter than expected, whose
    /// rest never came): what came of it is a wrong answer to the oldest request, shown
    /// with the mismatches, not a loss with its bytes unseen.
    fn show_incomplete(&mut self, key: usize) {
        let conn = &self.conns[key];
        let Some(oldest) = conn.oldest() else { return };
        if conn.partial.is_empty() {
            return;
        }
        let offset = conn.received_bytes.saturating_sub(conn.partial.len() as u64);
        self.workload.mismatch(conn.id, oldest.seq, &conn.partial, offset, self.tally, self.scratch);
        self.conns.take_oldest(key);
    }

    /// The server was full, said so, and closes: a connection it refused, counted as such
    /// (not as a wrong reply, nor its requests as lost: they were never taken).
    pub(super) fn turned_away(&mut self, key: usize) {
        if self.conns.remove(key).is_some() {
            self.tally.run_failures.turned_away += 1;
        }
    }

    /// A connection that was up failed or was closed by the server: what it had
    /// outstanding is lost.
    pub(super) fn lose(&mut self, key: usize, error: Option<io::Error>) {
        if !self.conns.contains(key) {
            return;
        }
        match error {
            Some(error) => self.tally.run_failures.count(&error),
            None => self.tally.run_failures.closed += 1,
        }
        self.drop_up(key);
    }

    /// Closes a connection that was up: what it had outstanding is lost (if it was to be
    /// answered on it: see `Exchange::ANSWERED_ON_ITS_CONNECTION`).
    fn drop_up(&mut self, key: usize) {
        let Some(conn) = self.conns.remove(key) else { return };
        if W::ANSWERED_ON_ITS_CONNECTION {
            self.tally.lost += conn.outstanding() as u64;
        }
    }
}
