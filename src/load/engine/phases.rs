//! The phases of a run, in order: connecting, (syncing), running, draining, (holding), done.

use std::sync::atomic::Ordering;

use super::{Engine, Phase, SYNC_EVERY_NS};
use crate::load::config::Stop;
use crate::load::workload::{SYNC, Workload};

impl Engine<'_> {
    pub(super) fn step(&mut self, now: u64) {
        match self.phase {
            Phase::Connecting => {
                self.start_connects(now);
                self.expire_connects(now);
                let mine_done = self.next_connect == self.plan.count && self.pending_connects == 0;
                if mine_done && self.shared.all_connects_finished() && self.shared.may_run() {
                    if self.config.workload == Workload::Broadcast {
                        self.sender_addrs = self.shared.sender_addrs.lock().expect("not poisoned").clone();
                        self.sync_deadline_ns = now + self.config.connect_timeout.as_nanos() as u64;
                        self.phase = Phase::Syncing;
                    } else {
                        self.start_running(now);
                    }
                }
            }
            Phase::Syncing => self.sync(now),
            Phase::Running => {
                self.expire_replies(now);
                if self.pacer.is_some() {
                    self.send_due(now);
                } else {
                    self.send_after_answered(now);
                }
                let out_of_time = self.stop_ns.is_some_and(|stop| now >= stop);
                let out_of_budget = self.budget == Some(0);
                // The closed loop sends when a reply comes (or its wait times out): with no
                // request outstanding, nothing will send again.
                let nothing_awaited = self.pacer.is_none() && self.in_flight == 0;
                if out_of_time || out_of_budget || nothing_awaited || self.up_keys.is_empty() {
                    self.publish(now, true);
                    self.shared.note_run_end(self.stop_ns.map_or(now, |stop| now.min(stop)));
                    self.phase = Phase::Draining { deadline_ns: u64::MAX };
                }
            }
            Phase::Draining { deadline_ns } => {
                self.expire_replies(now);
                let broadcast = self.config.workload == Workload::Broadcast;
                if broadcast {
                    self.publish(now, true);
                }
                // The connections stay until every thread has stopped sending: idle ones
                // (`--active`) and room members are part of the run to its end, and another
                // thread's broadcast lines are not all expected yet. The last replies get
                // `--reply-timeout` from then.
                if !self.shared.all_stopped_sending() {
                    return;
                }
                if deadline_ns == u64::MAX {
                    let deadline_ns = now + self.config.reply_timeout.as_nanos() as u64;
                    self.phase = Phase::Draining { deadline_ns };
                }
                let settled = if broadcast {
                    self.shared.deliveries_seen.load(Ordering::Acquire)
                        >= self.shared.deliveries_expected.load(Ordering::Acquire)
                } else {
                    self.in_flight == 0
                };
                if settled || now >= deadline_ns {
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

    /// The run is over: keep the connections open for `--hold` (so the server's memory per
    /// idle connection can be measured), or finish.
    pub(super) fn hold_or_finish(&mut self, now: u64) {
        if self.config.hold.is_zero() {
            self.phase = Phase::Done;
            return;
        }
        self.publish(now, true);
        self.shared.holding.fetch_add(1, Ordering::AcqRel);
        self.phase = Phase::Holding { until_ns: now + self.config.hold.as_nanos() as u64 };
    }

    pub(super) fn start_running(&mut self, now: u64) {
        self.run_start_ns = self.shared.agree_on_run_start(now);
        self.warmup_end_ns = self.run_start_ns + self.config.warmup.as_nanos() as u64;
        self.stop_ns = match self.config.stop {
            Stop::After(duration) => Some(self.warmup_end_ns + duration.as_nanos() as u64),
            Stop::Messages(_) => None,
        };
        self.phase = Phase::Running;
        if self.pacer.is_some() {
            // Open loop: send what is due and arm the pacer for the rest.
            self.send_due(now);
        } else {
            // Closed loop: fill every active connection's pipeline; each reply then sends the
            // next.
            for key in self.sending_keys().to_vec() {
                for _ in 0..self.config.pipeline {
                    self.send_next(key, now, now);
                }
            }
        }
    }

    /// Broadcast: a connection's messages reach only members already in the room. The first
    /// connection repeats a sync message until every other member has received it; since
    /// the server handles messages in order, every member is then surely in the room.
    pub(super) fn sync(&mut self, now: u64) {
        let established = self.shared.established.load(Ordering::Acquire);
        let synced = self.shared.synced.load(Ordering::Acquire);
        if established <= 1 || synced + 1 >= established {
            self.start_running(now);
            return;
        }
        if now >= self.sync_deadline_ns {
            // A server that accepted connections but does not serve them all: run anyway,
            // and what never reaches those members is counted as lost.
            if self.plan.index == 0 {
                log::warn!(
                    "not every member is in the room after --connect-timeout; running anyway; in_room={} connected={established}",
                    synced + 1
                );
            }
            self.start_running(now);
            return;
        }
        let Some(sync_id) = self.sender_addrs.iter().position(Option::is_some) else {
            return;
        };
        let sync_id = sync_id as u32;
        if now < self.next_sync_ns
            || !(self.plan.first_id..self.plan.first_id + self.plan.count).contains(&sync_id)
        {
            return;
        }
        self.next_sync_ns = now + SYNC_EVERY_NS;
        if let Some(key) = self.up_keys.iter().copied().find(|&key| self.conns[key].id == sync_id) {
            let conn = &mut self.conns[key];
            let request = (conn.id, u64::MAX);
            super::send::frame_request(self.config.codec, &mut conn.output, request, |out| {
                out.extend_from_slice(SYNC)
            });
            self.tally.sync_lines += 1;
            self.queue_flush(key);
        }
    }
}
