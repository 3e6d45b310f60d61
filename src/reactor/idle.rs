//! Idle timeouts on the timing wheel: a connection that moved no bytes for `--idle-timeout`
//! is told `ERR idle timeout` (if its socket will take it) and closed.

use std::time::Instant;

use super::{CloseReason, Reactor};

impl Reactor {
    /// Checks the wheel's slots that have come due.
    pub(super) fn expire_idle(&mut self, now: Instant) {
        let Some(wheel) = &mut self.idle else { return };
        let mut due = std::mem::take(&mut self.due);
        wheel.due(now, &mut due);
        for &(key, slot) in &due {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.timer_slot() != slot || conn.is_closing() {
                continue; // stale: the key belongs to a newer connection, or it is going anyway
            }
            let Some(wheel) = &mut self.idle else { break };
            let deadline = wheel.deadline(conn.last_active());
            if deadline > self.now_tick {
                conn.set_timer_slot(wheel.schedule(key, deadline));
                continue;
            }
            self.deliver_now(key, b"ERR idle timeout");
            self.close_later(key, CloseReason::IdleTimeout);
        }
        due.clear();
        self.due = due;
    }
}
