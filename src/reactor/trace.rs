//! The interleaving made visible. With `RUST_LOG=evloop::reactor=trace`, each wakeup ends
//! with one line saying which clients it served, in what order, and what each got done:
//!
//! ```text
//! wakeup 1042: 3 events, 5 msgs, 320 B in, 320 B out, 38 us, 1 accepted | conn 4 127.0.0.1:50432: 1 msg | ...
//! ```
//!
//! That line is apparent concurrency itself: one thread, several clients, taking turns at
//! message granularity. Nothing is recorded unless trace logging is on for this module.

use std::fmt::Write as _;
use std::time::Duration;

use log::{Level, log_enabled, trace};

use crate::stats::Stats;
use crate::sys::address::PeerAddr;

/// Counters at a point in the wakeup.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Mark {
    messages_in: u64,
    bytes_in: u64,
    bytes_out: u64,
    accepted: u64,
    closed: u64,
}

impl Mark {
    /// The counters now.
    pub fn of(stats: &Stats) -> Mark {
        Mark {
            messages_in: stats.messages_in,
            bytes_in: stats.bytes_in,
            bytes_out: stats.bytes_out,
            accepted: stats.connections_accepted,
            closed: stats.connections_closed,
        }
    }
}

impl Mark {
    /// Messages in, bytes in and bytes out since this mark.
    pub fn since(&self, stats: &Stats) -> (u64, u64, u64) {
        (
            stats.messages_in - self.messages_in,
            stats.bytes_in - self.bytes_in,
            stats.bytes_out - self.bytes_out,
        )
    }
}

/// One connection's turn within a wakeup.
#[derive(Debug)]
struct Turn {
    key: usize,
    peer: Option<PeerAddr>,
    messages: u64,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(super) struct WakeupTrace {
    enabled: bool,
    start: Mark,
    turns: Vec<Turn>,
}

impl WakeupTrace {
    /// Starts a wakeup; decides whether this one is recorded.
    pub fn begin(&mut self, stats: &Stats) {
        self.enabled = log_enabled!(Level::Trace);
        if self.enabled {
            self.start = Mark::of(stats);
            self.turns.clear();
        }
    }

    /// Whether this wakeup is recorded (trace logging is on).
    #[inline]
    pub fn is_on(&self) -> bool {
        self.enabled
    }

    /// After serving connection `key` (`peer`), since `mark`.
    pub fn served(&mut self, key: usize, peer: Option<PeerAddr>, mark: Mark, stats: &Stats) {
        self.turns.push(Turn { key, peer, messages: stats.messages_in - mark.messages_in });
    }

    /// Ends the wakeup: logs its line.
    pub fn finish(&mut self, wakeup: u64, events: usize, busy: Duration, stats: &Stats) {
        if !self.enabled {
            return;
        }
        let end = Mark::of(stats);
        let mut line = format!(
            "wakeup {wakeup}: {events} events, {} msgs, {} B in, {} B out, {} us",
            end.messages_in - self.start.messages_in,
            end.bytes_in - self.start.bytes_in,
            end.bytes_out - self.start.bytes_out,
            busy.as_micros()
        );
        for (count, what) in
            [(end.accepted - self.start.accepted, "accepted"), (end.closed - self.start.closed, "closed")]
        {
            if count > 0 {
                let _ = write!(line, ", {count} {what}");
            }
        }
        for turn in &self.turns {
            let _ = write!(line, " | conn {}", turn.key);
            if let Some(peer) = &turn.peer {
                let _ = write!(line, " {peer}");
            }
            let _ = write!(line, ": {} msg{}", turn.messages, if turn.messages == 1 { "" } else { "s" });
        }
        trace!("{line}");
    }
}
