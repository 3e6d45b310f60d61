//! When a loader thread sends: the run's clocks (its common start, the end of the warmup,
//! the end of sending), its share of `--messages`, and, open loop, the schedule every
//! message is due on and the pacer that wakes the thread for it.

use std::io;

use mio::Registry;

use super::PACER;
use crate::load::config::{LoadConfig, Stop};
use crate::load::plan::Plan;
use crate::load::timer::Timer;

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Schedule {
    /// Open loop: wakes the thread when the next message is due. Closed loop: none (each
    /// reply sends the next request).
    pacer: Option<Timer>,
    /// The common start of the run (monotonic ns), agreed by every thread; 0 until then.
    pub run_start_ns: u64,
    /// Replies to requests due before this are verified but not measured.
    pub warmup_end_ns: u64,
    /// When sending stops (`-d`); `None` for `--messages`.
    pub stop_ns: Option<u64>,
    /// Messages this thread may still send (`--messages`), if limited.
    budget: Option<u64>,
    /// Open loop: the index of the next scheduled message, and the spacing.
    next_send: u64,
    interval_ns: f64,
    /// Open loop: how far this thread's schedule is shifted from the run's start, by its
    /// place in the whole run (its first connection id over all of them): threads, loader
    /// processes and agents each send at their share of the rate, and shifted so, their
    /// messages interleave evenly, as one loader's at the whole rate would, instead of
    /// going out together in bursts of as many as there are parts.
    phase_ns: f64,
}

impl Schedule {
    /// The schedule of `plan`'s part of the run; an open loop registers its pacer with
    /// `registry`.
    pub fn new(config: &LoadConfig, plan: &Plan, registry: &Registry) -> io::Result<Schedule> {
        let pacer = match config.open_loop_rate() {
            Some(_) => Some(Timer::new(registry, PACER)?),
            None => None,
        };
        // No rate share (no active connection here): an endless interval, nothing is due.
        let interval_ns = match plan.rate {
            Some(rate) if rate > 0.0 => 1e9 / rate,
            _ => f64::INFINITY,
        };
        let whole = config.whole_run_connections.unwrap_or(config.connections).max(1);
        let place = f64::from(plan.first_id) / f64::from(whole);
        let phase_ns = if interval_ns.is_finite() { interval_ns * place.min(1.0) } else { 0.0 };
        Ok(Schedule {
            pacer,
            run_start_ns: 0,
            warmup_end_ns: 0,
            stop_ns: None,
            budget: plan.messages,
            next_send: 0,
            interval_ns,
            phase_ns,
        })
    }

    /// Whether messages go out on a schedule, whatever the replies do.
    pub fn open_loop(&self) -> bool {
        self.pacer.is_some()
    }

    /// The run starts at `run_start_ns` (every thread's).
    pub fn start(&mut self, config: &LoadConfig, run_start_ns: u64) {
        self.run_start_ns = run_start_ns;
        self.warmup_end_ns = run_start_ns + config.warmup.as_nanos() as u64;
        self.stop_ns = match config.stop {
            Stop::After(duration) => Some(self.warmup_end_ns + duration.as_nanos() as u64),
            Stop::Messages(_) => None,
        };
    }

    /// Whether a request due at `intended_ns` is measured (it came after the warmup).
    pub fn measured(&self, intended_ns: u64) -> bool {
        intended_ns >= self.warmup_end_ns
    }

    /// Whether the time to send is over.
    pub fn out_of_time(&self, now: u64) -> bool {
        self.stop_ns.is_some_and(|stop| now >= stop)
    }

    /// Whether this thread's share of `--messages` is sent.
    pub fn spent(&self) -> bool {
        self.budget == Some(0)
    }

    /// Takes one message from the budget; false when there is none left.
    pub fn spend(&mut self) -> bool {
        match &mut self.budget {
            Some(0) => false,
            Some(budget) => {
                *budget -= 1;
                true
            }
            None => true,
        }
    }

    /// Closed loop: whether a reply that came at `now` sends the next request.
    pub fn follows_reply(&self, now: u64) -> bool {
        self.pacer.is_none() && self.stop_ns.is_none_or(|stop| now < stop)
    }

    /// Open loop: when the next scheduled message is due, unless the schedule has ended.
    pub fn next_due(&self) -> Option<u64> {
        if self.budget == Some(0) || !self.interval_ns.is_finite() {
            return None;
        }
        let due = self.run_start_ns + (self.phase_ns + self.next_send as f64 * self.interval_ns) as u64;
        self.stop_ns.is_none_or(|stop| due < stop).then_some(due)
    }

    /// Open loop: the next scheduled message is being sent; returns its index in the
    /// schedule (for round robin over the connections).
    pub fn take_due(&mut self) -> u64 {
        self.next_send += 1;
        self.next_send - 1
    }

    /// Open loop: wakes the thread when the next message is due.
    pub fn arm_pacer(&self) {
        if let (Some(pacer), Some(due)) = (&self.pacer, self.next_due()) {
            if let Err(error) = pacer.arm_at(due) {
                log::error!("cannot arm the pacer; error={error}");
            }
        }
    }

    /// The pacer went off: consume its expiry.
    pub fn on_pacer(&self) {
        if let Some(pacer) = &self.pacer {
            pacer.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The threads of an open loop, or the processes and agents of a larger run, send at
    /// their share of the rate, shifted by their place: together, evenly spaced, as one
    /// loader at the whole rate would.
    #[test]
    fn parts_interleave_into_one_even_schedule() {
        let poll = mio::Poll::new().unwrap();
        let whole = LoadConfig { connections: 8, threads: 2, rate: Some(4000.0), ..LoadConfig::default() };
        let mut due: Vec<u64> = Vec::new();
        // Two processes of two threads each.
        for process in 0..2 {
            let part = whole.part(process, 2);
            for plan in part.plans() {
                let mut schedule = Schedule::new(&part, &plan, poll.registry()).unwrap();
                schedule.start(&part, 1_000_000_000);
                for _ in 0..3 {
                    due.push(schedule.next_due().unwrap());
                    schedule.take_due();
                }
            }
        }
        due.sort_unstable();
        let gaps: Vec<u64> = due.windows(2).map(|pair| pair[1] - pair[0]).collect();
        assert!(gaps.iter().all(|&gap| gap.abs_diff(250_000) <= 1), "{gaps:?}");
        assert_eq!(due[0], 1_000_000_000);
    }
}
