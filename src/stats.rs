//! Counters of what the reactor did, and the periodic `--stats-interval` line.
//!
//! The reactor owns a plain [`Stats`] (no atomics on the hot path) and hands out copies on
//! request through [`crate::ServerHandle::stats`].

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::buffer_pool::PoolStats;

/// Buckets of the events-per-wakeup histogram: bucket `i` counts wakeups with between
/// `2^(i-1)` and `2^i - 1` events (bucket 0: none, a timeout).
pub const EVENT_BUCKETS: usize = 17;

/// What the reactor has done since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Client connections open now.
    pub connections_open: usize,
    /// Connections accepted (and served).
    pub connections_accepted: u64,
    /// Connections closed, for any reason.
    pub connections_closed: u64,
    /// Connections turned away with `ERR server full`.
    pub connections_rejected: u64,
    /// Connections closed by the idle timeout.
    pub closed_idle: u64,
    /// Connections closed because they did not read what other clients sent them.
    pub closed_slow: u64,
    /// Times a connection's poll interest changed (an `epoll_ctl` call each). Writing first
    /// keeps this at zero while every write completes: `WRITABLE` is asked for only when
    /// output is left over.
    pub interest_changes: u64,
    /// Times a connection's reading paused because its output backed up (backpressure).
    pub reading_paused: u64,
    /// Times accepting paused because descriptors or socket memory ran out.
    pub accept_pauses: u64,
    /// Messages decoded and handled.
    pub messages_in: u64,
    /// Messages queued to clients (replies, broadcast copies, errors).
    pub messages_out: u64,
    /// Malformed input answered with `ERR` (over-long, truncated).
    pub frame_errors: u64,
    /// UDP replies dropped because the socket and the reply queue were full.
    pub datagrams_dropped: u64,
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
    /// Times `poll` returned.
    pub wakeups: u64,
    /// Readiness events handled.
    pub events: u64,
    /// Events-per-wakeup histogram, see [`EVENT_BUCKETS`].
    pub events_per_wakeup: [u64; EVENT_BUCKETS],
    /// The longest time spent handling one wakeup: how long every other client waited.
    pub longest_wakeup: Duration,
    /// The buffer pool.
    pub buffers: PoolStats,
}

impl Stats {
    /// Adds `other` (another worker's stats) into these.
    pub fn merge(&mut self, other: &Stats) {
        self.connections_open += other.connections_open;
        self.connections_accepted += other.connections_accepted;
        self.connections_closed += other.connections_closed;
        self.connections_rejected += other.connections_rejected;
        self.closed_idle += other.closed_idle;
        self.closed_slow += other.closed_slow;
        self.reading_paused += other.reading_paused;
        self.interest_changes += other.interest_changes;
        self.accept_pauses += other.accept_pauses;
        self.messages_in += other.messages_in;
        self.messages_out += other.messages_out;
        self.frame_errors += other.frame_errors;
        self.datagrams_dropped += other.datagrams_dropped;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.wakeups += other.wakeups;
        self.events += other.events;
        for (mine, theirs) in self.events_per_wakeup.iter_mut().zip(other.events_per_wakeup) {
            *mine += theirs;
        }
        self.longest_wakeup = self.longest_wakeup.max(other.longest_wakeup);
        self.buffers.in_use += other.buffers.in_use;
        self.buffers.free += other.buffers.free;
        self.buffers.allocated += other.buffers.allocated;
        self.buffers.reused += other.buffers.reused;
    }

    /// Records one wakeup with `events` events that took `busy`.
    pub fn record_wakeup(&mut self, events: usize, busy: Duration) {
        self.wakeups += 1;
        self.events += events as u64;
        let bucket = (usize::BITS - events.leading_zeros()) as usize;
        self.events_per_wakeup[bucket.min(EVENT_BUCKETS - 1)] += 1;
        self.longest_wakeup = self.longest_wakeup.max(busy);
    }
}

/// Writes one log line per interval with rates since the last line.
#[derive(Debug)]
pub struct Reporter {
    interval: Duration,
    next: Instant,
    last: Stats,
    last_at: Instant,
    /// The longest wakeup since the last line (loop lag), reset at each line.
    worst_lag: Duration,
}

impl Reporter {
    /// A reporter that writes its first line one `interval` after `now`.
    pub fn new(interval: Duration, now: Instant) -> Reporter {
        Reporter {
            interval,
            next: now + interval,
            last: Stats::default(),
            last_at: now,
            worst_lag: Duration::ZERO,
        }
    }

    /// When the next line is due.
    pub fn next_due(&self) -> Instant {
        self.next
    }

    /// Notes one wakeup's duration for the worst-lag figure.
    pub fn note_wakeup(&mut self, busy: Duration) {
        self.worst_lag = self.worst_lag.max(busy);
    }

    /// Logs a line if one is due.
    pub fn maybe_report(&mut self, now: Instant, stats: &Stats) {
        if now < self.next {
            return;
        }
        let seconds = now.duration_since(self.last_at).as_secs_f64().max(1e-9);
        let wakeups = stats.wakeups - self.last.wakeups;
        let events = stats.events - self.last.events;
        log::info!(
            "stats; conns={} msgs/s={:.0} wakeups/s={:.0} events/wakeup={:.1} worst_lag_ms={:.2} in_MiB/s={:.2} out_MiB/s={:.2} buffers={}",
            stats.connections_open,
            (stats.messages_in - self.last.messages_in) as f64 / seconds,
            wakeups as f64 / seconds,
            if wakeups == 0 { 0.0 } else { events as f64 / wakeups as f64 },
            self.worst_lag.as_secs_f64() * 1e3,
            (stats.bytes_in - self.last.bytes_in) as f64 / seconds / 1048576.0,
            (stats.bytes_out - self.last.bytes_out) as f64 / seconds / 1048576.0,
            stats.buffers.in_use,
        );
        self.last = stats.clone();
        self.last_at = now;
        self.worst_lag = Duration::ZERO;
        while self.next <= now {
            self.next += self.interval;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wakeups land in power-of-two buckets.
    #[test]
    fn buckets_events_per_wakeup() {
        let mut stats = Stats::default();
        for events in [0, 1, 2, 3, 4, 1000] {
            stats.record_wakeup(events, Duration::from_micros(events as u64));
        }
        assert_eq!(&stats.events_per_wakeup[..5], &[1, 1, 2, 1, 0]);
        assert_eq!(stats.events_per_wakeup[10], 1);
        assert_eq!(stats.events, 1010);
        assert_eq!(stats.longest_wakeup, Duration::from_micros(1000));
    }
}
