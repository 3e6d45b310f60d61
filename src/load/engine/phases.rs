//! The phases of a run, in order: connecting, preparing, running, draining, (holding), done.

use std::sync::atomic::Ordering;

use super::replies::Prep;
use super::{Engine, INTERRUPTED_DRAIN_NS, Phase};
use crate::load::workloads::Exchange;

impl<W: Exchange> Engine<'_, W> {
    /// Moves the run on: what its phase does at `now`, and the next phase once it is done.
    pub(super) fn step(&mut self, now: u64) {
        // Told to stop: a run not started yet, or only held, ends now; one sending stops
        // sending, and its drain is short (below).
        let stopping = self.shared.stopping();
        match self.phase {
            Phase::Connecting
            | Phase::Preparing
            | Phase::Ready
            | Phase::Starting { .. }
            | Phase::Holding { .. }
                if stopping =>
            {
                self.phase = Phase::Done;
            }
            Phase::Connecting => {
                self.start_connects(now);
                self.expire_connects(now);
                if self.connects_done() && self.shared.all_connects_finished() {
                    self.phase = Phase::Preparing;
                    self.prepare(now);
                }
            }
            Phase::Preparing => self.prepare(now),
            Phase::Ready => {
                if self.shared.may_run() {
                    self.set_start(now);
                }
            }
            Phase::Starting { at_ns } => {
                if now >= at_ns {
                    self.start_running(now);
                }
            }
            Phase::Running => {
                self.wire().expire_replies(now);
                if self.schedule.open_loop() {
                    self.wire().send_due(now);
                } else {
                    let mut wire = self.wire();
                    let workload = wire.workload;
                    workload.answers(&mut wire, now);
                }
                // The closed loop sends when a reply comes (or its wait times out): with no
                // request outstanding, nothing will send again.
                let nothing_awaited = !self.schedule.open_loop() && self.conns.in_flight() == 0;
                if self.schedule.out_of_time(now)
                    || self.schedule.spent()
                    || nothing_awaited
                    || self.conns.up_keys().is_empty()
                    || stopping
                {
                    self.publish(now, true);
                    self.shared.note_run_end(self.schedule.stop_ns.map_or(now, |stop| now.min(stop)));
                    self.phase = Phase::Draining { deadline_ns: u64::MAX };
                }
            }
            Phase::Draining { deadline_ns } => {
                self.wire().expire_replies(now);
                self.publish(now, true);
                // The connections stay until every thread has stopped sending: idle ones
                // (`--active`) and room members are part of the run to its end, and another
                // thread's broadcast lines are not all expected yet. The last replies get
                // `--reply-timeout` from then; told to stop, they get a moment only.
                if !self.shared.all_stopped_sending() && !stopping {
                    return;
                }
                let reply_timeout = self.config.reply_timeout.as_nanos() as u64;
                let wait = if stopping { reply_timeout.min(INTERRUPTED_DRAIN_NS) } else { reply_timeout };
                let deadline_ns = deadline_ns.min(now + wait);
                self.phase = Phase::Draining { deadline_ns };
                if self.workload.drained(self.conns.in_flight(), self.shared) || now >= deadline_ns {
                    self.hold_or_finish(now);
                }
            }
            Phase::Holding { until_ns } => {
                if now >= until_ns {
                    self.phase = Phase::Done;
                }
            }
            Phase::Done => {}
        }
    }

    /// Every connection is up: the workload prepares the run (at once, for most); then the
    /// thread is ready, and starts once the run may (at once, unless it is a part of a larger
    /// run waiting for its go).
    fn prepare(&mut self, now: u64) {
        let mut prep =
            Prep { config: self.config, shared: self.shared, conns: &mut self.conns, tally: &mut self.tally };
        if self.workload.prepare(&mut prep, now) {
            self.shared.prepared.fetch_add(1, Ordering::AcqRel);
            self.phase = Phase::Ready;
            if self.shared.may_run() {
                self.set_start(now);
            }
        }
    }

    /// The go: the start every thread agrees on (the parent's, for a part of a larger run:
    /// every process starts at it), now or a moment ahead.
    fn set_start(&mut self, now: u64) {
        let run_start_ns = self.shared.agree_on_run_start(now);
        self.schedule.start(self.config, run_start_ns);
        self.workload.begin(self.shared);
        if now >= run_start_ns {
            self.start_running(now);
        } else {
            self.phase = Phase::Starting { at_ns: run_start_ns };
        }
    }

    /// The run is over: keep the connections open for `--hold` (so the server's memory per
    /// idle connection can be measured), or finish.
    fn hold_or_finish(&mut self, now: u64) {
        if self.config.hold.is_zero() || self.shared.stopping() {
            self.phase = Phase::Done;
            return;
        }
        self.publish(now, true);
        self.shared.holding.fetch_add(1, Ordering::AcqRel);
        self.phase = Phase::Holding { until_ns: now + self.config.hold.as_nanos() as u64 };
    }

    /// Sending starts.
    fn start_running(&mut self, now: u64) {
        self.phase = Phase::Running;
        if self.schedule.open_loop() {
            // Open loop: send what is due and arm the pacer for the rest.
            self.wire().send_due(now);
        } else {
            self.wire().fill_pipelines(now);
        }
    }
}
