//! The periodic `--stats-interval` line: rates since the last line, and the worst loop lag.

use std::time::{Duration, Instant};

use crate::stats::Stats;

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
        if stats.backplane_links > 0 {
            log::info!(
                "backplane; links_up={}/{} published={} publish_dropped={} received={} gaps={} reconnects={}",
                stats.backplane_links_up,
                stats.backplane_links,
                stats.backplane_published,
                stats.backplane_publish_dropped,
                stats.backplane_received,
                stats.backplane_gaps,
                stats.backplane_reconnects
            );
        }
        self.last = stats.clone();
        self.last_at = now;
        self.worst_lag = Duration::ZERO;
        while self.next <= now {
            self.next += self.interval;
        }
    }
}
