//! The backplane, seen from the loop: its two links are sources on the same `Poll`, served
//! in the events phase like any socket; a room line is published right after its local
//! delivery (`output.rs`), and the turn's publishes leave in one write in the flush phase.
//!
//! A line from another server joins its room's lines of the turn (`room.rs`) and reaches
//! every local member with them, as output pushed by someone else: a member that cannot
//! keep up is dropped as a slow consumer, exactly as for a line from a local sender.

use std::time::Instant;

use super::Reactor;
use crate::backplane::Role;

impl Reactor {
    /// A backplane link is ready (or was owed a turn): connect, read, deliver.
    pub(super) fn on_backplane(&mut self, role: Role, now: Instant) {
        let Some(mut backplane) = self.sources.backplane.take() else { return };
        let mut buffer = std::mem::take(&mut self.scratch.read);
        let owed =
            backplane.on_ready(role, now, &mut buffer, |room, line| self.deliver_from_backplane(room, line));
        self.scratch.read = buffer;
        self.sources.backplane = Some(backplane);
        if owed {
            // Its budget ran out with bytes perhaps still waiting: no new edge will say so.
            self.owe_backplane(role);
        }
    }

    /// Delivers `line`, published by another server in `room`, to every local member.
    fn deliver_from_backplane(&mut self, shared: usize, line: &[u8]) {
        if log::log_enabled!(target: "evloop::room", log::Level::Debug) {
            log::debug!(
                target: "evloop::room",
                "room line from the backplane; pid={} at_ns={} line={:?}",
                std::process::id(),
                crate::sys::monotonic_ns(),
                String::from_utf8_lossy(&line[..line.len().min(80)])
            );
        }
        if let Some(room) = self.rooms.iter().position(|room| room.backplane == Some(shared)) {
            self.send_to_room(room, None, line);
        }
    }
}
