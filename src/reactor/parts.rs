//! The reactor's parts, grouped by who uses them, each with the methods that keep its rules:
//! the work queued for later ([`Queues`]), the buffers every connection borrows in turn
//! ([`Scratch`]), the clocks ([`Clocks`]), and what the reactor reports about itself
//! ([`Telemetry`]). A connection's turn (`connection.rs`) borrows the parts it needs and asks
//! them (`queues.owe_read(key, conn)`), rather than reaching through the reactor.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use log::warn;

use super::buffer_pool::BufferPool;
use super::connection::Connection;
use super::hint::RawHint;
use super::metrics::SharedMetrics;
use super::reporter::Reporter;
use super::timer_wheel::{Entry, TimerWheel};
use super::trace::WakeupTrace;
use super::{CloseReason, Source};
use crate::codec::{FrameError, SessionEvents};
use crate::handlers::Outbox;
use crate::log_throttle::LogThrottle;
use crate::stats::Stats;
use crate::sys::address::PeerAddr;
use crate::timeline::Recording;

/// Work a turn leaves for later in the turn, or for the next one.
#[derive(Default)]
pub(super) struct Queues {
    /// Sources served short of `WouldBlock` earlier: edge-triggered polling will not report
    /// them again for bytes already waiting, so the reactor must come back by itself.
    pub owed: Vec<Source>,
    /// Connections with new output this turn, written in the flush phase.
    pub flush: Vec<usize>,
    /// Connections to remove at the end of this turn, and why.
    pub close: Vec<(usize, CloseReason)>,
    /// Connections lingering after their last reply (or told they are too slow), by
    /// deadline (ms since the start); all share one timeout, so this is in deadline order.
    /// Entries of connections that closed earlier are skipped when they come up.
    pub lingering: VecDeque<(u64, usize)>,
    /// TLS handshake steps this turn, against `HANDSHAKES_PER_TURN`.
    pub handshakes: usize,
}

impl Queues {
    /// Puts `key` on the flush queue (once per turn).
    pub fn flush(&mut self, key: usize, conn: &mut Connection) {
        if conn.queue_for_flush() {
            self.flush.push(key);
        }
    }

    /// Puts `key` on the flush queue for the next turn even if it was just flushed (its
    /// share of this turn is spent; the non-empty queue keeps the next poll from sleeping).
    pub fn flush_next_turn(&mut self, key: usize, conn: &mut Connection) {
        conn.unqueue_for_flush();
        self.flush(key, conn);
    }

    /// Notes that `key` has bytes waiting that no event will announce again.
    pub fn owe_read(&mut self, key: usize, conn: &mut Connection) {
        if conn.owe_read() {
            self.owed.push(Source::Conn(key));
        }
    }

    /// Notes that `source` (not a connection) is owed a turn; `owed` is its own flag, so
    /// that it is listed once.
    pub fn owe(&mut self, source: Source, owed: &mut bool) {
        if !std::mem::replace(owed, true) {
            self.owed.push(source);
        }
    }

    /// Marks `key` to be removed at the end of the turn (once, whatever the callers).
    pub fn close(&mut self, key: usize, conn: &mut Connection, reason: CloseReason) {
        if conn.mark_closing() {
            self.close.push((key, reason));
        }
    }

    /// Whether work is queued for this turn or the next (the next poll must not sleep).
    pub fn has_work(&self) -> bool {
        !self.owed.is_empty() || !self.flush.is_empty() || !self.close.is_empty()
    }

    /// The earliest lingering deadline (ms since the start).
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.lingering.front().map(|&(until_ms, _)| until_ms)
    }
}

/// Takes the first entry of a deadline queue if it is due by `now_ms`.
fn pop_due(queue: &mut VecDeque<(u64, usize)>, now_ms: u64) -> Option<(u64, usize)> {
    match queue.front() {
        Some(&(until_ms, _)) if until_ms <= now_ms => queue.pop_front(),
        _ => None,
    }
}

impl Queues {
    /// The first lingering connection whose deadline is due by `now_ms`.
    pub fn lingering_due(&mut self, now_ms: u64) -> Option<(u64, usize)> {
        pop_due(&mut self.lingering, now_ms)
    }
}

/// Connections not served yet (a PROXY header or a handshake still to come): how many (the
/// `preparing` gauge), and the deadlines of those that wait (`--handshake-timeout`), in
/// order, since all share one timeout. Entries of connections served or closed since are
/// skipped when they come up.
#[derive(Default)]
pub(super) struct Preparing {
    count: usize,
    deadlines: VecDeque<(u64, usize)>,
}

impl Preparing {
    /// Connection `key` was accepted; unless it is ready at once, it must be by `until_ms`.
    pub fn start(&mut self, key: usize, until_ms: u64, ready_at_once: bool) {
        self.count += 1;
        if !ready_at_once {
            self.deadlines.push_back((until_ms, key));
        }
    }

    /// A preparing connection was served, or closed before it was.
    pub fn done(&mut self) {
        self.count -= 1;
    }

    /// How many are preparing now.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The earliest deadline (ms since the start).
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.deadlines.front().map(|&(until_ms, _)| until_ms)
    }

    /// The first entry whose deadline is due by `now_ms`.
    pub fn due(&mut self, now_ms: u64) -> Option<(u64, usize)> {
        pop_due(&mut self.deadlines, now_ms)
    }
}

/// Buffers every connection borrows in turn: one of each per reactor, not per connection.
#[derive(Default)]
pub(super) struct Scratch {
    /// The one read buffer (`READ_BUFFER_SIZE`). Bytes of a complete message never leave
    /// it; only an incomplete tail is copied into a per-connection buffer.
    pub read: Vec<u8>,
    /// Plaintext from a transport that decrypts (the plain one reads straight into `read`).
    pub plain: Vec<u8>,
    /// Reused for every handler call.
    pub outbox: Outbox,
    /// What a stateful protocol found in one read.
    pub session: SessionEvents,
    /// A session's events that wait for an answer from the room (asked of the engine), by
    /// connection, and the first of them not carried out yet.
    pub parked: HashMap<usize, (SessionEvents, usize)>,
    /// Buffers a connection holds only while it needs them.
    pub pool: BufferPool,
}

/// Time: the idle and keepalive wheels, the drain, and the start every deadline is counted
/// from.
pub(super) struct Clocks {
    /// Idle timeouts, if configured.
    pub idle: Option<TimerWheel>,
    /// Keepalive pings for protocols that have them (`--ws-ping`), if configured.
    pub keepalive: Option<TimerWheel>,
    /// Scratch space for entries coming due on a wheel.
    pub due: Vec<Entry>,
    /// The idle-wheel tick of the current turn; connections record it as their last activity.
    pub now_tick: u64,
    pub started: Instant,
    /// Set once shutdown starts: the drain deadline.
    pub draining: Option<Instant>,
}

impl Clocks {
    /// Milliseconds since the reactor started, at `now`.
    pub fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.started).as_millis() as u64
    }

    /// `ms` milliseconds since the reactor started, as an instant.
    pub fn at_ms(&self, ms: u64) -> Instant {
        self.started + Duration::from_millis(ms)
    }

    /// The deadline `after` from now, in ms since the reactor started.
    pub fn deadline_ms(&self, after: Duration) -> u64 {
        (self.started.elapsed() + after).as_millis() as u64
    }

    /// A new turn woke at `woke`: the tick connections record as their last activity.
    pub fn wake(&mut self, woke: Instant) {
        if let Some(wheel) = &self.idle {
            self.now_tick = wheel.now_tick(woke);
        }
    }
}

/// What the reactor reports about itself: counters, logs, the timeline.
pub(super) struct Telemetry {
    pub stats: Stats,
    /// Connections closed unflushed at the drain deadline.
    pub cut_at_deadline: u64,
    pub reporter: Option<Reporter>,
    /// Which clients each wakeup served, for `trace` logging.
    pub trace: WakeupTrace,
    /// `--trace-file`: the timeline being recorded (`timeline/recording.rs`); `None`, the usual.
    pub recording: Option<Recording>,
    /// Under `--workers`: metrics shared with the other workers (`metrics.rs`).
    pub shared_metrics: Option<SharedMetrics>,
    pub accept_log: LogThrottle,
    pub misbehaving_log: LogThrottle,
    /// The once-only hint about line framing (`hint.rs`).
    pub raw_hint: RawHint,
}

impl Telemetry {
    /// Counters, logs and timeline, all empty.
    pub fn new(
        reporter: Option<Reporter>,
        recording: Option<Recording>,
        shared_metrics: Option<SharedMetrics>,
    ) -> Telemetry {
        Telemetry {
            stats: Stats::default(),
            cut_at_deadline: 0,
            reporter,
            trace: WakeupTrace::default(),
            recording,
            shared_metrics,
            accept_log: LogThrottle::new(Duration::from_secs(1)),
            misbehaving_log: LogThrottle::new(Duration::from_secs(1)),
            raw_hint: RawHint::default(),
        }
    }

    /// Input `key`'s codec refused (answered with `ERR ...`): counted, and logged once a
    /// second at most.
    pub fn bad_input(&mut self, key: usize, peer: &PeerAddr, error: &FrameError) {
        self.stats.frame_errors += 1;
        if let Some(held_back) = self.misbehaving_log.allow(Instant::now()) {
            warn!("bad input; conn={key} peer={peer} error={error} repeats={held_back}");
        }
    }

    /// A client misbehaved in a way worth a warning (`what`, with its details): logged once
    /// a second at most, with how many were held back.
    pub fn misbehaving(&mut self, what: std::fmt::Arguments<'_>) {
        if let Some(held_back) = self.misbehaving_log.allow(Instant::now()) {
            warn!("{what} repeats={held_back}");
        }
    }
}
