//! Input: read from a ready connection, decode its messages, hand each to the handler.
//!
//! Every connection reads into the reactor's one shared buffer. Complete messages are handled
//! straight from it; only an incomplete tail is copied into a buffer of the connection's own,
//! which goes back to the pool as soon as the message completes.

use std::mem;

use log::warn;

use super::connection::StopReason;
use super::{CloseReason, READS_PER_TURN, Reactor};
use crate::codec::{Decoder, FrameError};
use crate::handlers::{ConnId, Peer};
use crate::sys::nonblocking::{interrupted, would_block};

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
        let mut buffer = mem::take(&mut self.read_buf);
        let chunk = self.services[conn.service()].codec.read_limit(self.limits.max_frame, buffer.len());
        let mut reads = 0;
        // Looked up again on every pass: handling a message may close the connection.
        while let Some(conn) = self.conns.get_mut(key) {
            if !conn.takes_requests() {
                break;
            }
            if conn.pause_if_backed_up(self.limits.max_output) {
                // It is not reading its replies: stop reading its requests until it does.
                self.stats.reading_paused += 1;
                self.queue_flush(key);
                break;
            }
            if reads == READS_PER_TURN {
                // Bytes may still be waiting, and no new edge will say so: come back later.
                self.owe_read(key);
                break;
            }
            match conn.read(&mut buffer[..chunk], self.now_tick) {
                Ok(0) => {
                    self.end_of_stream(key);
                    break;
                }
                Ok(n) => {
                    reads += 1;
                    self.stats.bytes_in += n as u64;
                    self.handle_input(key, &buffer[..n]);
                    if n < chunk && !drain {
                        break;
                    }
                }
                Err(error) if would_block(&error) => break,
                Err(error) if interrupted(&error) => continue,
                Err(error) => {
                    self.close_later(key, CloseReason::Error(error));
                    break;
                }
            }
        }
        self.read_buf = buffer;
        // Write its replies now, in one write, rather than at the end of the turn: the
        // client can start on them while this thread serves the others. (Measured: up to
        // 13% more throughput at 10,000 connections; docs/benchmarks.md.)
        if self.conns.get(key).is_some_and(|conn| conn.is_queued_for_flush()) {
            self.flush(key);
        }
    }

    /// Decodes `bytes` (after any incomplete tail kept from before), handles each message,
    /// and keeps what is left of an incomplete one.
    pub(super) fn handle_input(&mut self, key: usize, bytes: &[u8]) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if conn.awaits_proxy_header() {
            return self.take_proxy_header(key, bytes);
        }
        let (service, mut decoder) = (conn.service(), conn.decoder());
        let leftover = match conn.take_partial_input() {
            None => {
                let used = self.decode_and_handle(key, service, &mut decoder, bytes);
                let tail = &bytes[used..];
                // Most reads end on a message boundary: a buffer is taken only for a tail
                // that will be read on.
                let keeps = !tail.is_empty() && self.conns.get(key).is_some_and(|conn| conn.wants_read());
                keeps.then(|| {
                    let mut partial = self.pool.take();
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
                    conn.keep_partial_input(partial, &mut self.pool);
                    let kept = conn.partial_input_len();
                    if kept > 0 {
                        self.watch_unterminated(key, kept);
                    }
                }
            }
            None => leftover.into_iter().for_each(|partial| self.pool.give(partial)),
        }
    }

    /// Behind a balancer: the connection's first bytes are a PROXY header. Until it is all
    /// there they wait in the connection's input; then the real client's address replaces
    /// the balancer's, the handler hears of the connection, and what followed the header is
    /// handled as usual. A connection without a valid header is closed, never served with
    /// the wrong address.
    fn take_proxy_header(&mut self, key: usize, bytes: &[u8]) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        let mut input = conn.take_partial_input().unwrap_or_else(|| self.pool.take());
        input.extend_from_slice(bytes);
        match crate::codec::proxy::parse(&input) {
            Ok(None) => conn.keep_partial_input(input, &mut self.pool),
            Ok(Some(header)) => {
                conn.proxy_header_received(header.source);
                input.drain(..header.length);
                conn.keep_partial_input(input, &mut self.pool);
                self.greet(key);
                // What the client sent after the header is in the kept input.
                self.handle_input(key, &[]);
            }
            Err(error) => {
                self.pool.give(input);
                if let Some(held_back) = self.misbehaving_log.allow(std::time::Instant::now()) {
                    warn!(
                        "closing a connection without a valid PROXY header; conn={key} peer={} error={error} repeats={held_back}",
                        conn.peer()
                    );
                }
                self.close_later(key, CloseReason::Error(std::io::Error::other(error.to_string())));
            }
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
        let max_frame = self.limits.max_frame;
        let mut rest = input;
        // A handler may close the connection mid-batch (its later messages are dropped), or
        // start a file (its later messages wait in its kept input until the file is out).
        while self.conns.get(key).is_some_and(|conn| conn.takes_requests()) {
            match decoder.decode(&mut rest, max_frame) {
                Ok(Some(message)) => self.handle_message(key, service, message),
                Ok(None) => break,
                Err(error) => self.reply_frame_error(key, service, &error),
            }
        }
        input.len() - rest.len()
    }

    /// Gives one message to the service's handler and carries out what it asks.
    fn handle_message(&mut self, key: usize, service: usize, message: &[u8]) {
        self.stats.messages_in += 1;
        let Some(conn) = self.conns.get(key) else { return };
        let from = Peer { id: ConnId(key), addr: conn.peer() };
        // Only while recording a timeline: otherwise this is one branch per message.
        let started = self.recording.is_some().then(std::time::Instant::now);
        crate::handlers::work::busy_work(self.limits.work_per_message);
        self.services[service].handler.on_message(from, message, &mut self.outbox);
        self.carry_out(key, service);
        if let (Some(recording), Some(started)) = (&mut self.recording, started) {
            recording.message(key, started, message.len());
        }
    }

    /// Answers malformed input with `ERR ...`; the connection carries on.
    fn reply_frame_error(&mut self, key: usize, service: usize, error: &FrameError) {
        self.stats.frame_errors += 1;
        if let Some(held_back) = self.misbehaving_log.allow(std::time::Instant::now()) {
            if let Some(conn) = self.conns.get(key) {
                warn!("bad input; conn={key} peer={} error={error} repeats={held_back}", conn.peer());
            }
        }
        self.outbox.reply_with(|buf| {
            use std::io::Write as _;
            let _ = write!(buf, "ERR {error}");
        });
        self.carry_out(key, service);
    }

    /// The client half-closed: a non-empty incomplete tail is its last message, then the
    /// connection closes once its replies are written.
    fn end_of_stream(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        let partial = conn.take_partial_input();
        let (service, mut decoder) = (conn.service(), conn.decoder());
        let tail = partial.as_deref().unwrap_or_default();
        match decoder.finish(tail, self.limits.max_frame) {
            Ok(Some(message)) => self.handle_message(key, service, message),
            Ok(None) => {}
            Err(error) => self.reply_frame_error(key, service, &error),
        }
        if let Some(partial) = partial {
            self.pool.give(partial);
        }
        if let Some(conn) = self.conns.get_mut(key) {
            conn.set_decoder(decoder);
        }
        self.stop_reading(key, StopReason::PeerClosed);
    }
}
