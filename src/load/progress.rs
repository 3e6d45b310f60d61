//! The live progress line: connections up, messages per second, p99 so far. A redrawn line
//! (indicatif) when stderr is a terminal; otherwise a plain line each second, which reads
//! fine in a log.

use std::io::IsTerminal;
use std::io::Write as _;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::shared::Shared;

/// How often the spinner moves.
const SPINNER_TICK: Duration = Duration::from_millis(120);

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

    /// Shows the state now.
    pub fn tick(&mut self, shared: &Shared) {
        if self.bar.is_none() && !self.plain {
            return;
        }
        let now = Instant::now();
        let received = shared.received.load(Ordering::Relaxed);
        let rate =
            (received - self.last_received) as f64 / now.duration_since(self.last_at).as_secs_f64().max(1e-9);
        self.last_received = received;
        self.last_at = now;
        let p99_ns = shared.p99_ns.iter().map(|p99| p99.load(Ordering::Relaxed)).max().unwrap_or(0);
        let line = format!(
            "connections {}/{}  {:.0} msgs/s  p99 {:.3} ms  sent {}  received {}  failures {}",
            shared.established.load(Ordering::Relaxed),
            shared.total_connections,
            rate,
            p99_ns as f64 / 1e6,
            shared.sent.load(Ordering::Relaxed),
            received,
            shared.failures.load(Ordering::Relaxed),
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
