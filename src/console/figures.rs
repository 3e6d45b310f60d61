//! The loop's figures over one second, for the snapshot: turns, events per turn and turn
//! time as percentiles, time blocked in the poll, and the turn-time histogram (the delay
//! every other client saw; Node calls it event-loop delay).

use std::fmt::Write as _;
use std::time::Duration;

/// Turns whose figures are kept per second for the percentiles (more are counted in the
/// maximum and the histogram only), so a busy second costs bounded memory.
const MAX_SAMPLES: usize = 65_536;
/// Buckets of the turn-time histogram: bucket `i` holds turns of less than `2^i` µs.
const DELAY_BUCKETS: usize = 24;

/// The loop's figures over one second.
#[derive(Debug, Default)]
pub(crate) struct Window {
    turns: u64,
    events: Vec<u32>,
    busy_us: Vec<u32>,
    max_events: u32,
    max_busy_us: u32,
    blocked: Duration,
    delay: [u64; DELAY_BUCKETS],
}

impl Window {
    /// One turn: `events` ready, after `waited` blocked in the poll, `busy` long.
    pub fn record(&mut self, events: usize, waited: Duration, busy: Duration) {
        let (events, busy_us) =
            (events.min(u32::MAX as usize) as u32, busy.as_micros().min(u32::MAX as u128) as u32);
        self.turns += 1;
        if self.events.len() < MAX_SAMPLES {
            self.events.push(events);
            self.busy_us.push(busy_us);
        }
        self.max_events = self.max_events.max(events);
        self.max_busy_us = self.max_busy_us.max(busy_us);
        self.blocked += waited;
        let bucket = (u32::BITS - busy_us.leading_zeros()) as usize;
        self.delay[bucket.min(DELAY_BUCKETS - 1)] += 1;
    }

    /// Writes the figures as the first fields of the snapshot's `loop` object (its opening
    /// brace included, its closing one not: the model adds its counters).
    pub fn write(&mut self, json: &mut String) {
        let (events_p50, events_p99) = percentiles(&mut self.events);
        let (busy_p50, busy_p99) = percentiles(&mut self.busy_us);
        let _ = write!(
            json,
            r#"{{"turns_per_second":{},"events_per_turn":{{"p50":{events_p50},"p99":{events_p99},"max":{}}},"turn_us":{{"p50":{busy_p50},"p99":{busy_p99},"max":{}}},"blocked_ms_per_second":{},"delay_histogram_us":["#,
            self.turns,
            self.max_events,
            self.max_busy_us,
            self.blocked.as_millis()
        );
        for (index, count) in self.delay.iter().enumerate() {
            let _ = write!(json, "{}{count}", if index == 0 { "" } else { "," });
        }
        json.push(']');
    }
}

/// The p50 and p99 of `values` (sorted in place).
fn percentiles(values: &mut [u32]) -> (u32, u32) {
    if values.is_empty() {
        return (0, 0);
    }
    values.sort_unstable();
    let at = |fraction: f64| values[((values.len() - 1) as f64 * fraction).round() as usize];
    (at(0.50), at(0.99))
}
