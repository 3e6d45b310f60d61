//! A protocol with a session (WebSocket), from the connection's side: the session takes
//! what it can of the input (after the tail it left before) and reports what it found, in
//! order: its handshake done (the connection is served), messages for the handler (a run of
//! them served in one go, replies framed in place), bytes of its own to send (the handshake's
//! answer, a pong, a close frame), a close. The events wait in the reactor's scratch while
//! the loop does what only it can (serve the connection, carry out intents, release its
//! room's lines first), and the turn goes on from the next one. Events that must wait for an
//! answer from the room (asked of an engine shared with other servers) are parked apart until
//! it comes.

use log::debug;

use super::{Next, Progress, StopReason, Turn};
use crate::codec::{Event, Framing};
use crate::handlers::serve::Flow;

impl Turn<'_> {
    /// Hands `bytes` (after the tail kept before) to the session, then carries out what it
    /// found.
    pub(super) fn session_input(&mut self, bytes: &[u8], progress: &mut Progress) -> Option<Next> {
        let mut joined = self.conn.take_partial_input();
        if let Some(partial) = &mut joined {
            partial.extend_from_slice(bytes);
        }
        let input: &[u8] = joined.as_deref().unwrap_or(bytes);
        let max_frame = self.limits.max_frame;
        let used = match self.conn.session() {
            Some(session) => session.receive(input, max_frame, &mut self.scratch.session),
            None => input.len(),
        };
        let keep = used < input.len() && self.conn.wants_read();
        match joined {
            Some(mut partial) if keep => {
                partial.drain(..used);
                self.conn.keep_partial_input(partial, &mut self.scratch.pool);
            }
            Some(partial) => self.scratch.pool.give(partial),
            None if keep => self.keep_input(&bytes[used..]),
            None => {}
        }
        self.carry_out_events(0, progress)
    }

    /// Carries out the session's events from `start`, in order, until they are done or the
    /// loop must step in (the turn then goes on from the event it stopped at).
    pub(super) fn carry_out_events(&mut self, start: usize, progress: &mut Progress) -> Option<Next> {
        let events = std::mem::take(&mut self.scratch.session);
        if self.conn.awaits_answer() && start < events.events().len() {
            // An answer from the room is due (`record.rs`): the rest waits for it, apart from
            // the events every connection shares, and goes on once it is carried out.
            self.scratch.parked.insert(self.key, (events, start));
            return None;
        }
        let found = events.events();
        let total = found.len();
        let mut index = start;
        let mut next = None;
        while index < found.len() && next.is_none() {
            match &found[index] {
                Event::Ready => {
                    if self.conn.is_ready_to_serve() {
                        next = Some(Next::Promote);
                    }
                }
                &Event::Message { binary, .. } => {
                    // A run of messages of one kind, served in one go.
                    let run = found[index..]
                        .iter()
                        .take_while(
                            |event| matches!(event, Event::Message { binary: kind, .. } if *kind == binary),
                        )
                        .count();
                    let framing = Framing { binary, ..self.conn.framing(self.service.codec) };
                    let mut messages = found[index..index + run].iter().map(|event| match event {
                        Event::Message { bytes, .. } => Ok(events.bytes(bytes.clone())),
                        _ => unreachable!("a run of messages"),
                    });
                    let mut served = run;
                    if self.conn.takes_requests()
                        && self.serve_messages(framing, &mut messages) == Flow::Pause
                    {
                        // A question to the room: the rest of the run after its answer.
                        served = run - messages.len();
                    }
                    index += served - 1;
                    next = self.scratch.outbox.has_intents().then_some(Next::CarryOut);
                }
                Event::Send(range) => {
                    if self.room_waiting {
                        // Its room's lines go first: this event again, after them.
                        next = Some(Next::ReleaseRoom);
                        continue;
                    }
                    self.commit_replies();
                    self.conn.push_raw(events.bytes(range.clone()), &mut self.scratch.pool);
                    self.queues.flush(self.key, self.conn);
                }
                Event::Close { reason } => {
                    debug!("protocol closes; conn={} reason={reason}", self.key);
                    self.stop_reading(StopReason::ProtocolClosed);
                }
            }
            index += 1;
        }
        let mut events = events;
        if next.is_some() && index < total {
            progress.events = Some(index);
        } else {
            events.clear();
        }
        self.scratch.session = events;
        next
    }

    /// Moves the replies framed so far into the connection's output, so that what comes
    /// next (bytes of the session's own) goes after them.
    fn commit_replies(&mut self) {
        if !self.scratch.outbox.has_replies() {
            return;
        }
        if self.conn.is_ready() && !self.conn.is_closing() {
            self.telemetry.stats.messages_out +=
                self.conn.take_replies(&mut self.scratch.outbox, &mut self.scratch.pool);
            self.queues.flush(self.key, self.conn);
        } else {
            self.scratch.outbox.discard_replies();
        }
    }
}
