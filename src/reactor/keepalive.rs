//! Keepalive for protocols that ping their peers (`ws`, `--ws-ping`): once per interval
//! each served connection with a session is asked whether it heard anything; a quiet one is
//! pinged, and one that stayed quiet through its ping is closed (a WebSocket close 1001,
//! "ping timeout"). A browser tab that vanished without a close would otherwise hold its
//! descriptor and its place in the room until TCP gives up, which can take hours.
//!
//! The connections sit on a timing wheel of their own (`timer_wheel.rs`), one entry each,
//! put back one interval later at every check: O(1) per connection per interval, no scan.

use std::time::Instant;

use super::connection::StopReason;
use super::{Reactor, TimerWheel};

impl Reactor {
    /// Puts `key`, just served, on the keepalive wheel if its protocol has a session.
    pub(super) fn watch_keepalive(&mut self, key: usize) {
        let Some(wheel) = &mut self.clocks.keepalive else { return };
        let Some(conn) = self.conns.get_mut(key) else { return };
        if conn.session().is_some() {
            let deadline = wheel.deadline(wheel.now_tick(Instant::now()));
            conn.set_keepalive_slot(wheel.schedule(key, deadline));
        }
    }

    /// Checks the connections whose interval is up.
    pub(super) fn check_keepalive(&mut self, now: Instant) {
        let Some(wheel) = &mut self.clocks.keepalive else { return };
        let mut due = std::mem::take(&mut self.clocks.due);
        due.clear();
        wheel.due(now, &mut due);
        let next = wheel.deadline(wheel.now_tick(now));
        for &(key, slot) in &due {
            let Some(conn) = self.conns.get_mut(key) else { continue };
            if conn.keepalive_slot() != slot || conn.is_closing() || !conn.is_ready() {
                continue; // stale: the key belongs to a newer connection, or it is going anyway
            }
            let Some(session) = conn.session() else { continue };
            let mut events = std::mem::take(&mut self.scratch.session);
            let alive = session.keepalive(&mut events);
            if let Some(wheel) = &mut self.clocks.keepalive {
                conn.set_keepalive_slot(wheel.schedule(key, next));
            }
            for event in events.events() {
                if let crate::codec::Event::Send(range) = event {
                    conn.push_raw(events.bytes(range.clone()), &mut self.scratch.pool);
                }
            }
            events.clear();
            self.scratch.session = events;
            if alive {
                self.queue_flush(key);
            } else {
                self.stop_reading(key, StopReason::PingTimeout);
            }
        }
        due.clear();
        self.clocks.due = due;
    }
}

/// A wheel for `interval`, if there is one.
pub(super) fn wheel(interval: Option<std::time::Duration>, now: Instant) -> Option<TimerWheel> {
    interval.map(|interval| TimerWheel::new(interval, now))
}
