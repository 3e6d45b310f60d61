//! A hashed timing wheel for idle timeouts: O(1) per connection event, no scan of every
//! connection.
//!
//! Time is cut into ticks; the wheel is a ring of slots, one per tick. A connection sits in
//! exactly one slot, the one of its deadline. Activity does not move it: the connection only
//! records the tick of its last activity (a store). When the wheel reaches a slot, each
//! connection in it is checked: still idle since long enough, it expires; active since, it is
//! put back into the slot of its new deadline. So a busy connection costs one store per event
//! and one re-slot per timeout period, and the wheel's memory is one entry per connection.
//!
//! Entries are never removed early: a closed connection's entry is dropped when its slot
//! comes up and the caller finds it stale (see [`TimerWheel::due`]).

use std::time::{Duration, Instant};

/// How many ticks one timeout spans. More is finer (a connection expires at most two ticks
/// late) and costs more wakeups while connections are open.
const TICKS_PER_TIMEOUT: u32 = 32;

/// The finest tick, so very short timeouts (tests) do not spin the loop.
const MIN_TICK: Duration = Duration::from_millis(5);

/// An entry: a connection key and the slot it was put in (to tell stale entries apart).
pub type Entry = (usize, u32);

/// See the module documentation.
#[derive(Debug)]
pub struct TimerWheel {
    slots: Vec<Vec<usize>>,
    start: Instant,
    tick: Duration,
    timeout_ticks: u64,
    /// The next tick whose slot has not been processed yet.
    next_tick: u64,
    entries: usize,
}

impl TimerWheel {
    /// A wheel for one `timeout`, starting now.
    pub fn new(timeout: Duration, now: Instant) -> TimerWheel {
        let tick = (timeout / TICKS_PER_TIMEOUT).max(MIN_TICK);
        // One tick more than the timeout, rounded up, so no connection expires early.
        let timeout_ticks = timeout.as_nanos().div_ceil(tick.as_nanos()) as u64 + 1;
        // Every deadline is less than a full turn ahead, so one slot never mixes turns.
        let slot_count = timeout_ticks as usize + 2;
        TimerWheel {
            slots: vec![Vec::new(); slot_count],
            start: now,
            tick,
            timeout_ticks,
            next_tick: Self::tick_at(now, now, tick) + 1,
            entries: 0,
        }
    }

    fn tick_at(start: Instant, now: Instant, tick: Duration) -> u64 {
        (now.saturating_duration_since(start).as_nanos() / tick.as_nanos()) as u64
    }

    /// The tick `now` falls in: what connections record as their last activity.
    pub fn now_tick(&self, now: Instant) -> u64 {
        Self::tick_at(self.start, now, self.tick)
    }

    /// The tick at which a connection last active at `last_active` is due.
    pub fn deadline(&self, last_active: u64) -> u64 {
        last_active + self.timeout_ticks
    }

    /// Files `key` under `deadline` and returns its slot (to store beside the connection).
    pub fn schedule(&mut self, key: usize, deadline: u64) -> u32 {
        let deadline = deadline.max(self.next_tick);
        let slot = (deadline % self.slots.len() as u64) as u32;
        self.slots[slot as usize].push(key);
        self.entries += 1;
        slot
    }

    /// Moves every entry of the slots that `now` has reached into `due`. The caller checks
    /// each: gone or stale (the connection's slot is not this one) -> drop it; idle past its
    /// deadline -> expire it; otherwise -> [`schedule`](Self::schedule) it again.
    pub fn due(&mut self, now: Instant, due: &mut Vec<Entry>) {
        let now_tick = self.now_tick(now);
        let turns = (now_tick + 1).saturating_sub(self.next_tick).min(self.slots.len() as u64);
        for tick in self.next_tick..self.next_tick + turns {
            let slot = (tick % self.slots.len() as u64) as u32;
            let keys = &mut self.slots[slot as usize];
            self.entries -= keys.len();
            due.extend(keys.drain(..).map(|key| (key, slot)));
        }
        self.next_tick = self.next_tick.max(now_tick + 1);
    }

    /// When the next slot comes due, if any entry is waiting: the poller's timeout.
    pub fn next_due(&self) -> Option<Instant> {
        (self.entries > 0).then(|| {
            let since_start = self.tick.as_nanos() * u128::from(self.next_tick);
            self.start + Duration::from_nanos(u64::try_from(since_start).unwrap_or(u64::MAX))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry comes due after the timeout, not before, and not much later.
    #[test]
    fn entries_come_due_after_the_timeout() {
        let start = Instant::now();
        let timeout = Duration::from_millis(320);
        let mut wheel = TimerWheel::new(timeout, start);
        let deadline = wheel.deadline(wheel.now_tick(start));
        let slot = wheel.schedule(3, deadline);
        let mut due = Vec::new();
        wheel.due(start + timeout - Duration::from_millis(1), &mut due);
        assert!(due.is_empty(), "nothing is due before the timeout");
        wheel.due(start + timeout + wheel.tick * 2, &mut due);
        assert_eq!(due, vec![(3, slot)]);
        assert_eq!(wheel.next_due(), None, "an empty wheel asks for no wakeup");
    }

    /// A long pause processes every slot once, without losing entries.
    #[test]
    fn long_pause_loses_nothing() {
        let start = Instant::now();
        let mut wheel = TimerWheel::new(Duration::from_millis(100), start);
        for key in 0..50 {
            let deadline = wheel.deadline(wheel.now_tick(start)) + key as u64 % 7;
            wheel.schedule(key, deadline);
        }
        let mut due = Vec::new();
        wheel.due(start + Duration::from_secs(60), &mut due);
        assert_eq!(due.len(), 50);
    }
}
