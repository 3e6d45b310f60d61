//! What a server did: the live counters ([`Stats`]) and the summary of a finished run
//! ([`RunSummary`]).
//!
//! The reactor owns a plain [`Stats`] (no atomics on the hot path) and hands out copies on
//! request through [`crate::ServerHandle::stats`]. These are plain data, shared by the
//! reactor, the blocking models and the worker supervisor, so none of them has to reach into
//! another to report a run.

use std::time::Duration;

/// Buckets of the events-per-wakeup histogram: bucket `i` counts wakeups with between
/// `2^(i-1)` and `2^i - 1` events (bucket 0: none, a timeout).
pub const EVENT_BUCKETS: usize = 17;

/// What the reactor has done since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct Stats {
    /// Client connections open now (served, or preparing).
    pub connections_open: usize,
    /// Of those, the connections not served yet: some layer below the handler (a PROXY
    /// header, a TLS or WebSocket handshake) is not done.
    pub connections_preparing: usize,
    /// Connections accepted (and served).
    pub connections_accepted: u64,
    /// Connections closed, for any reason.
    pub connections_closed: u64,
    /// Connections turned away with `ERR server full`.
    pub connections_rejected: u64,
    /// Connections closed by the idle timeout.
    pub closed_idle: u64,
    /// Connections closed because they were not ready (PROXY header, handshakes) within
    /// `--handshake-timeout`.
    pub closed_handshake_timeout: u64,
    /// Connections closed because they did not answer a keepalive ping (`--ws-ping`).
    pub closed_ping_timeout: u64,
    /// Connections closed because they did not read what other clients sent them.
    pub closed_slow: u64,
    /// Room members found too slow to read what others sent them: cut at once, or (where
    /// their protocol can say it: a WebSocket close 1008) told so, then closed. Counted when
    /// found; `closed_slow` counts them when they are gone.
    pub slow_consumers: u64,
    /// Connections the client ended (it closed, or reset).
    pub closed_by_client: u64,
    /// Connections closed on an I/O error.
    pub closed_error: u64,
    /// Connections closed because all clients together held more memory than
    /// `--max-client-memory` and they held the most (told so first).
    pub closed_evicted: u64,
    /// Connections the server ended otherwise: a handler's close, shutdown, the drain or
    /// linger deadline.
    pub closed_other: u64,
    /// Times a connection's poll interest changed (an `epoll_ctl` call each). Writing first
    /// keeps this at zero while every write completes: `WRITABLE` is asked for only when
    /// output is left over.
    pub interest_changes: u64,
    /// TLS handshakes completed.
    pub tls_handshakes: u64,
    /// TLS connections closed for a TLS error: not TLS at all (plaintext on a TLS port),
    /// a truncated or garbled ClientHello, a failed handshake.
    pub tls_failures: u64,
    /// Times the TLS certificate and key were reloaded (`SIGUSR1`).
    pub tls_reloads: u64,
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
    /// Events-per-wakeup histogram: bucket `i` counts wakeups with between `2^(i-1)` and
    /// `2^i - 1` events (bucket 0: none, a timeout); the last bucket takes the rest.
    pub events_per_wakeup: [u64; EVENT_BUCKETS],
    /// The longest time spent handling one wakeup: how long every other client waited.
    pub longest_wakeup: Duration,
    /// The buffer pool.
    pub buffers: PoolStats,
    /// Bytes all clients hold now (unfinished input, pending output, buffers inside their
    /// transport and protocol), counted as it changes: what `--max-client-memory` bounds.
    pub client_memory: usize,
    /// Clients evicted to keep `client_memory` within `--max-client-memory`, the biggest
    /// holders first.
    pub clients_evicted: u64,
    /// Backplane links configured (2 per server process with a backplane and a room; 0
    /// without).
    pub backplane_links: usize,
    /// Backplane links up now.
    pub backplane_links_up: usize,
    /// Room lines handed to the backplane.
    pub backplane_published: u64,
    /// Room lines that could not be published: the link was down or the engine was not
    /// keeping up. Local members got them; other servers' did not.
    pub backplane_publish_dropped: u64,
    /// Room lines received from other servers.
    pub backplane_received: u64,
    /// Room lines known to be missed from other servers (jumps in a publisher's sequence:
    /// its link was down, or the engine cut this server's subscription off).
    pub backplane_gaps: u64,
    /// Times a backplane link came back after being lost.
    pub backplane_reconnects: u64,
}

impl Stats {
    /// Adds `other` (another worker's stats) into these.
    pub fn merge(&mut self, other: &Stats) {
        self.connections_open += other.connections_open;
        self.connections_preparing += other.connections_preparing;
        self.connections_accepted += other.connections_accepted;
        self.connections_closed += other.connections_closed;
        self.connections_rejected += other.connections_rejected;
        self.closed_idle += other.closed_idle;
        self.closed_handshake_timeout += other.closed_handshake_timeout;
        self.closed_ping_timeout += other.closed_ping_timeout;
        self.closed_slow += other.closed_slow;
        self.slow_consumers += other.slow_consumers;
        self.closed_by_client += other.closed_by_client;
        self.closed_error += other.closed_error;
        self.closed_evicted += other.closed_evicted;
        self.closed_other += other.closed_other;
        self.reading_paused += other.reading_paused;
        self.interest_changes += other.interest_changes;
        self.accept_pauses += other.accept_pauses;
        self.tls_handshakes += other.tls_handshakes;
        self.tls_failures += other.tls_failures;
        self.tls_reloads += other.tls_reloads;
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
        self.client_memory += other.client_memory;
        self.clients_evicted += other.clients_evicted;
        self.backplane_links += other.backplane_links;
        self.backplane_links_up += other.backplane_links_up;
        self.backplane_published += other.backplane_published;
        self.backplane_publish_dropped += other.backplane_publish_dropped;
        self.backplane_received += other.backplane_received;
        self.backplane_gaps += other.backplane_gaps;
        self.backplane_reconnects += other.backplane_reconnects;
    }

    /// Takes in the backplane's counters.
    pub(crate) fn set_backplane(&mut self, counters: crate::backplane::Counters) {
        self.backplane_links = 2;
        self.backplane_links_up = counters.links_up;
        self.backplane_published = counters.published;
        self.backplane_publish_dropped = counters.publish_dropped;
        self.backplane_received = counters.received;
        self.backplane_gaps = counters.gaps;
        self.backplane_reconnects = counters.reconnects;
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

/// The reactor's buffer pool: counters that show it at work (and show tests that idle connections hold nothing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct PoolStats {
    /// Buffers held by connections right now.
    pub in_use: usize,
    /// Free buffers kept for reuse.
    pub free: usize,
    /// Buffers ever obtained from the allocator.
    pub allocated: u64,
    /// Times a kept buffer was handed out again instead of allocating.
    pub reused: u64,
}

/// What a finished run did, for the one-line summary printed at exit. It displays as
/// `stopped after 12.3 s: 40 connections served, ...`; `evloop-server` prints it after its
/// own name.
#[derive(Clone, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct RunSummary {
    /// How long the server ran.
    pub uptime: Duration,
    /// The counters at the end.
    pub stats: Stats,
    /// Connections still holding unwritten output when the drain deadline came.
    pub cut_at_deadline: u64,
    /// Worker processes whose runs these are (1 for a single reactor).
    pub workers: usize,
}

impl RunSummary {
    /// The summary of one process's run.
    pub(crate) fn new(uptime: Duration, stats: Stats, cut_at_deadline: u64) -> RunSummary {
        RunSummary { uptime, stats, cut_at_deadline, workers: 1 }
    }

    /// Adds another worker's run into this one.
    pub fn merge(&mut self, other: &RunSummary) {
        self.uptime = self.uptime.max(other.uptime);
        self.stats.merge(&other.stats);
        self.cut_at_deadline += other.cut_at_deadline;
        self.workers += other.workers;
    }
}

impl std::fmt::Display for RunSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let connections = self.stats.connections_accepted;
        write!(
            f,
            "stopped after {:.1} s: {connections} connection{} served, {} messages in, {} out, {} cut off at the drain deadline",
            self.uptime.as_secs_f64(),
            if connections == 1 { "" } else { "s" },
            self.stats.messages_in,
            self.stats.messages_out,
            self.cut_at_deadline
        )?;
        if self.workers > 1 {
            write!(f, " ({} workers)", self.workers)?;
        }
        let stats = &self.stats;
        if stats.backplane_links > 0 {
            write!(
                f,
                "; backplane: {} published, {} publish-dropped, {} received, {} gaps, {} reconnects",
                stats.backplane_published,
                stats.backplane_publish_dropped,
                stats.backplane_received,
                stats.backplane_gaps,
                stats.backplane_reconnects
            )?;
        }
        Ok(())
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
