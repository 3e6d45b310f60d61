//! Reaching others: what a handler asks for beyond replies to its sender, carried out; the
//! rooms' lines written to their members; the flush phase; the notices the server itself
//! sends; the metrics.
//!
//! A connection's own replies are written by its turn (`connection.rs`); everything else sent
//! to a connection is appended to its output here and written in the flush phase, in one
//! `write` for everything queued, and lines to a room wait in the room's buffers until the
//! flush phase (`room.rs`). Write first, and ask the poller for `WRITABLE` only when the
//! socket did not take everything.

use std::io::IoSlice;
use std::time::Instant;

use super::connection::StopReason;
use super::record::{Answered, Asker, Reply};
use super::room::ROOM_WRITES_PER_TURN;
use super::{CloseReason, Progress, Reactor, metrics};
use crate::backplane::{Answer, News};
use crate::codec::Notice;
use crate::handlers::serve::{Carrier, carry_out};
use crate::handlers::{ConnId, RoomEvent};

/// Whose message an output is: it decides what happens when a client stops reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// A reply to the connection's own request: past `max_output`, reading it pauses.
    Own,
    /// Something another client caused (a broadcast line): the connection cannot be slowed
    /// down by pausing it, so if it is still past `max_output` after a flush it is dropped
    /// as a slow consumer.
    Pushed,
}

impl Reactor {
    /// Carries out, in order, what the handler put in the outbox for messages of `sender`,
    /// after the replies it framed before that.
    pub(super) fn carry_out(&mut self, sender: usize) {
        if let Some(conn) = self.conns.get(sender) {
            self.carry_out_for(sender, conn.service());
        }
    }

    /// [`carry_out`](Self::carry_out) for `sender` of `service` (which may have gone: a
    /// handler's goodbye still reaches the others).
    pub(super) fn carry_out_for(&mut self, sender: usize, service: usize) {
        self.carry_out_as(sender, service, true);
    }

    /// [`carry_out_for`](Self::carry_out_for); `publish`: lines to the room go to the other
    /// servers too (not when each server tells its own members).
    fn carry_out_as(&mut self, sender: usize, service: usize, publish: bool) {
        self.commit_replies(sender);
        if !self.scratch.outbox.has_intents() {
            return;
        }
        let mut outbox = std::mem::take(&mut self.scratch.outbox);
        carry_out(&outbox, ConnId(sender), &mut Carried { reactor: self, sender, service, publish });
        outbox.clear();
        self.scratch.outbox = outbox;
    }

    /// Gives the handler of `sender` (of `service`) what its room answered, at once: what it
    /// asks then is carried out before the intents after the question (the outbox being
    /// carried out is set aside meanwhile; the handler writes into a fresh one).
    fn tell_handler(&mut self, sender: usize, service: usize, event: RoomEvent<'_>) {
        let Some(conn) = self.conns.get(sender) else { return };
        let peer = conn.peer().clone();
        let from = crate::handlers::Peer { id: ConnId(sender), addr: &peer };
        self.services[service].handler.on_room(from, event, &mut self.scratch.outbox);
        self.carry_out_for(sender, service);
    }

    /// What the engine said since last asked (`record.rs`): each answer to the connection
    /// that asked (its requests that waited for it are served next), and the members of
    /// servers that are gone, to the room.
    pub(super) fn hear_engine(&mut self, now: Instant) {
        let Some(backplane) = &mut self.sources.backplane else { return };
        for news in backplane.take_news() {
            match news {
                News::Answer { ask, answer } => self.answer(ask, answer, now),
                News::Gone { room, names, tell_others } => self.members_gone(room, &names, tell_others),
            }
        }
        let Some(backplane) = &self.sources.backplane else { return };
        for (Asker { key, service }, lines) in self.records.caught_up(backplane, now) {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.answered();
            }
            self.finish_joining(key, service, &lines);
            self.resume_after_answer(key);
        }
    }

    /// The engine's answer to question `ask`, carried out for the connection that asked.
    fn answer(&mut self, ask: u64, answer: Answer, now: Instant) {
        let Some(backplane) = &mut self.sources.backplane else { return };
        let Some((Asker { key, service }, answered)) = self.records.answered(ask, answer, backplane, now)
        else {
            return;
        };
        if let Some(conn) = self.conns.get_mut(key) {
            conn.answered();
        }
        match answered {
            Answered::Claimed { name, taken } => {
                self.tell_handler(key, service, RoomEvent::Claimed { name: &name, taken })
            }
            Answered::Present(names) => self.tell_handler(key, service, RoomEvent::Present(&names)),
        }
        self.resume_after_answer(key);
    }

    /// An answer for `key` was carried out: if no other is due, what it sent meanwhile
    /// (kept, with no event to come for it) is served next.
    fn resume_after_answer(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key).filter(|conn| !conn.awaits_answer()) {
            self.queues.owe_read(key, conn);
        }
    }

    /// Members of `room` on a server that is gone: its handler tells the room, here (and,
    /// `tell_others`, on every server).
    fn members_gone(&mut self, room: usize, names: &[String], tell_others: bool) {
        let Some(service) =
            self.services.iter().position(|service| service.room == room && service.handler.has_room())
        else {
            return;
        };
        for name in names {
            self.services[service].handler.on_member_gone(name, &mut self.scratch.outbox);
            self.carry_out_as(ConnId::NONE.0, service, tell_others);
        }
    }

    /// `key`'s handler asked its room something the engine answers later: its requests wait.
    fn await_answer(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            conn.await_answer();
        }
    }

    /// Moves the replies the handler framed in the outbox to `key`'s output and queues it
    /// for writing, after its room's lines.
    fn commit_replies(&mut self, key: usize) {
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
                self.queues.flush(key, conn);
                if self.budget.count(conn) {
                    self.evict_biggest();
                }
            }
            _ => {
                self.scratch.outbox.discard_replies();
            }
        }
    }

    /// Sends `payload` to every member of `service`'s room but `except`, here (with the
    /// room's other lines of the turn), and through the backplane (if the room is on one) to
    /// the members on other servers.
    fn deliver_to_room(&mut self, service: usize, except: usize, payload: &[u8], kept: bool, publish: bool) {
        let room = self.services[service].room;
        self.rooms[room].push_line(Some(except), payload);
        let mut id = None;
        if let (Some(shared), Some(backplane), true) =
            (self.rooms[room].backplane, &mut self.sources.backplane, publish)
        {
            id = Some(backplane.publish(shared, payload, kept));
        }
        self.records.line(room, Some(except), id, payload, kept);
        if self.rooms[room].is_full() {
            self.release_room(room);
        }
    }

    /// Frames `payload` with `key`'s codec onto its pending output and queues it for the
    /// flush. A connection not served yet gets nothing (its handler cannot know it), nor one
    /// whose protocol has closed, unless it is a reply to its own message (sent before the
    /// close, so it goes before it).
    fn deliver(&mut self, key: usize, payload: &[u8], origin: Origin) {
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
        self.queues.flush(key, conn);
        if self.budget.count(conn) {
            self.evict_biggest();
        }
    }

    /// Tells `key` `notice` in its own protocol, after what it has queued (a served
    /// connection only: one still preparing has no protocol to be told in yet).
    pub(super) fn notify(&mut self, key: usize, notice: Notice) {
        self.release_room_of(key);
        let Some(conn) = self.conns.get_mut(key) else { return };
        if conn.is_closing() || !conn.is_ready() {
            return;
        }
        let codec = self.services[conn.service()].codec;
        if conn.push_notice(codec, notice, &mut self.scratch.pool) {
            self.telemetry.stats.messages_out += 1;
            self.queues.flush(key, conn);
        }
    }

    /// The flush phase: writes every connection still queued this turn (those whose own
    /// replies were written in their turn are no longer queued).
    pub(super) fn flush_queued(&mut self) {
        let mut queue = std::mem::take(&mut self.queues.flush);
        for &key in &queue {
            if self.conns.get(key).is_some_and(|conn| conn.is_queued_for_flush()) {
                let written = self.telemetry.stats.bytes_out;
                self.serve_conn(key, Progress::writing());
                if let Some(console) = &mut self.console {
                    console.wrote(key, self.telemetry.stats.bytes_out - written);
                }
            }
        }
        queue.clear();
        if self.queues.flush.is_empty() {
            self.queues.flush = queue;
        }
    }

    // ----- rooms -----

    /// Releases the lines waiting for `key`'s room, if any: something else is about to
    /// reach `key`, and must come after them.
    #[inline]
    pub(super) fn release_room_of(&mut self, key: usize) {
        if let Some(conn) = self.conns.get(key) {
            let room = self.services[conn.service()].room;
            if self.rooms[room].lines_waiting() {
                self.release_room(room);
            }
        }
    }

    /// The flush phase: writes each room's lines to at most [`ROOM_WRITES_PER_TURN`]
    /// members; the others get theirs in the next turns.
    pub(super) fn release_rooms(&mut self) {
        for room in 0..self.rooms.len() {
            self.release_step(room, ROOM_WRITES_PER_TURN);
        }
    }

    /// Writes every line waiting in `room` to every member, now: something must reach a
    /// member after them (its own reply, a line addressed to it), the membership is about
    /// to change, or the lines have grown past their bound.
    pub(super) fn release_room(&mut self, room: usize) {
        while self.rooms[room].lines_waiting() {
            self.release_step(room, usize::MAX);
        }
    }

    /// Writes the lines being released in `room` to its next `budget` members, everything
    /// but a member's own in one `sendmsg` straight from its codec's buffer. A member with
    /// output already waiting (or a transport that must take a copy) gets them copied after
    /// it, to go out in the flush.
    fn release_step(&mut self, room: usize, budget: usize) {
        if !self.rooms[room].lines_waiting() {
            return;
        }
        self.publish_metrics();
        let mut step = self.rooms[room].start_release();
        step.batch(budget);
        let mut slices: Vec<IoSlice<'_>> = Vec::new();
        for &member in step.members() {
            let Some(conn) = self.conns.get_mut(member) else { continue };
            if !conn.takes_room_lines() {
                continue;
            }
            let service = &self.services[conn.service()];
            let framing = conn.compresses().then(|| conn.framing(service.codec));
            let count = step.lines_for(member, service.framing, framing, &mut slices);
            if count == 0 {
                continue;
            }
            self.telemetry.stats.messages_out += count;
            match conn.write_shared(&mut slices, true, &mut self.scratch.pool, self.clocks.now_tick) {
                Ok(written) => {
                    self.telemetry.stats.bytes_out += written as u64;
                    if let Some(console) = &mut self.console {
                        console.wrote(member, written as u64);
                    }
                }
                Err(error) => {
                    self.queues.close(member, conn, CloseReason::Error(error));
                    continue;
                }
            }
            if conn.has_output_waiting() {
                // A copy of what its socket did not take: counted, and the biggest holders
                // evicted at once if that is too much (a room's lines to many slow members).
                self.queues.flush(member, conn);
                if self.budget.count(conn) {
                    self.evict_biggest();
                }
            } else if let Some(mut turn) = self.turn(member) {
                turn.settle();
            }
        }
        drop(slices);
        self.rooms[room].end_release(step);
    }

    // ----- files -----

    /// `key`'s file is out: its slot goes to the next connection waiting for one, and its
    /// requests that waited behind the file are served (they are in its kept input already:
    /// no new bytes or edge will come for them).
    pub(super) fn finish_file(&mut self, key: usize) {
        if self.conns.get_mut(key).is_some_and(|conn| conn.drop_file()) {
            self.release_file_slot();
        }
        if let Some(conn) = self.conns.get_mut(key) {
            self.queues.owe_read(key, conn);
            self.queues.flush(key, conn);
        }
    }

    /// A file slot is free: the first connection still waiting gets it.
    pub(super) fn release_file_slot(&mut self) {
        if let Some(key) = self.files.release(&mut self.conns) {
            self.open_file(key);
        }
    }

    /// Opens `key`'s queued file in a free slot, and queues it to start sending.
    fn open_file(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        match self.files.open(key, conn) {
            Ok(()) => self.queues.flush(key, conn),
            // Its reply promised the bytes: without them the connection cannot go on.
            Err(error) => self.queues.close(key, conn, CloseReason::Error(error)),
        }
    }

    // ----- metrics -----

    /// Under `--workers`: takes this worker's slot, continuing from the counters a dead
    /// predecessor left there. Called once, before the first turn.
    pub(super) fn claim_metrics_slot(&mut self) {
        let Some(mut shared) = self.telemetry.shared_metrics.take() else { return };
        self.refresh_stats();
        if shared.claim(&self.metrics_view()) {
            self.telemetry.shared_metrics = Some(shared);
            self.publish_metrics();
        }
    }

    /// Under `--workers`: stores this worker's samples in its slot, so that a scrape any
    /// worker answers includes them. Called before any reply leaves and at the end of each
    /// turn; without workers, one branch.
    #[inline]
    pub(super) fn publish_metrics(&mut self) {
        if let Some(shared) = self.telemetry.shared_metrics.take() {
            self.refresh_stats();
            shared.store(&self.metrics_view());
            self.telemetry.shared_metrics = Some(shared);
        }
    }

    /// Brings what is kept beside the counters (open connections, the backplane's counters)
    /// into them.
    fn refresh_stats(&mut self) {
        self.telemetry.stats.connections_open = self.conns.len();
        self.telemetry.stats.client_memory = self.budget.held();
        if let Some(backplane) = &self.sources.backplane {
            self.telemetry.stats.set_backplane(backplane.counters());
        }
    }

    /// What the metrics are rendered from (after [`refresh_stats`](Self::refresh_stats)).
    fn metrics_view(&self) -> metrics::View<'_> {
        metrics::View {
            stats: &self.telemetry.stats,
            preparing: self.preparing.count(),
            services: &self.services,
            listeners: &self.sources.listeners,
            backplane: self.sources.backplane.is_some(),
        }
    }
}

/// What a handler's intents mean on the reactor, for a message of `sender`.
struct Carried<'r> {
    reactor: &'r mut Reactor,
    sender: usize,
    service: usize,
    /// Lines to the room go to the other servers too.
    publish: bool,
}

impl Carrier for Carried<'_> {
    fn reply(&mut self, payload: &[u8]) {
        self.reactor.deliver(self.sender, payload, Origin::Own);
    }

    fn send_to(&mut self, ConnId(key): ConnId, payload: &[u8]) {
        self.reactor.deliver(key, payload, Origin::Pushed);
    }

    fn send_to_room(&mut self, ConnId(except): ConnId, payload: &[u8]) {
        self.reactor.deliver_to_room(self.service, except, payload, true, self.publish);
    }

    fn notify_room(&mut self, ConnId(except): ConnId, payload: &[u8]) {
        self.reactor.deliver_to_room(self.service, except, payload, false, self.publish);
    }

    fn close(&mut self) {
        self.reactor.stop_reading(self.sender, StopReason::HandlerClosed);
    }

    fn send_file(&mut self, path: &std::path::Path, offset: u64, length: u64) {
        let reactor = &mut *self.reactor;
        let Some(conn) = reactor.conns.get_mut(self.sender) else { return };
        if conn.is_closing() {
            return;
        }
        conn.queue_file(path.to_path_buf(), offset, length);
        if reactor.files.has_free_slot(reactor.limits.max_file_sends) {
            reactor.open_file(self.sender);
        } else {
            reactor.files.wait(self.sender);
            reactor.queues.flush(self.sender, conn);
        }
    }

    fn claim_name(&mut self, name: Option<&str>) {
        let reactor = &mut *self.reactor;
        let (room, asker) =
            (reactor.services[self.service].room, Asker { key: self.sender, service: self.service });
        match reactor.records.claim(room, asker, name, reactor.sources.backplane.as_mut()) {
            Reply::Now((name, taken)) => {
                reactor.tell_handler(self.sender, self.service, RoomEvent::Claimed { name: &name, taken })
            }
            Reply::Later => reactor.await_answer(self.sender),
        }
    }

    fn who(&mut self) {
        let reactor = &mut *self.reactor;
        let (room, asker) =
            (reactor.services[self.service].room, Asker { key: self.sender, service: self.service });
        match reactor.records.who(room, asker, reactor.sources.backplane.as_mut()) {
            Reply::Now(names) => reactor.tell_handler(self.sender, self.service, RoomEvent::Present(&names)),
            Reply::Later => reactor.await_answer(self.sender),
        }
    }

    fn send_metrics(&mut self) {
        let reactor = &mut *self.reactor;
        reactor.release_room_of(self.sender);
        reactor.publish_metrics();
        reactor.refresh_stats();
        let response = reactor.metrics_view().response(reactor.telemetry.shared_metrics.as_ref());
        if let Some(conn) = reactor.conns.get_mut(self.sender) {
            // The whole HTTP response as is: it is not a message of the codec.
            conn.push_raw(&response, &mut reactor.scratch.pool);
            reactor.telemetry.stats.messages_out += 1;
            reactor.queues.flush(self.sender, conn);
        }
    }
}
