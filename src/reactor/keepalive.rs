//! Keepalive for protocols that ping their peers (`ws`, `--ws-ping`): once per interval
//! each served connection with a session is asked whether it heard anything; a quiet one is
//! pinged, and one that stayed quiet through its ping is closed (a WebSocket close 1001,
//! "ping timeout"). A browser tab that vanished without a close would otherwise hold its
//! descriptor and its place in the room until TCP gives up, which can take hours.
//!
//! The connections sit on a timing wheel of their own (`timer_wheel.rs`), one entry each,
//! put back one interval later at every check: O(1) per connection per interval, no scan.

use std::time::Instant;

use slab::Slab;

use super::TimerWheel;
use super::connection::{Connection, StopReason};
use super::parts::{Queues, Scratch};
use crate::codec::Event;

/// Puts `key`, just served, on the keepalive `wheel` if its protocol has a session.
pub(super) fn watch(wheel: &mut TimerWheel, key: usize, conn: &mut Connection) {
    if conn.session().is_some() {
        let deadline = wheel.deadline(wheel.now_tick(Instant::now()));
        conn.set_keepalive_slot(wheel.schedule(key, deadline));
    }
}

/// Checks the connections whose interval is up.
pub(super) fn check(
    wheel: &mut TimerWheel,
    now: Instant,
    conns: &mut Slab<Connection>,
    scratch: &mut Scratch,
    queues: &mut Queues,
) {
    let mut due = Vec::new();
    wheel.due(now, &mut due);
    let next = wheel.deadline(wheel.now_tick(now));
    for (key, slot) in due {
        let Some(conn) = conns.get_mut(key) else { continue };
        if conn.keepalive_slot() != slot || conn.is_closing() || !conn.is_ready() {
            continue; // stale: the key belongs to a newer connection, or it is going anyway
        }
        let Some(session) = conn.session() else { continue };
        let events = &mut scratch.session;
        let alive = session.keepalive(events);
        conn.set_keepalive_slot(wheel.schedule(key, next));
        for event in events.events() {
            if let Event::Send(range) = event {
                conn.push_raw(events.bytes(range.clone()), &mut scratch.pool);
            }
        }
        events.clear();
        if !alive {
            conn.stop(StopReason::PingTimeout);
        }
        queues.flush(key, conn);
    }
}
