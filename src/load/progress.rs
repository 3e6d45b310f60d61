//! The live progress line: connections up, messages per second, p99 so far. A redrawn line
//! (indicatif) when stderr is a terminal; otherwise a plain line each second, which reads
//! fine in a log. It shows a [`Snapshot`]: of this process's threads, or summed over loader
//! processes (`--processes`) or agents (`--coordinate`), which send theirs once a second.

use std::io::IsTerminal;
use std::io::Write as _;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use super::shared::Shared;

/// How often the spinner moves.
const SPINNER_TICK: Duration = Duration::from_millis(120);

/// What the progress line shows at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Connections up.
    pub established: u64,
    /// Connections to open.
    pub connections: u64,
    /// Messages sent.
    pub sent: u64,
    /// Replies (or deliveries) received.
    pub received: u64,
    /// Mismatches, losses and connection failures.
    pub failures: u64,
    /// The largest of the parts' p99 latencies so far, in ns: a live hint, not a merge (the
    /// report's percentiles are of every sample).
    pub p99_ns: u64,
}

impl Snapshot {
    /// The totals this process's threads have published.
    pub fn of(shared: &Shared) -> Snapshot {
        Snapshot {
            established: shared.established.load(Ordering::Relaxed) as u64,
            connections: shared.total_connections as u64,
            sent: shared.sent.load(Ordering::Relaxed),
            received: shared.received.load(Ordering::Relaxed),
            failures: shared.failures.load(Ordering::Relaxed),
            p99_ns: shared.p99_ns.iter().map(|p99| p99.load(Ordering::Relaxed)).max().unwrap_or(0),
        }
    }

    /// Adds another part's.
    pub fn add(&mut self, other: &Snapshot) {
        self.established += other.established;
        self.connections += other.connections;
        self.sent += other.sent;
        self.received += other.received;
        self.failures += other.failures;
        self.p99_ns = self.p99_ns.max(other.p99_ns);
    }
}

/// Where progress goes.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    plain: bool,
    last_received: u64,
    last_at: Instant,
}

impl Progress {
    /// Progress on stderr, or nowhere when `enabled` is false.
    pub fn new(enabled: bool) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let bar = (enabled && terminal).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("a valid template"),
            );
            // The spinner moves only when ticked: a steady tick (indicatif's own thread)
            // shows the loader alive between the once-a-second updates.
            bar.enable_steady_tick(SPINNER_TICK);
            bar
        });
        Progress { bar, plain: enabled && !terminal, last_received: 0, last_at: Instant::now() }
    }

    /// Shows the state now; `more` is added to the line (the agents, for a coordinator).
    pub fn tick(&mut self, snapshot: &Snapshot, more: &str) {
        if self.bar.is_none() && !self.plain {
            return;
        }
        let now = Instant::now();
        let received = snapshot.received;
        let rate = received.saturating_sub(self.last_received) as f64
            / now.duration_since(self.last_at).as_secs_f64().max(1e-9);
        self.last_received = received;
        self.last_at = now;
        let line = format!(
            "connections {}/{}  {:.0} msgs/s  p99 {:.3} ms  sent {}  received {}  failures {}{more}",
            snapshot.established,
            snapshot.connections,
            rate,
            snapshot.p99_ns as f64 / 1e6,
            snapshot.sent,
            received,
            snapshot.failures,
        );
        match &self.bar {
            Some(bar) => bar.set_message(line),
            // A closed stderr loses the line, never the run.
            None => drop(writeln!(std::io::stderr().lock(), "evloop-load: {line}")),
        }
    }

    /// Removes the live line.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
