//! Idle timeouts on the timing wheel: a connection that moved no bytes for `--idle-timeout`
//! is told so in its protocol (`ERR idle timeout` on a line; if its socket will take it) and
//! closed.

use std::time::Instant;

use super::{CloseReason, Reactor};
use crate::codec::Notice;

impl Reactor {
    /// Checks the wheel's slots that have come due.
    pub(super) fn expire_idle(&mut self, now: Instant) {
        let Some(wheel) = &mut self.clocks.idle else { return };
        let mut due = std::mem::take(&mut self.clocks.due);
        wheel.due(now, &mut due);
        for &(key, slot) in &due {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.timer_slot() != slot || conn.is_closing() {
                continue; // stale: the key belongs to a newer connection, or it is going anyway
            }
            let Some(wheel) = &mut self.clocks.idle else { break };
            let deadline = wheel.deadline(conn.last_active());
            if deadline > self.clocks.now_tick {
                conn.set_timer_slot(wheel.schedule(key, deadline));
                continue;
            }
            // Told in its own protocol (`ERR idle timeout`, a close frame), written at once.
            self.notify(key, Notice::IdleTimeout);
            self.flush(key);
            self.close_later(key, CloseReason::IdleTimeout);
        }
        due.clear();
        self.clocks.due = due;
    }
}
