//! Input: read from a ready socket, and pass the bytes up the connection's stack: the
//! preamble (a PROXY header, until it has come), the transport (plaintext), the protocol
//! (messages), the handler.
//!
//! Every connection reads into the reactor's one shared buffer. Complete messages of a
//! stateless codec are handled straight from it; only an incomplete tail is copied into a
//! buffer of the connection's own, which goes back to the pool as soon as the message
//! completes. A protocol with a session reports owned messages and bytes of its own to send
//! (`codec/session.rs`), carried out here in the order it found them.

use std::mem;

use log::{debug, warn};

use super::connection::StopReason;
use super::{CloseReason, HANDSHAKES_PER_TURN, READS_PER_TURN, Reactor};
use crate::codec::{Decoder, Event, FrameError, Framing, SessionEvents};
use crate::handlers::{ConnId, Peer};
use crate::transport::Received;

/// Why the handler loop stopped short of the end of the input.
enum Asked {
    /// The handler asked for more than replies: carry it out. `started`: when handling the
    /// message began, while recording a timeline.
    More { started: Option<std::time::Instant>, len: usize },
    /// The input is malformed: answer `ERR ...` and carry on.
    BadInput(FrameError),
}

impl Reactor {
    /// Reads from `key` and handles what arrived.
    ///
    /// Readiness is a hint: read until `WouldBlock`, or until a read comes back short, which
    /// means the kernel buffer was empty at that moment and any later bytes raise a new edge
    /// (this saves the syscall that would only say `WouldBlock`). `drain` asks for reading to
    /// `WouldBlock` regardless, for when no further edge is coming. At most
    /// [`READS_PER_TURN`] reads, then the connection is owed a turn and the others go first.
    pub(super) fn read_from(&mut self, key: usize, drain: bool) {
        let Some(conn) = self.conns.get(key) else { return };
        if conn.is_lingering() {
            return self.discard_input(key);
        }
        if conn.is_handshaking() {
            // A TLS handshake step costs up to ~150 µs: a bounded number per turn.
            if self.queues.handshakes >= HANDSHAKES_PER_TURN {
                return self.owe_read(key);
            }
            self.queues.handshakes += 1;
        }
        let mut buffer = mem::take(&mut self.scratch.read);
        let chunk = self.services[conn.service()].codec.read_limit(self.limits.max_frame, buffer.len());
        let mut reads = 0;
        // Looked up again on every pass: handling a message may close the connection.
        while let Some(conn) = self.conns.get_mut(key) {
            if !conn.takes_requests() {
                break;
            }
            if conn.pause_if_backed_up(self.limits.max_output) {
                // It is not reading its replies: stop reading its requests until it does.
                self.telemetry.stats.reading_paused += 1;
                self.queue_flush(key);
                break;
            }
            if reads == READS_PER_TURN {
                // Bytes may still be waiting, and no new edge will say so: come back later.
                self.owe_read(key);
                break;
            }
            match conn.read(&mut buffer[..chunk], self.clocks.now_tick) {
                Ok(Some(0)) => {
                    self.end_of_stream(key);
                    break;
                }
                Ok(Some(n)) => {
                    reads += 1;
                    self.telemetry.stats.bytes_in += n as u64;
                    self.receive(key, &buffer[..n]);
                    if n < chunk && !drain {
                        break;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    self.close_later(key, CloseReason::Error(error));
                    break;
                }
            }
        }
        self.scratch.read = buffer;
        let Some(conn) = self.conns.get(key) else { return };
        let queued = conn.is_queued_for_flush();
        if conn.has_plaintext_waiting() && conn.takes_requests() {
            // Decoded by the transport but not read yet: no event will say so.
            self.owe_read(key);
        }
        // Write its replies now, in one write, rather than at the end of the turn: the client
        // can start on them while this thread serves the others. (Measured: up to 13% more
        // throughput at 10,000 connections; docs/benchmarks.md.)
        if queued {
            self.flush(key);
        }
    }

    /// Bytes just read from `key`'s socket, up the stack: the preamble while it has not come,
    /// then the transport, whose plaintext goes to the protocol.
    #[inline]
    fn receive(&mut self, key: usize, raw: &[u8]) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if conn.awaits_preamble() {
            return self.take_preamble(key, raw);
        }
        let handshaking = conn.is_handshaking();
        let received = conn.receive(raw, &mut self.scratch.plain);
        if !conn.is_ready() {
            let (answer, done) = (conn.transport_wants_write(), handshaking && !conn.is_handshaking());
            if answer {
                // A handshake's answer: written this turn.
                self.queue_flush(key);
            }
            if done {
                self.telemetry.stats.tls_handshakes += 1;
            }
            self.promote_if_ready(key);
        }
        match received {
            Ok(Received::AsIs) => self.handle_input(key, raw),
            Ok(Received::Decoded) => {
                let plain = mem::take(&mut self.scratch.plain);
                if !plain.is_empty() {
                    self.handle_input(key, &plain);
                }
                self.scratch.plain = plain;
                self.scratch.plain.clear();
            }
            Err(error) => self.transport_failed(key, error),
        }
    }

    /// A transport refused what it read (TLS: not TLS at all, a garbled or truncated
    /// ClientHello): counted, logged once per throttle period, and the connection closed
    /// (after the alert the transport queued). Nobody else is affected.
    fn transport_failed(&mut self, key: usize, error: std::io::Error) {
        if error.kind() == std::io::ErrorKind::InvalidData {
            self.telemetry.stats.tls_failures += 1;
            if let Some(held_back) = self.telemetry.misbehaving_log.allow(std::time::Instant::now()) {
                if let Some(conn) = self.conns.get(key) {
                    warn!("TLS failed; conn={key} peer={} error={error} repeats={held_back}", conn.peer());
                }
            }
            return self.close_later(key, CloseReason::Tls);
        }
        self.close_later(key, CloseReason::Error(error));
    }

    /// Behind a balancer: the connection's first bytes are a PROXY header. Until it is all
    /// there they wait in the connection's input; then the real client's address replaces
    /// the balancer's, and what followed the header goes on up the stack. A connection
    /// without a valid header is closed, never served with the wrong address; until its
    /// header has come it is not served at all (no handler call, no room line).
    fn take_preamble(&mut self, key: usize, bytes: &[u8]) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        let mut input = conn.take_partial_input().unwrap_or_else(|| self.scratch.pool.take());
        input.extend_from_slice(bytes);
        match crate::preamble::parse(&input) {
            Ok(None) => conn.keep_partial_input(input, &mut self.scratch.pool),
            Ok(Some(header)) => {
                conn.preamble_received(header.source);
                self.promote_if_ready(key);
                // What the client sent after the header, up the stack.
                if input.len() > header.length {
                    self.receive(key, &input[header.length..]);
                }
                self.scratch.pool.give(input);
            }
            Err(error) => {
                self.scratch.pool.give(input);
                if let Some(held_back) = self.telemetry.misbehaving_log.allow(std::time::Instant::now()) {
                    warn!(
                        "closing a connection without a valid PROXY header; conn={key} peer={} error={error} repeats={held_back}",
                        conn.peer()
                    );
                }
                self.close_later(key, CloseReason::Error(std::io::Error::other(error.to_string())));
            }
        }
    }

    /// Decodes plaintext `bytes` (after any incomplete tail kept from before), handles each
    /// message, and keeps what is left of an incomplete one.
    pub(super) fn handle_input(&mut self, key: usize, bytes: &[u8]) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        let Some(mut decoder) = conn.decoder() else {
            return self.handle_session_input(key, bytes);
        };
        let service = conn.service();
        let leftover = match conn.take_partial_input() {
            None => {
                let used = self.decode_and_handle(key, service, &mut decoder, bytes);
                let tail = &bytes[used..];
                // Most reads end on a message boundary: a buffer is taken only for a tail
                // that will be read on.
                let keeps = !tail.is_empty() && self.conns.get(key).is_some_and(|conn| conn.wants_read());
                keeps.then(|| {
                    let mut partial = self.scratch.pool.take();
                    partial.extend_from_slice(tail);
                    partial
                })
            }
            Some(mut partial) => {
                partial.extend_from_slice(bytes);
                let used = self.decode_and_handle(key, service, &mut decoder, &partial);
                partial.drain(..used);
                Some(partial)
            }
        };
        match self.conns.get_mut(key) {
            Some(conn) => {
                conn.set_decoder(decoder);
                if let Some(partial) = leftover {
                    conn.keep_partial_input(partial, &mut self.scratch.pool);
                    let kept = conn.partial_input_len();
                    if kept > 0 {
                        self.watch_unterminated(key, kept);
                    }
                }
            }
            None => leftover.into_iter().for_each(|partial| self.scratch.pool.give(partial)),
        }
    }

    /// A protocol with a session: it takes what it can of `bytes` (after the tail it left
    /// before) and reports what it found, which is carried out in order.
    fn handle_session_input(&mut self, key: usize, bytes: &[u8]) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        let mut events = mem::take(&mut self.scratch.session);
        let mut joined = conn.take_partial_input();
        if let Some(partial) = &mut joined {
            partial.extend_from_slice(bytes);
        }
        let input: &[u8] = joined.as_deref().unwrap_or(bytes);
        let used = match conn.session() {
            Some(session) => session.receive(input, self.limits.max_frame, &mut events),
            None => input.len(),
        };
        let keep = used < input.len() && conn.wants_read();
        match joined {
            Some(mut partial) if keep => {
                partial.drain(..used);
                conn.keep_partial_input(partial, &mut self.scratch.pool);
            }
            Some(partial) => self.scratch.pool.give(partial),
            None if keep => {
                let mut partial = self.scratch.pool.take();
                partial.extend_from_slice(&bytes[used..]);
                conn.keep_partial_input(partial, &mut self.scratch.pool);
            }
            None => {}
        }
        self.carry_out_session(key, &events);
        events.clear();
        self.scratch.session = events;
    }

    /// Carries out what a session found, in order: its handshake done (the connection is
    /// served), messages for the handler (a run of them handled in one go, replies framed in
    /// place), bytes of its own to send, a close.
    fn carry_out_session(&mut self, key: usize, events: &SessionEvents) {
        let found = events.events();
        let mut index = 0;
        while index < found.len() {
            match &found[index] {
                Event::Ready => self.promote_if_ready(key),
                &Event::Message { binary, .. } => {
                    // A run of messages of one kind, handled in one go.
                    let run = found[index..]
                        .iter()
                        .take_while(
                            |event| matches!(event, Event::Message { binary: kind, .. } if *kind == binary),
                        )
                        .count();
                    let Some(service) = self.conns.get(key).map(|conn| conn.service()) else { return };
                    let mut messages = found[index..index + run].iter().map(|event| match event {
                        Event::Message { bytes, .. } => Ok(events.bytes(bytes.clone())),
                        _ => unreachable!("a run of messages"),
                    });
                    let Some(conn) = self.conns.get(key) else { return };
                    let framing = Framing { binary, ..conn.framing(self.services[service].codec) };
                    self.handle_messages(key, service, framing, || messages.next());
                    index += run;
                    continue;
                }
                Event::Send(range) => {
                    self.release_room_of(key);
                    if let Some(conn) = self.conns.get_mut(key) {
                        conn.push_raw(events.bytes(range.clone()), &mut self.scratch.pool);
                        self.queue_flush(key);
                    }
                }
                Event::Close { reason } => {
                    debug!("protocol closes; conn={key} reason={reason}");
                    self.stop_reading(key, StopReason::ProtocolClosed);
                }
            }
            index += 1;
        }
    }

    /// Handles every complete message at the front of `input`; returns the bytes used.
    fn decode_and_handle(
        &mut self,
        key: usize,
        service: usize,
        decoder: &mut Decoder,
        input: &[u8],
    ) -> usize {
        let mut frames = decoder.frames(input, self.limits.max_frame);
        self.handle_messages(key, service, self.services[service].codec.into(), || frames.next());
        input.len() - frames.rest().len()
    }

    /// Gives each message `next` yields to the service's handler, until `next` runs out or
    /// the connection stops taking requests: the handler closed it (its later messages are
    /// dropped) or started a file (they wait in its kept input until the file is out).
    ///
    /// This is the server's hottest loop, so per message it does only what must be done per
    /// message: decode, and call the handler. The handler's replies to the sender are framed
    /// by the outbox straight into a buffer that becomes the connection's output, once, when
    /// the loop ends (`commit_replies`), and are written from there. Anything else it asks
    /// for (a broadcast, a close, a file) is carried out at once, after the replies before it.
    fn handle_messages<'m>(
        &mut self,
        key: usize,
        service: usize,
        framing: Framing,
        mut next: impl FnMut() -> Option<Result<&'m [u8], FrameError>>,
    ) {
        self.scratch.outbox.frame_replies(Some(framing));
        // Looked at once, not per message.
        let (timing, work) = (self.telemetry.recording.is_some(), self.limits.work_per_message);
        let busy = !work.is_zero();
        'messages: while let Some(conn) = self.conns.get(key).filter(|conn| conn.takes_requests()) {
            let from = Peer { id: ConnId(key), addr: conn.peer() };
            let handler = &mut self.services[service].handler;
            // As long as the handler only replies, nothing else is touched.
            let asked = loop {
                let message = match next() {
                    Some(Ok(message)) => message,
                    None => break 'messages,
                    Some(Err(error)) => break Asked::BadInput(error),
                };
                self.telemetry.stats.messages_in += 1;
                // Only while recording a timeline: otherwise one branch per message.
                let started = timing.then(std::time::Instant::now);
                if busy {
                    crate::handlers::work::busy_work(work);
                }
                handler.on_message(from, message, &mut self.scratch.outbox);
                if self.scratch.outbox.has_intents() {
                    break Asked::More { started, len: message.len() };
                }
                if let Some(started) = started {
                    if let Some(recording) = &mut self.telemetry.recording {
                        recording.message(key, started, message.len());
                    }
                }
            };
            match asked {
                Asked::More { started, len } => {
                    self.carry_out(key, service);
                    if let (Some(recording), Some(started)) = (&mut self.telemetry.recording, started) {
                        recording.message(key, started, len);
                    }
                }
                Asked::BadInput(error) => self.reply_frame_error(key, service, &error),
            }
        }
        self.scratch.outbox.frame_replies(None);
        self.commit_replies(key);
    }

    /// Answers malformed input with `ERR ...`; the connection carries on.
    fn reply_frame_error(&mut self, key: usize, service: usize, error: &FrameError) {
        self.telemetry.stats.frame_errors += 1;
        if let Some(held_back) = self.telemetry.misbehaving_log.allow(std::time::Instant::now()) {
            if let Some(conn) = self.conns.get(key) {
                warn!("bad input; conn={key} peer={} error={error} repeats={held_back}", conn.peer());
            }
        }
        self.scratch.outbox.reply_with(|buf| {
            use std::io::Write as _;
            let _ = write!(buf, "ERR {error}");
        });
        self.carry_out(key, service);
    }

    /// The client half-closed: a non-empty incomplete tail is its last message, then the
    /// connection closes once its replies are written. A connection not served yet (its
    /// preamble or handshake unfinished) just closes.
    fn end_of_stream(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        let partial = conn.take_partial_input();
        let tail = partial.as_deref().unwrap_or_default();
        if conn.awaits_preamble() {
            // Half a PROXY header: nothing to serve.
        } else if let Some(mut decoder) = conn.decoder() {
            let service = conn.service();
            let mut last = Some(decoder.finish(tail, self.limits.max_frame));
            let framing = self.services[service].codec.into();
            self.handle_messages(key, service, framing, || last.take().and_then(Result::transpose));
            if let Some(conn) = self.conns.get_mut(key) {
                conn.set_decoder(decoder);
            }
        } else if let Some(session) = conn.session() {
            let mut events = mem::take(&mut self.scratch.session);
            session.finish(tail, &mut events);
            self.carry_out_session(key, &events);
            events.clear();
            self.scratch.session = events;
        }
        if let Some(partial) = partial {
            self.scratch.pool.give(partial);
        }
        self.stop_reading(key, StopReason::PeerClosed);
    }
}
