//! A room's lines of one turn, framed once into one buffer and written from it to every
//! member.
//!
//! A chat line goes to every member but its sender. Copying it into each member's output
//! would cost a copy per member, and writing it at once would cost a `write` per member per
//! line. Instead the line is framed once, here, and at the end of the turn (`release_room`)
//! each member gets every line of the turn but its own in one `writev`, straight from this
//! buffer; only what a member's socket does not take is copied, into that member's output.
//! The kernel's copy into each socket is all that is left per member.
//!
//! Lines wait here only until something else would reach a member (its own reply, a line
//! addressed to it, a new member joining): the room's lines are released first, so every
//! member sees everything in the order it happened.

use std::io::IoSlice;

use super::{CloseReason, Reactor};
use crate::codec::Codec;

/// A room's lines are released early once they hold this much, so a busy turn cannot grow
/// the buffer without bound.
const RELEASE_AT_BYTES: usize = 256 * 1024;

impl Reactor {
    /// Sends `payload` from `sender` (`None`: another server) to every member of `service`
    /// but the sender: framed once into the room's lines, written at the end of the turn.
    pub(super) fn send_to_room(&mut self, service: usize, sender: Option<usize>, payload: &[u8]) {
        let codec = self.services[service].codec;
        let lines = &mut self.services[service].lines;
        lines.push(sender, codec, payload);
        if lines.len() >= RELEASE_AT_BYTES {
            self.release_room(service);
        }
    }

    /// Releases the lines waiting for `key`'s room, if any: something else is about to
    /// reach `key`, and must come after them.
    pub(super) fn release_room_of(&mut self, key: usize) {
        if let Some(conn) = self.conns.get(key) {
            let service = conn.service();
            if !self.services[service].lines.is_empty() {
                self.release_room(service);
            }
        }
    }

    /// Releases every room's lines: the flush phase.
    pub(super) fn release_rooms(&mut self) {
        for service in 0..self.services.len() {
            self.release_room(service);
        }
    }

    /// Whether some room has lines waiting (the next poll must not sleep).
    pub(super) fn rooms_waiting(&self) -> bool {
        self.services.iter().any(|service| !service.lines.is_empty())
    }

    /// Writes the lines waiting in `service`'s room to each member, everything but its own
    /// in one `writev` straight from the room's buffer. A member with output already waiting
    /// gets them copied after it, to go out in the flush.
    pub(super) fn release_room(&mut self, service: usize) {
        if self.services[service].lines.is_empty() {
            return;
        }
        self.publish_metrics();
        // Borrowed out for the loop: writing changes no membership (closing is deferred).
        let lines = std::mem::take(&mut self.services[service].lines);
        let members = std::mem::take(&mut self.services[service].members);
        let mut slices = Vec::new();
        for &member in &members {
            let Some(conn) = self.conns.get_mut(member) else { continue };
            if conn.is_closing() {
                continue;
            }
            let count = lines.slices_for(member, &mut slices);
            if count == 0 {
                continue;
            }
            self.stats.messages_out += count;
            let waiting = conn.has_output_waiting();
            match conn.write_shared(&mut slices, &mut self.pool, self.now_tick) {
                Ok(written) => self.stats.bytes_out += written as u64,
                Err(error) => {
                    self.close_later(member, CloseReason::Error(error));
                    continue;
                }
            }
            if waiting {
                self.queue_flush(member);
            } else {
                self.settle(member);
            }
        }
        drop(slices);
        let service = &mut self.services[service];
        service.members = members;
        service.lines = lines;
        service.lines.clear();
    }
}

/// The lines of one turn. Empty between turns.
#[derive(Debug, Default)]
pub(crate) struct RoomLines {
    /// The lines, framed with the room's codec, in the order sent.
    bytes: Vec<u8>,
    /// Who sent them: runs of consecutive lines of one sender, so that each member can be
    /// given everything but its own.
    runs: Vec<Run>,
}

/// Consecutive lines of one sender.
#[derive(Clone, Copy, Debug)]
struct Run {
    /// The sending connection; `None` for lines from another server (the backplane), which
    /// every member gets.
    sender: Option<usize>,
    /// Where its lines end in `bytes` (they start where the previous run ends).
    end: usize,
    /// How many lines.
    lines: u64,
}

impl RoomLines {
    /// Frames `payload` with `codec` after the lines so far, as sent by `sender`.
    pub(crate) fn push(&mut self, sender: Option<usize>, codec: Codec, payload: &[u8]) {
        codec.encode(payload, &mut self.bytes);
        let end = self.bytes.len();
        match self.runs.last_mut() {
            Some(run) if run.sender == sender => {
                run.end = end;
                run.lines += 1;
            }
            _ => self.runs.push(Run { sender, end, lines: 1 }),
        }
    }

    /// Whether no line waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// How many bytes wait.
    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// The parts of the buffer `member` gets, in order (every run but its own), into
    /// `slices`; adjacent parts are joined, so a member that sent nothing gets one slice.
    /// Returns how many lines they hold.
    pub(crate) fn slices_for<'a>(&'a self, member: usize, slices: &mut Vec<IoSlice<'a>>) -> u64 {
        slices.clear();
        let mut start = 0;
        let mut lines = 0;
        let mut taken: Option<(usize, usize)> = None;
        for run in &self.runs {
            if run.sender != Some(member) {
                lines += run.lines;
                taken = match taken {
                    Some((from, to)) if to == start => Some((from, run.end)),
                    Some((from, to)) => {
                        slices.push(IoSlice::new(&self.bytes[from..to]));
                        Some((start, run.end))
                    }
                    None => Some((start, run.end)),
                };
            }
            start = run.end;
        }
        if let Some((from, to)) = taken {
            slices.push(IoSlice::new(&self.bytes[from..to]));
        }
        lines
    }

    /// Empties it, keeping its memory for the next turn (up to a bound: one burst of long
    /// lines should not pin memory for ever).
    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.runs.clear();
        if self.bytes.capacity() > KEPT_CAPACITY {
            self.bytes = Vec::new();
        }
    }
}

/// The most buffer a room keeps between turns.
const KEPT_CAPACITY: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    fn slices_of(lines: &RoomLines, member: usize) -> Vec<String> {
        let mut slices = Vec::new();
        let count = lines.slices_for(member, &mut slices);
        let text: Vec<String> =
            slices.iter().map(|slice| String::from_utf8(slice.to_vec()).unwrap()).collect();
        assert_eq!(count, text.concat().matches('\n').count() as u64, "the line count");
        text
    }

    /// Each member gets every line but its own, in order, in as few slices as can be.
    #[test]
    fn members_get_everything_but_their_own_lines() {
        let mut lines = RoomLines::default();
        lines.push(Some(1), Codec::Line, b"a");
        lines.push(Some(1), Codec::Line, b"b");
        lines.push(Some(2), Codec::Line, b"c");
        lines.push(None, Codec::Line, b"d");
        lines.push(Some(1), Codec::Line, b"e");
        assert_eq!(slices_of(&lines, 9), ["a\nb\nc\nd\ne\n"]);
        assert_eq!(slices_of(&lines, 1), ["c\nd\n"]);
        assert_eq!(slices_of(&lines, 2), ["a\nb\n", "d\ne\n"]);
        lines.clear();
        assert!(lines.is_empty() && slices_of(&lines, 9).is_empty());
    }
}
