//! Output: carry out the handler's intents, then write.
//!
//! A connection's own replies are framed straight into its output (`input.rs`) and written
//! as soon as its input has been handled; lines to a room wait in the room's buffer until the
//! flush phase (`room.rs`); anything else sent to a connection is appended to its output and
//! written in the flush phase. Either way each connection gets one `write` for everything
//! queued, so the replies to sixteen pipelined requests, or a burst of room lines, leave
//! together. Write first, and ask the poller for `WRITABLE` only when the socket did not
//! take everything.

use log::error;
use mio::{Interest, Token};

use super::connection::{Settled, StopReason};
use super::{CloseReason, Reactor};
use crate::handlers::ConnId;
use crate::serve::Carrier;

/// Whose message an output is: it decides what happens when a client stops reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Origin {
    /// A reply to the connection's own request: past `max_output`, reading it pauses.
    Own,
    /// Something another client caused (a broadcast line): the connection cannot be slowed
    /// down by pausing it, so if it is still past `max_output` after a flush it is dropped
    /// as a slow consumer.
    Pushed,
}

impl Reactor {
    /// Carries out, in order, what the handler put in the outbox for a message of `sender`,
    /// after the replies it framed before that.
    pub(super) fn carry_out(&mut self, sender: usize, service: usize) {
        if !self.scratch.outbox.has_intents() {
            return;
        }
        self.commit_replies(sender);
        let mut outbox = std::mem::take(&mut self.scratch.outbox);
        crate::serve::carry_out(&outbox, ConnId(sender), &mut Carried { reactor: self, sender, service });
        outbox.clear();
        self.scratch.outbox = outbox;
    }

    /// Moves the replies the handler framed in the outbox to `key`'s output and queues it
    /// for writing (see [`Connection::take_replies`](super::connection::Connection::take_replies)).
    pub(super) fn commit_replies(&mut self, key: usize) {
        if !self.scratch.outbox.has_replies() {
            return;
        }
        self.release_room_of(key);
        // Replies answer messages it sent before any close of its protocol, so they go
        // out even if the protocol has closed since (its close follows them).
        match self.conns.get_mut(key) {
            Some(conn) if conn.is_ready() && !conn.is_closing() => {
                self.telemetry.stats.messages_out +=
                    conn.take_replies(&mut self.scratch.outbox, &mut self.scratch.pool);
                self.queue_flush(key);
            }
            _ => {
                self.scratch.outbox.discard_replies();
            }
        }
    }

    /// Sends `payload` to every member of `service` but `except`, here (with the room's
    /// other lines of the turn, `room.rs`), and through the backplane (if the service's room
    /// is on one) to the members on other servers.
    fn deliver_to_room(&mut self, service: usize, except: usize, payload: &[u8]) {
        let room = self.services[service].room;
        self.send_to_room(room, Some(except), payload);
        if let (Some(shared), Some(backplane)) = (self.rooms[room].backplane, &mut self.sources.backplane) {
            backplane.publish(shared, payload);
        }
    }

    /// Frames `payload` with `key`'s codec onto its pending output and queues it for the
    /// flush. A connection not served yet gets nothing (its handler cannot know it), nor one
    /// whose protocol has closed, unless it is a reply to its own message (sent before the
    /// close, so it goes before it).
    pub(super) fn deliver(&mut self, key: usize, payload: &[u8], origin: Origin) {
        self.release_room_of(key);
        let Some(conn) = self.conns.get_mut(key) else { return };
        let takes = match origin {
            Origin::Own => conn.is_ready() && !conn.is_closing(),
            Origin::Pushed => conn.accepts_messages(),
        };
        if !takes {
            return;
        }
        let codec = self.services[conn.service()].codec;
        conn.push_output(codec, payload, origin == Origin::Pushed, &mut self.scratch.pool);
        self.telemetry.stats.messages_out += 1;
        self.queue_flush(key);
    }

    /// Registers `key` for `wanted` unless it already is: every change is an `epoll_ctl`
    /// call, so it happens only when the connection's state calls for it. False if it failed
    /// (the connection is then closing).
    pub(super) fn update_interest(&mut self, key: usize, wanted: Interest) -> bool {
        let Some(conn) = self.conns.get_mut(key) else { return false };
        match conn.reregister(self.poll.registry(), Token(key), wanted) {
            Ok(changed) => {
                self.telemetry.stats.interest_changes += u64::from(changed);
                true
            }
            Err(error) => {
                error!("reregister failed; conn={key} error={error}");
                self.close_later(key, CloseReason::Error(error));
                false
            }
        }
    }

    /// Puts `key` on the flush queue (once per turn).
    pub(super) fn queue_flush(&mut self, key: usize) {
        if self.conns.get_mut(key).is_some_and(|conn| conn.queue_for_flush()) {
            self.queues.flush.push(key);
        }
    }

    /// Puts `key` on the flush queue for the next turn even if it was just flushed (its
    /// share of this turn is spent; the non-empty queue keeps the next poll from sleeping).
    pub(super) fn queue_flush_next_turn(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            conn.unqueue_for_flush();
        }
        self.queue_flush(key);
    }

    /// The flush phase: writes every connection still queued this turn (those whose own
    /// replies were written right after their input are no longer queued).
    pub(super) fn flush_queued(&mut self) {
        let mut queue = std::mem::take(&mut self.queues.flush);
        for &key in &queue {
            if self.conns.get(key).is_some_and(|conn| conn.is_queued_for_flush()) {
                self.flush(key);
            }
        }
        queue.clear();
        if self.queues.flush.is_empty() {
            self.queues.flush = queue;
        }
    }

    /// Writes what `key` has pending, then brings its state and poll interest up to date
    /// ([`settle`](Self::settle)).
    pub(super) fn flush(&mut self, key: usize) {
        // Under --workers, a scrape another worker answers must count what this reply
        // answers.
        self.publish_metrics();
        let Some(conn) = self.conns.get_mut(key) else { return };
        conn.unqueue_for_flush();
        if conn.is_closing() {
            return;
        }
        match conn.write_pending(&mut self.scratch.pool, self.clocks.now_tick) {
            Ok(written) => self.telemetry.stats.bytes_out += written as u64,
            Err(error) => return self.close_later(key, CloseReason::Error(error)),
        }
        if conn.file_is_open() {
            // Behind the written output: as much of its file as the socket takes.
            self.send_file(key);
        }
        self.settle(key);
    }

    /// After a write to `key`: pauses or resumes its reading around `max_output`, closes it
    /// if it is finished and written out (or a slow consumer), and re-registers it only if
    /// its interest changed (each change is an `epoll_ctl` call).
    pub(super) fn settle(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if conn.is_closing() {
            return;
        }
        let settled = conn.settle_output(self.limits.max_output);
        let wanted = conn.wanted_interest();
        match settled {
            Settled::SlowConsumer => return self.drop_slow_consumer(key),
            Settled::Finished(reason) => return self.finish_stopped(key, reason),
            Settled::Paused => self.telemetry.stats.reading_paused += 1,
            Settled::Resumed | Settled::Unchanged => {}
        }
        // Asked here first: most writes leave the interest as it was, and then there is
        // nothing more to do.
        if let Some(wanted) = wanted.filter(|&wanted| !conn.is_registered_for(wanted)) {
            if !self.update_interest(key, wanted) {
                return;
            }
        }
        if settled == Settled::Resumed {
            // Bytes it sent while paused raised their edge long ago: read them now.
            self.owe_read(key);
        }
    }
}

/// What a handler's intents mean on the reactor, for a message of `sender`.
struct Carried<'r> {
    reactor: &'r mut Reactor,
    sender: usize,
    service: usize,
}

impl Carrier for Carried<'_> {
    fn reply(&mut self, payload: &[u8]) {
        self.reactor.deliver(self.sender, payload, Origin::Own);
    }

    fn send_to(&mut self, ConnId(key): ConnId, payload: &[u8]) {
        self.reactor.deliver(key, payload, Origin::Pushed);
    }

    fn send_to_room(&mut self, ConnId(except): ConnId, payload: &[u8]) {
        self.reactor.deliver_to_room(self.service, except, payload);
    }

    fn close(&mut self) {
        self.reactor.stop_reading(self.sender, StopReason::HandlerClosed);
    }

    fn send_file(&mut self, path: &std::path::Path, offset: u64, length: u64) {
        self.reactor.start_file(self.sender, path.to_path_buf(), offset, length);
    }

    fn send_metrics(&mut self) {
        let reactor = &mut *self.reactor;
        reactor.release_room_of(self.sender);
        let response = reactor.metrics_response();
        if let Some(conn) = reactor.conns.get_mut(self.sender) {
            // The whole HTTP response as is: it is not a message of the codec.
            conn.push_raw(&response, &mut reactor.scratch.pool);
            reactor.telemetry.stats.messages_out += 1;
            reactor.queue_flush(self.sender);
        }
    }
}
