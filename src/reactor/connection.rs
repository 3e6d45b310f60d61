//! One client connection, and its turn.
//!
//! A [`Connection`] is its stack of layers (socket, transport, protocol; the preamble is a
//! flag until it has come), the undecoded tail of its input, its pending output, and the few
//! flags the reactor derives its poll interest from. An idle connection holds no buffer at
//! all (both are empty and went back to the pool), which is what lets one reactor hold many
//! thousands of them in little memory. Its fields are private: every rule about its state is
//! a method here (or in the child modules: `preparing.rs`, `closing.rs`, `session.rs`,
//! `transfer.rs`), so the reactor's phases ask and tell rather than flip flags.
//!
//! A [`Turn`] is what happens when its socket is ready: read -> decode -> handle -> write ->
//! settle, in one place, borrowing the connection, its service, the shared buffers, the
//! queues, the counters, the limits and the clocks. What concerns others (carrying out a
//! handler's intents, serving a connection whose handshake is done, its room's lines) it
//! hands back to the loop as a [`Next`]; for an echo client there is none, and the whole
//! turn runs here. docs/architecture.md follows one echoed byte through it.
//!
//! Every read and write of its socket goes through the transport and the one I/O gate
//! (`sys::socket::gate`): `WouldBlock` and `Interrupted` are turned into control flow in one
//! place.

mod closing;
mod preparing;
mod session;
mod transfer;

use std::io::{self, IoSlice, Read as _};

use mio::{Interest, Registry, Token};

use super::budget::Budget;
use super::buffer_pool::BufferPool;
use super::parts::{Clocks, Queues, Scratch, Telemetry};
use super::{CloseReason, HANDSHAKES_PER_TURN, READS_PER_TURN, Service};
use crate::codec::{Codec, Decoder, FrameError, Framing, Notice, Protocol, Session};
use crate::config::Limits;
use crate::handlers::serve::{Flow, Serving, serve};
use crate::handlers::{ConnId, Outbox, Peer};
use crate::sys::address::PeerAddr;
use crate::sys::socket::{Stream, gate, write_until_full};
use crate::transport::{Received, Transport};

pub(crate) use closing::LINGER_TIMEOUT;
pub use transfer::FileTransfer;

/// In `Stage::Ready`'s `room_wait`: its history is being read.
const JOINING: u8 = 0x80;
/// In `Stage::Ready`'s `room_wait`: the count of answers due (at most 127).
const QUESTIONS: u8 = 0x7f;

/// Whether the reactor reads from a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reading {
    /// Reading normally.
    Open,
    /// Not reading for now: its pending output is over `max_output`. Reading resumes when the
    /// output drains below half of that (a low-water mark, so it does not flap).
    Paused,
    /// Never reading again; the connection closes once its pending output is written.
    Stopped(StopReason),
    /// All written and our side shut down (FIN sent); reading on only to discard what the
    /// client still sends, until it closes or the deadline (ms since the reactor started).
    /// Closing with unread input would make the kernel reset the connection and throw away
    /// replies it had not delivered yet (see `connection/closing.rs`).
    Lingering {
        /// When to give up and close anyway.
        until: Stamp,
        /// Why it stopped, for the count of closes by reason.
        reason: StopReason,
    },
    /// Told, in its protocol, why it goes (too slow: a WebSocket close 1008; evicted, its
    /// output dropped: `ERR evicted`, 1013) after what is queued for it: nothing more is read
    /// or sent, and it is cut at `until` if it has not read that by then.
    Told {
        /// When to cut it.
        until: Stamp,
        /// Why (`TooSlow`, `Evicted`), for the count of closes by reason.
        reason: StopReason,
    },
}

/// A deadline's low 32 bits (in ms since the reactor started): kept in the connection only to
/// tell its own entry on a deadline queue from a later connection's with the same key. The
/// two could match only if 49 days apart, and every entry comes due within seconds. Four
/// bytes rather than eight keep the slab entry at 184 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp(u32);

impl Stamp {
    fn of(until_ms: u64) -> Stamp {
        Stamp(until_ms as u32)
    }
}

/// Whether the layers below the handler are all done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Some layer is not done yet (the PROXY header has not come; a handshake is under
    /// way): the handler has not heard of it, it is in no room, and it is cut off if it is
    /// not ready by `until_ms` (ms since the reactor started, `--handshake-timeout`).
    Preparing {
        /// The deadline.
        until: Stamp,
    },
    /// Served: its handler knows it, and it is a member of its room.
    Ready {
        /// What it waits for from the engine its room is shared over (`record.rs`): the
        /// count of questions its handler asked for it not answered yet (its later messages
        /// wait, kept, until the last answer is carried out), and [`JOINING`]: its history
        /// is being read (the room's lines are held for it, not written to it, and its
        /// handler has not heard of it yet). Here, beside the deadline it replaces, the slab
        /// entry stays at 184 bytes.
        room_wait: u8,
    },
}

/// Why a connection stopped reading (and will close once flushed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The client half-closed (end of stream).
    PeerClosed,
    /// The handler asked to close it.
    HandlerClosed,
    /// Its protocol ended it (a WebSocket close, a handshake refused).
    ProtocolClosed,
    /// It did not answer its protocol's ping (`--ws-ping`).
    PingTimeout,
    /// It did not read what others sent it, and was told so (`Reading::Told`).
    TooSlow,
    /// The server is shutting down.
    Shutdown,
    /// All clients held more than `--max-client-memory`, and it held the most (`budget.rs`).
    Evicted,
}

/// Bytes waiting for the socket to take them. The buffer comes from the pool when output
/// first backs up and goes back as soon as it is all written.
#[derive(Debug, Default)]
struct PendingOutput {
    buffer: Option<Vec<u8>>,
    /// How much of `buffer` is already written.
    written: usize,
}

impl PendingOutput {
    /// Bytes not written yet.
    fn len(&self) -> usize {
        self.buffer.as_ref().map_or(0, |buffer| buffer.len() - self.written)
    }

    /// Whether nothing is waiting.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The buffer to append new output to, taken from the pool if there is none.
    fn buffer(&mut self, pool: &mut BufferPool) -> &mut Vec<u8> {
        let buffer = self.buffer.get_or_insert_with(|| pool.take());
        // Drop the written front now and then, so a connection that always has some output
        // pending does not grow its buffer forever.
        if self.written > 0 && self.written >= buffer.len() / 2 {
            buffer.drain(..self.written);
            self.written = 0;
        }
        buffer
    }

    /// Writes with `send` until all is written or the socket is full; returns the bytes
    /// written. Writing on to `WouldBlock` (rather than stopping at a short write) costs a
    /// syscall only when the socket is really full, and then the caller asks for `WRITABLE`.
    #[inline]
    fn write_with(
        &mut self,
        pool: &mut BufferPool,
        send: impl FnMut(&[u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let Some(buffer) = &self.buffer else { return Ok(0) };
        let written = write_until_full(&buffer[self.written..], send)?;
        self.written += written;
        if self.written == buffer.len() {
            self.release(pool);
        }
        Ok(written)
    }

    /// Drops the written front and the slack.
    fn shrink(&mut self) {
        if let Some(buffer) = &mut self.buffer {
            buffer.drain(..self.written);
            self.written = 0;
            buffer.shrink_to_fit();
        }
    }

    /// Gives the buffer back to the pool, dropping anything unwritten.
    fn release(&mut self, pool: &mut BufferPool) {
        if let Some(buffer) = self.buffer.take() {
            pool.give(buffer);
        }
        self.written = 0;
    }

    /// Frees the buffer, dropping anything unwritten (memory is short).
    fn free(&mut self, pool: &mut BufferPool) {
        if let Some(buffer) = self.buffer.take() {
            pool.free(buffer);
        }
        self.written = 0;
    }
}

/// One client connection, stored in the reactor's slab; its key is its `mio::Token`.
///
/// Its fields are private: every rule about its state (when it is ready, when reading pauses
/// and resumes, how it stops, lingers and closes, when it counts as a slow consumer) is a
/// method here, so the reactor's phases ask and tell rather than flip flags.
#[derive(Debug)]
pub struct Connection {
    /// The socket.
    stream: Stream,
    /// What turns the socket's bytes into plaintext and back.
    transport: Transport,
    /// The codec's state between reads: a few bytes, or a session (boxed).
    protocol: Protocol,
    /// Who the client is.
    peer: PeerAddr,
    /// Which service (handler and codec) it belongs to (at most `MAX_LISTENERS`; a u16
    /// leaves room for `held` in a slab entry of 184 bytes).
    service: u16,
    /// Where it sits in its room's member list once ready, so leaving the room is O(1).
    /// (Both u32: a slab entry of 184 bytes, not 192.)
    member_index: u32,
    /// Whether every layer below the handler is done.
    stage: Stage,
    /// The undecoded tail of an incomplete message (or of a PROXY header), if there is one.
    partial_input: Option<Vec<u8>>,
    /// Replies and messages not written yet.
    output: PendingOutput,
    /// Whether it is being read.
    reading: Reading,
    /// Its pending output holds messages other clients caused (a broadcast): if that backs
    /// up, pausing its reading would not help, so it is dropped instead. Cleared when the
    /// output is all written.
    holds_pushed_output: bool,
    /// The interest it is registered with now, to re-register only on change.
    registered: Interest,
    /// Already on the reactor's flush queue for this wakeup.
    queued_for_flush: bool,
    /// Already on the reactor's list of connections owed a read.
    owed_read: bool,
    /// Scheduled to close at the end of this wakeup; ignore it until then.
    closing: bool,
    /// Behind a balancer (`--proxy-protocol`): its first bytes are a PROXY header naming the
    /// real client (the preamble layer, `preamble.rs`), and nothing above it is served until
    /// it has come.
    awaits_preamble: bool,
    /// The idle-timer tick of its last activity (bytes in or out).
    last_active: u64,
    /// The idle timer slot its entry sits in.
    timer_slot: u32,
    /// The keepalive timer slot its entry sits in (`keepalive.rs`; a session's only).
    keepalive_slot: u32,
    /// A file being sent (or waiting for its turn), after the pending output. Boxed: most
    /// connections never send one, and the slab entry stays small.
    file: Option<Box<FileTransfer>>,
    /// The bytes it held when last counted towards `--max-client-memory` (`budget.rs`).
    held: u32,
}

/// What writing left a connection to do, decided by [`Connection::settle_output`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    /// Nothing changed but perhaps its poll interest.
    Unchanged,
    /// Its output passed `max_output`: reading paused (backpressure).
    Paused,
    /// Its output drained below half of `max_output`: reading resumed. Bytes it sent while
    /// paused raised their edge long ago, so the reactor must read it without an event.
    Resumed,
    /// It stopped reading and everything is written: close it (perhaps after lingering).
    Finished(StopReason),
    /// What other clients sent it is still over `max_output` with the socket full: drop it.
    SlowConsumer,
}

impl Connection {
    /// A freshly accepted connection of `service`, registered for reading, with the layers
    /// `transport` and `protocol`, active at idle-wheel tick `now_tick`. It starts
    /// preparing until `until_ms`; [`is_ready_to_serve`](Self::is_ready_to_serve) says when
    /// every layer is done.
    pub fn new(
        stream: Stream,
        peer: PeerAddr,
        service: usize,
        (transport, protocol): (Transport, Protocol),
        awaits_preamble: bool,
        (now_tick, until_ms): (u64, u64),
    ) -> Connection {
        Connection {
            stream,
            transport,
            protocol,
            peer,
            service: u16::try_from(service).expect("at most MAX_LISTENERS services"),
            member_index: 0,
            stage: Stage::Preparing { until: Stamp::of(until_ms) },
            partial_input: None,
            output: PendingOutput::default(),
            reading: Reading::Open,
            holds_pushed_output: false,
            registered: Interest::READABLE,
            queued_for_flush: false,
            owed_read: false,
            closing: false,
            awaits_preamble,
            last_active: now_tick,
            timer_slot: 0,
            keepalive_slot: 0,
            file: None,
            held: 0,
        }
    }

    /// Who the client is.
    pub fn peer(&self) -> &PeerAddr {
        &self.peer
    }

    /// Which service it belongs to.
    pub fn service(&self) -> usize {
        self.service as usize
    }

    /// Whether it is served: its handler knows it and it is in its room.
    #[inline]
    pub fn is_ready(&self) -> bool {
        matches!(self.stage, Stage::Ready { .. })
    }

    /// Whether every layer below the handler is done, so that it may now be served.
    pub fn is_ready_to_serve(&self) -> bool {
        !self.is_ready()
            && !self.closing
            && !self.awaits_preamble
            && self.transport.is_ready()
            && self.protocol.is_ready()
    }

    /// Whether its room's lines are written to it: it accepts messages, and is not a
    /// newcomer whose history is being read (they are held for it meanwhile).
    #[inline]
    pub fn takes_room_lines(&self) -> bool {
        self.accepts_messages() && !self.is_joining()
    }

    /// Whether messages may be sent to it: served, not closing, not told why it goes (too
    /// slow, evicted), not lingering (its sending side is shut down: a write would fail
    /// with a broken pipe), and its protocol not closed (after a WebSocket close frame,
    /// nothing more).
    #[inline]
    pub fn accepts_messages(&self) -> bool {
        self.is_ready()
            && !self.closing
            && !matches!(self.reading, Reading::Told { .. } | Reading::Lingering { .. })
            && self.protocol.accepts_messages()
    }

    /// How messages to it are framed, its listener framing with `codec` (a WebSocket member
    /// that agreed to compression gets compressed frames).
    #[inline]
    pub fn framing(&self, codec: Codec) -> Framing {
        self.protocol.framing(codec)
    }

    /// Whether its protocol compresses what is sent to it (so it needs frames of its own).
    #[inline]
    pub fn compresses(&self) -> bool {
        matches!(&self.protocol, Protocol::Session(session) if session.compression().is_some())
    }

    /// Whether its PROXY header has still to come.
    pub fn awaits_preamble(&self) -> bool {
        self.awaits_preamble
    }

    /// Bytes just read (after the preamble) through its transport: where their plaintext
    /// is (see `Transport::receive`).
    #[inline]
    pub fn receive(&mut self, raw: &[u8], plain: &mut Vec<u8>) -> io::Result<Received> {
        self.transport.receive(&mut self.stream, raw, plain)
    }

    /// Whether its transport's handshake is under way.
    pub fn is_handshaking(&self) -> bool {
        self.transport.is_handshaking()
    }

    /// Whether its transport has records waiting to be written (a handshake's answer).
    pub fn transport_wants_write(&self) -> bool {
        self.transport.wants_write()
    }

    /// Its session, if its protocol has one.
    pub fn session(&mut self) -> Option<&mut dyn Session> {
        match &mut self.protocol {
            Protocol::Session(session) => Some(session.as_mut().as_mut()),
            Protocol::Frames(_) => None,
        }
    }

    /// Its stateless decoder, copied out (the fast path); `None` for a session.
    #[inline]
    pub fn decoder(&self) -> Option<Decoder> {
        match self.protocol {
            Protocol::Frames(decoder) => Some(decoder),
            Protocol::Session(_) => None,
        }
    }

    /// Keeps the stateless decoder's state for the next read.
    #[inline]
    pub fn set_decoder(&mut self, decoder: Decoder) {
        self.protocol = Protocol::Frames(decoder);
    }

    /// Writes `notice` in its protocol (framed with `codec`) onto its output; false if the
    /// protocol has nothing to say, or it is not served yet (a client still in its
    /// handshake hears nothing but what its protocol says before the handshake).
    pub fn push_notice(&mut self, codec: Codec, notice: Notice, pool: &mut BufferPool) -> bool {
        let mut bytes = Vec::new();
        if !self.protocol.notice(codec, notice, &mut bytes) {
            return false;
        }
        self.output.buffer(pool).extend_from_slice(&bytes);
        true
    }

    /// Whether the reactor should read from it now.
    pub fn wants_read(&self) -> bool {
        self.reading == Reading::Open && !self.closing
    }

    /// Whether it may read and handle requests now: reading, not in the middle of sending a
    /// file, and no answer from the room due (later requests wait their turn, in its kept
    /// input).
    pub fn takes_requests(&self) -> bool {
        self.wants_read() && self.file.is_none() && !self.awaits_answer()
    }

    /// Its handler asked the room something for it that the engine answers later: its
    /// requests wait until then.
    pub fn await_answer(&mut self) {
        if let Stage::Ready { room_wait } = &mut self.stage {
            if *room_wait & QUESTIONS < QUESTIONS {
                *room_wait += 1;
            }
        }
    }

    /// An answer for it was carried out: true if no other is due (its requests that waited
    /// may be served).
    pub fn answered(&mut self) -> bool {
        if let Stage::Ready { room_wait } = &mut self.stage {
            if *room_wait & QUESTIONS > 0 {
                *room_wait -= 1;
            }
        }
        !self.awaits_answer()
    }

    /// Whether an answer from the room is due for it.
    #[inline]
    pub fn awaits_answer(&self) -> bool {
        matches!(self.stage, Stage::Ready { room_wait } if room_wait & QUESTIONS > 0)
    }

    /// It joined its room, but the engine is reading its history: the room's lines are
    /// held for it until [`joined`](Self::joined).
    pub fn start_joining(&mut self) {
        if let Stage::Ready { room_wait } = &mut self.stage {
            *room_wait |= JOINING;
        }
    }

    /// Its history came: the room's lines are written to it from now on.
    pub fn joined(&mut self) {
        if let Stage::Ready { room_wait } = &mut self.stage {
            *room_wait &= !JOINING;
        }
    }

    /// Whether its history is being read (its handler has not heard of it yet).
    #[inline]
    pub fn is_joining(&self) -> bool {
        matches!(self.stage, Stage::Ready { room_wait } if room_wait & JOINING != 0)
    }

    /// Whether its file is open (holds a slot of `--max-file-sends`).
    pub fn file_is_open(&self) -> bool {
        self.file.as_ref().is_some_and(|transfer| transfer.file.is_some())
    }

    /// Whether its transport holds plaintext not read yet, which no event will announce.
    pub fn has_plaintext_waiting(&self) -> bool {
        self.transport.has_plaintext_waiting()
    }

    /// Whether it is lingering: written out and shut down, its input only discarded.
    pub fn is_lingering(&self) -> bool {
        matches!(self.reading, Reading::Lingering { .. })
    }

    /// Stops reading its requests if its replies (pending, and `unwritten` more of this
    /// turn's, not written yet) are over `max_output` (it is not reading them); true if it
    /// paused. Reading resumes in [`settle_output`](Self::settle_output).
    pub fn pause_if_backed_up(&mut self, max_output: usize, unwritten: usize) -> bool {
        if self.reading == Reading::Open && self.pending_len() + unwritten > max_output {
            self.reading = Reading::Paused;
            return true;
        }
        false
    }

    /// Reads from its socket (raw bytes: the preamble and the transport come next);
    /// `Ok(None)`: nothing there now. Counts as activity.
    #[inline]
    pub fn read(&mut self, buffer: &mut [u8], now_tick: u64) -> io::Result<Option<usize>> {
        let read = gate(|| self.stream.read(buffer))?;
        if read.is_some_and(|read| read > 0) {
            self.last_active = now_tick;
        }
        Ok(read)
    }

    /// Takes the undecoded tail kept from earlier reads, if any.
    pub fn take_partial_input(&mut self) -> Option<Vec<u8>> {
        self.partial_input.take()
    }

    /// The length of the undecoded tail kept from earlier reads.
    pub fn partial_input_len(&self) -> usize {
        self.partial_input.as_ref().map_or(0, Vec::len)
    }

    /// Keeps an undecoded tail for the next read, if it will read again; otherwise the
    /// buffer goes back to the pool.
    pub fn keep_partial_input(&mut self, partial: Vec<u8>, pool: &mut BufferPool) {
        if partial.is_empty() || !self.wants_read() {
            return pool.give(partial);
        }
        self.partial_input = Some(partial);
    }

    /// Frames `payload` as its listener's `codec` does for it onto its pending output.
    /// `pushed`: another client caused it (see [`Settled::SlowConsumer`]).
    pub fn push_output(&mut self, codec: Codec, payload: &[u8], pushed: bool, pool: &mut BufferPool) {
        let framing = self.framing(codec);
        framing.encode(payload, self.output.buffer(pool));
        self.holds_pushed_output |= pushed;
    }

    /// Appends `bytes` as they are (its protocol's own: a handshake's answer, a pong).
    pub fn push_raw(&mut self, bytes: &[u8], pool: &mut BufferPool) {
        self.output.buffer(pool).extend_from_slice(bytes);
    }

    /// Whether output waits to be written before anything new: bytes, or a file.
    pub fn has_output_waiting(&self) -> bool {
        !self.output.is_empty() || self.file.is_some() || self.transport.waiting() > 0
    }

    /// Bytes for it in `slices` of a buffer it does not own (its turn's replies in the
    /// outbox, room lines in the buffer the room's members share: `room.rs`): sent straight
    /// from there (one `write`, or `sendmsg` for several slices) when nothing else waits to be
    /// written before them and the transport passes bytes through, so that only what the
    /// socket does not take is copied, into its pending output. `pushed`: another client
    /// caused them (see [`Settled::SlowConsumer`]). Returns the bytes written; what was
    /// copied goes out in the flush.
    #[inline]
    pub fn write_shared(
        &mut self,
        slices: &mut [IoSlice<'_>],
        pushed: bool,
        pool: &mut BufferPool,
        now_tick: u64,
    ) -> io::Result<usize> {
        let mut written = 0;
        let mut slices = slices;
        if !self.has_output_waiting() && self.transport.passes_bytes_through() {
            while !slices.is_empty() {
                match gate(|| self.stream.send_slices(slices))? {
                    Some(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Some(n) => {
                        written += n;
                        IoSlice::advance_slices(&mut slices, n);
                    }
                    None => break,
                }
            }
            if written > 0 {
                self.last_active = now_tick;
            }
        }
        if !slices.is_empty() {
            let buffer = self.output.buffer(pool);
            for slice in slices.iter() {
                buffer.extend_from_slice(slice);
            }
            self.holds_pushed_output |= pushed;
        }
        Ok(written)
    }

    /// Appends the replies its handler framed in `outbox` to its output; returns how many.
    /// With nothing pending (the usual case) the outbox's buffer itself becomes its output,
    /// and the outbox gets a spare from the pool: the replies are written from where the
    /// handler built them.
    #[inline]
    pub fn take_replies(&mut self, outbox: &mut Outbox, pool: &mut BufferPool) -> u64 {
        if self.output.buffer.is_none() {
            let (replies, count) = outbox.take_replies(pool.take());
            self.output.buffer = Some(replies);
            return count;
        }
        outbox.move_replies_to(self.output.buffer(pool))
    }

    /// Writes what is pending, through its transport, until all is written or the socket is
    /// full; returns the plaintext bytes written, which count as activity.
    #[inline]
    pub fn write_pending(&mut self, pool: &mut BufferPool, now_tick: u64) -> io::Result<usize> {
        let (stream, transport) = (&mut self.stream, &mut self.transport);
        let written = self.output.write_with(pool, |bytes| transport.send(stream, bytes))?;
        self.transport.flush(&mut self.stream)?;
        if written > 0 {
            self.last_active = now_tick;
        }
        Ok(written)
    }

    /// The bytes it holds now between reads: its kept input, its pending output, and what
    /// its transport and protocol keep (`--max-client-memory` counts these).
    #[inline]
    pub fn held_now(&self) -> usize {
        self.partial_input.as_ref().map_or(0, Vec::capacity)
            + self.output.buffer.as_ref().map_or(0, Vec::capacity)
            + self.transport.held()
            + self.protocol.held()
    }

    /// The bytes it held when last counted, and sets what it holds now; (before, now).
    #[inline]
    pub fn recount(&mut self) -> (usize, usize) {
        let before = self.held as usize;
        let now = self.held_now();
        self.held = u32::try_from(now).unwrap_or(u32::MAX);
        (before, now)
    }

    /// Bytes waiting to be written (for the console).
    pub fn pending(&self) -> usize {
        self.pending_len()
    }

    /// Its transport, as the console names it.
    pub fn transport_name(&self) -> &'static str {
        if self.transport.passes_bytes_through() { "plain" } else { "tls" }
    }

    /// Where it stands, as the console names it.
    pub fn state_name(&self) -> &'static str {
        match (self.closing, self.stage, self.reading) {
            (true, _, _) => "closing",
            (_, Stage::Preparing { .. }, _) => "preparing",
            (_, _, Reading::Open) => "ready",
            (_, _, Reading::Paused) => "paused",
            (_, _, Reading::Stopped(_) | Reading::Told { .. }) => "stopping",
            (_, _, Reading::Lingering { .. }) => "lingering",
        }
    }

    /// The bytes it held when last counted.
    pub fn held(&self) -> usize {
        self.held as usize
    }

    /// Frees the slack in its buffers (nothing is lost): its kept input and pending output
    /// shrink to what they hold.
    pub fn shrink_buffers(&mut self) {
        if let Some(partial) = &mut self.partial_input {
            partial.shrink_to_fit();
        }
        self.output.shrink();
    }

    /// Bytes waiting to be written: its pending output and what waits inside its transport.
    fn pending_len(&self) -> usize {
        self.output.len() + self.transport.waiting()
    }

    /// After a write: applies the water marks around `max_output` and says what the reactor
    /// must do next.
    pub fn settle_output(&mut self, max_output: usize) -> Settled {
        let pending = self.pending_len();
        if let Reading::Told { reason, .. } = self.reading {
            // Its last word is queued: done once it has read it.
            return if pending == 0 { Settled::Finished(reason) } else { Settled::Unchanged };
        }
        if pending == 0 {
            self.holds_pushed_output = false;
        } else if pending > max_output && self.holds_pushed_output {
            // Checked after writing, not when appending: one turn's burst to a client that
            // reads fast is fine; still over the limit once the socket is full is not.
            return Settled::SlowConsumer;
        }
        match self.reading {
            Reading::Open if pending > max_output => {
                self.reading = Reading::Paused;
                Settled::Paused
            }
            Reading::Paused if pending <= max_output / 2 => {
                self.reading = Reading::Open;
                Settled::Resumed
            }
            // A file still to send keeps it open, whatever stopped its reading.
            Reading::Stopped(reason) if pending == 0 && self.file.is_none() => Settled::Finished(reason),
            _ => Settled::Unchanged,
        }
    }

    /// The poll interest its state calls for: readable while reading (or lingering),
    /// writable while output is pending (its own or its transport's). `None` when it wants
    /// neither, which means it is about to close.
    pub fn wanted_interest(&self) -> Option<Interest> {
        let reading = matches!(self.reading, Reading::Open | Reading::Lingering { .. });
        let read = reading.then_some(Interest::READABLE);
        let writing = !self.output.is_empty() || self.file_is_open() || self.transport.wants_write();
        let write = writing.then_some(Interest::WRITABLE);
        match (read, write) {
            (Some(read), Some(write)) => Some(read | write),
            (read, write) => read.or(write),
        }
    }

    /// Whether it is registered for `wanted` already.
    #[inline]
    pub fn is_registered_for(&self, wanted: Interest) -> bool {
        self.registered == wanted
    }

    /// Registers it for `wanted` under `token` unless it already is (each change is an
    /// `epoll_ctl` call); true if it changed.
    pub fn reregister(&mut self, registry: &Registry, token: Token, wanted: Interest) -> io::Result<bool> {
        if wanted == self.registered {
            return Ok(false);
        }
        registry.reregister(&mut self.stream, token, wanted)?;
        self.registered = wanted;
        Ok(true)
    }

    /// Puts it on the flush queue; false if it already is.
    pub fn queue_for_flush(&mut self) -> bool {
        !std::mem::replace(&mut self.queued_for_flush, true)
    }

    /// Whether it is on the flush queue.
    pub fn is_queued_for_flush(&self) -> bool {
        self.queued_for_flush
    }

    /// Takes it off the flush queue (it is being flushed).
    pub fn unqueue_for_flush(&mut self) {
        self.queued_for_flush = false;
    }

    /// Puts it on the owed list; false if it already is.
    pub fn owe_read(&mut self) -> bool {
        !std::mem::replace(&mut self.owed_read, true)
    }

    /// Whether it is to be removed at the end of the turn.
    pub fn is_closing(&self) -> bool {
        self.closing
    }
}

// ----- a connection's turn -----

/// Where a turn stands while the loop does something only the loop can do for it (see
/// [`Next`]): the loop keeps it, and the turn goes on from there.
#[derive(Clone, Copy, Debug)]
pub(super) struct Progress {
    /// Reads done, against [`READS_PER_TURN`].
    reads: usize,
    /// Read on to `WouldBlock` (no further edge will come: the end of the stream was
    /// announced, or the read is owed).
    drain: bool,
    /// No more reads this turn: the socket was drained, or reading stopped.
    read_done: bool,
    /// Input kept while the loop served the connection (its handshake done) waits to be
    /// decoded before anything new is read.
    kept_first: bool,
    /// A session's events not carried out yet: the index of the next one.
    events: Option<usize>,
    /// Reading is over: write what the turn produced.
    writing: bool,
    /// Under `--workers`, the metrics were stored for this write already.
    published: bool,
    /// The client closed its side: once its last messages are served, it stops reading.
    ended: bool,
    /// The turn found the clients over their memory budget once already (the loop evicted).
    over_budget: bool,
}

impl Progress {
    /// A turn that reads (`drain`: on to `WouldBlock`), then writes.
    pub fn reading(drain: bool) -> Progress {
        Progress {
            reads: 0,
            drain,
            read_done: false,
            kept_first: false,
            events: None,
            writing: false,
            published: false,
            ended: false,
            over_budget: false,
        }
    }

    /// A turn that only writes what the connection has pending (the flush phase).
    pub fn writing() -> Progress {
        Progress { writing: true, ..Progress::reading(false) }
    }

    /// A turn that first decodes the input the connection kept (its file is out, or it was
    /// just served), then reads.
    pub fn kept_input() -> Progress {
        Progress { kept_first: true, ..Progress::reading(true) }
    }
}

/// What a turn needs the loop to do before it can go on: what touches other connections, the
/// rooms or the whole server. The loop does it and gives the turn back its [`Progress`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub(super) enum Next {
    /// The turn is over.
    Done,
    /// The handler asked for more than replies (it waits in the outbox): carry it out.
    CarryOut,
    /// Every layer below the handler is done: serve the connection (its room, its
    /// handler's `on_connect`).
    Promote,
    /// Lines of its room wait to be written, and something else is about to reach it: they
    /// go first.
    ReleaseRoom,
    /// Under `--workers`: store the metrics before a reply leaves, so that a scrape another
    /// worker answers counts what this reply answers.
    Publish,
    /// Its file is out: free the file's slot, and serve the requests that waited.
    FileDone,
    /// All clients now hold more than `--max-client-memory`: evict the biggest holders
    /// (`budget.rs`).
    OverBudget,
}

/// One connection's turn: read -> decode -> handle -> write -> settle, in one place. It
/// borrows what it needs from the reactor (the connection, its service, the shared buffers,
/// the queues, the counters, the limits, the clocks) and hands back to the loop, as a
/// [`Next`], only what concerns others. For an echo client that is nothing: its whole turn
/// runs here.
pub(super) struct Turn<'r> {
    pub key: usize,
    pub conn: &'r mut Connection,
    pub service: &'r mut Service,
    /// Whether lines of the connection's room wait to be written (`room.rs`): anything else
    /// that reaches it must come after them.
    pub room_waiting: bool,
    pub scratch: &'r mut Scratch,
    pub queues: &'r mut Queues,
    /// What all clients hold (`budget.rs`): this one is counted again as its turn ends.
    pub budget: &'r mut Budget,
    pub telemetry: &'r mut Telemetry,
    pub limits: &'r Limits,
    pub clocks: &'r Clocks,
    pub registry: &'r Registry,
}

impl Turn<'_> {
    /// Goes on from `progress` until the turn is over or the loop must step in.
    pub fn go(mut self, progress: &mut Progress) -> Next {
        if !progress.writing {
            if let Some(next) = self.read(progress) {
                return next;
            }
            progress.writing = true;
        }
        let next = self.write(progress);
        // What it holds now, into the clients' total.
        if next == Next::Done && self.budget.count(self.conn) && !progress.over_budget {
            progress.over_budget = true;
            return Next::OverBudget;
        }
        next
    }

    /// Reads and handles what arrived; `Some` when the loop must step in first.
    ///
    /// Readiness is a hint: read until `WouldBlock`, or until a read comes back short, which
    /// means the kernel buffer was empty at that moment and any later bytes raise a new edge
    /// (this saves the syscall that would only say `WouldBlock`). `drain` asks for reading to
    /// `WouldBlock` regardless, for when no further edge is coming. At most
    /// [`READS_PER_TURN`] reads, then the connection is owed a turn and the others go first.
    fn read(&mut self, progress: &mut Progress) -> Option<Next> {
        if !self.scratch.parked.is_empty() && progress.events.is_none() && !self.conn.awaits_answer() {
            // Events that waited for an answer from the room (now carried out) first.
            if let Some((events, index)) = self.scratch.parked.remove(&self.key) {
                self.scratch.session = events;
                progress.events = Some(index);
            }
        }
        if let Some(index) = progress.events.take() {
            if let Some(next) = self.carry_out_events(index, progress) {
                return Some(next);
            }
        }
        if std::mem::take(&mut progress.kept_first) && self.conn.partial_input_len() > 0 {
            // Input kept while the loop stepped in: served first (after the end of the
            // stream, its last message too).
            let next = match progress.ended {
                false => self.take_input(&[], progress),
                true => self.end_of_stream(progress),
            };
            if next.is_some() {
                return next;
            }
        }
        if self.conn.is_lingering() {
            self.discard_input();
            return None;
        }
        if progress.reads == 0 && !progress.read_done && self.conn.is_handshaking() {
            // A TLS handshake step costs up to ~150 µs: a bounded number per turn.
            if self.queues.handshakes >= HANDSHAKES_PER_TURN {
                self.queues.owe_read(self.key, self.conn);
                return None;
            }
            self.queues.handshakes += 1;
        }
        let mut buffer = std::mem::take(&mut self.scratch.read);
        let next = self.read_into(&mut buffer, progress);
        self.scratch.read = buffer;
        if next.is_some() {
            return next;
        }
        if progress.ended && !self.conn.awaits_answer() {
            // Its last messages are served: it closes once its replies are written.
            self.stop_reading(StopReason::PeerClosed);
            return None;
        }
        if self.conn.has_plaintext_waiting() && self.conn.takes_requests() {
            // Decoded by the transport but not read yet: no event will say so.
            self.queues.owe_read(self.key, self.conn);
        }
        None
    }

    /// The reads themselves, into `buffer` (the shared read buffer, lent for the turn).
    fn read_into(&mut self, buffer: &mut [u8], progress: &mut Progress) -> Option<Next> {
        let chunk = self.service.codec.read_limit(self.limits.max_frame, buffer.len());
        while !progress.read_done && self.conn.takes_requests() {
            if self.conn.pause_if_backed_up(self.limits.max_output, self.scratch.outbox.replies().0.len()) {
                // It is not reading its replies: stop reading its requests until it does.
                self.telemetry.stats.reading_paused += 1;
                self.queues.flush(self.key, self.conn);
                break;
            }
            if progress.reads == READS_PER_TURN {
                // Bytes may still be waiting, and no new edge will say so: come back later.
                self.queues.owe_read(self.key, self.conn);
                break;
            }
            match self.conn.read(&mut buffer[..chunk], self.clocks.now_tick) {
                Ok(Some(0)) => {
                    (progress.read_done, progress.ended) = (true, true);
                    return self.end_of_stream(progress);
                }
                Ok(Some(n)) => {
                    progress.reads += 1;
                    progress.read_done = n < chunk && !progress.drain;
                    self.telemetry.stats.bytes_in += n as u64;
                    if let Some(next) = self.receive(&buffer[..n], progress) {
                        return Some(next);
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    self.close_later(CloseReason::Error(error));
                    break;
                }
            }
        }
        progress.read_done = true;
        None
    }

    /// Bytes just read, up the stack: the preamble while it has not come, then the
    /// transport, whose plaintext goes to the protocol.
    #[inline]
    fn receive(&mut self, raw: &[u8], progress: &mut Progress) -> Option<Next> {
        if self.conn.awaits_preamble() {
            return self.take_preamble(raw, progress);
        }
        let handshaking = self.conn.is_handshaking();
        let received = self.conn.receive(raw, &mut self.scratch.plain);
        if !self.conn.is_ready() {
            if self.conn.transport_wants_write() {
                // A handshake's answer: written this turn.
                self.queues.flush(self.key, self.conn);
            }
            if handshaking && !self.conn.is_handshaking() {
                self.telemetry.stats.tls_handshakes += 1;
            }
        }
        match received {
            Ok(Received::AsIs) => self.take_plaintext(raw, progress),
            Ok(Received::Decoded) => {
                let plain = std::mem::take(&mut self.scratch.plain);
                let next = self.take_plaintext(&plain, progress);
                self.scratch.plain = plain;
                self.scratch.plain.clear();
                next
            }
            Err(error) => {
                self.transport_failed(error);
                None
            }
        }
    }

    /// Plaintext up to the protocol; if the layers below just became ready (a TLS
    /// handshake ended), the connection is served first, and the plaintext waits for it.
    #[inline]
    fn take_plaintext(&mut self, plain: &[u8], progress: &mut Progress) -> Option<Next> {
        if self.conn.is_ready_to_serve() {
            self.keep_input(plain);
            progress.kept_first = true;
            return Some(Next::Promote);
        }
        if plain.is_empty() {
            return None;
        }
        self.take_input(plain, progress)
    }

    /// Decodes plaintext `bytes` (after any incomplete tail kept from before), serves each
    /// message, and keeps what is left of an incomplete one.
    fn take_input(&mut self, bytes: &[u8], progress: &mut Progress) -> Option<Next> {
        let Some(mut decoder) = self.conn.decoder() else {
            return self.session_input(bytes, progress);
        };
        if !self.conn.takes_requests() {
            // Sending a file: its later requests wait in its kept input until the file is
            // out (or it stopped: `keep_input` drops them).
            self.keep_input(bytes);
            return None;
        }
        let flow = match self.conn.take_partial_input() {
            None => {
                let (used, flow) = self.decode_and_serve(&mut decoder, bytes, false);
                // Most reads end on a message boundary: a buffer is taken only for a tail
                // that will be read on (or, after a question to the room, served once the
                // room has answered).
                self.keep_input(&bytes[used..]);
                flow
            }
            Some(mut partial) => {
                partial.extend_from_slice(bytes);
                let (used, flow) = self.decode_and_serve(&mut decoder, &partial, false);
                partial.drain(..used);
                self.conn.keep_partial_input(partial, &mut self.scratch.pool);
                self.watch_tail();
                flow
            }
        };
        self.conn.set_decoder(decoder);
        if flow == Flow::Pause {
            // What came after the question waits in the kept input for the answer.
            progress.kept_first = true;
        }
        self.scratch.outbox.has_intents().then_some(Next::CarryOut)
    }

    /// Serves every whole message at the front of `input` (and, `at_end`, the undecoded
    /// rest as a last one); returns the bytes used.
    #[inline]
    fn decode_and_serve(&mut self, decoder: &mut Decoder, input: &[u8], at_end: bool) -> (usize, Flow) {
        let framing = self.service.codec.into();
        let mut frames = decoder.frames(input, self.limits.max_frame);
        if at_end {
            frames = frames.to_the_end();
        }
        let flow = self.serve_messages(framing, &mut frames);
        (input.len() - frames.rest().len(), flow)
    }

    /// The serve step (`handlers/serve.rs`) over `messages`, replies framed as `framing`
    /// says straight into the outbox's buffer of replies, which the write sends from.
    #[inline]
    fn serve_messages<'m>(
        &mut self,
        framing: Framing,
        messages: &mut impl Iterator<Item = Result<&'m [u8], FrameError>>,
    ) -> Flow {
        let conn = &*self.conn;
        let from = Peer { id: ConnId(self.key), addr: conn.peer() };
        let outbox = &mut self.scratch.outbox;
        outbox.frame_replies(Some(framing));
        let mut counts =
            Counts { key: self.key, peer: conn.peer(), limits: self.limits, telemetry: &mut *self.telemetry };
        let flow = serve(self.service.handler.as_mut(), from, messages, outbox, &mut counts);
        outbox.frame_replies(None);
        flow
    }

    /// Keeps `tail`, the start of an incomplete message, for the next read (if it will be
    /// read on).
    fn keep_input(&mut self, tail: &[u8]) {
        if tail.is_empty() || !self.conn.wants_read() {
            return;
        }
        let mut partial = self.conn.take_partial_input().unwrap_or_else(|| self.scratch.pool.take());
        partial.extend_from_slice(tail);
        self.conn.keep_partial_input(partial, &mut self.scratch.pool);
        self.watch_tail();
    }

    /// A line listener keeping an unterminated tail: perhaps a course client waiting for an
    /// answer to a line it never ended (`hint.rs`).
    fn watch_tail(&mut self) {
        let kept = self.conn.partial_input_len();
        if kept > 0 && self.service.codec == Codec::Line {
            self.telemetry.raw_hint.watch(self.key, kept);
        }
    }

    /// Writes what the turn produced: the replies framed in the outbox (straight from its
    /// buffer, in one `write` for all the turn's replies), then whatever else is pending;
    /// then brings the connection's state and poll interest up to date.
    fn write(&mut self, progress: &mut Progress) -> Next {
        let replies = self.scratch.outbox.has_replies();
        if !replies && !self.conn.is_queued_for_flush() {
            return Next::Done;
        }
        if replies && self.room_waiting {
            return Next::ReleaseRoom;
        }
        if self.telemetry.shared_metrics.is_some() && !std::mem::replace(&mut progress.published, true) {
            return Next::Publish;
        }
        if replies {
            self.write_replies();
        }
        if self.conn.is_queued_for_flush() {
            self.conn.unqueue_for_flush();
            if let Some(next) = self.flush() {
                return next;
            }
        }
        self.settle();
        Next::Done
    }

    /// The replies framed in the outbox, written after whatever the connection has pending:
    /// straight from the outbox's buffer when nothing is (what the socket does not take is
    /// copied into the connection's output). Replies answer messages it sent before any
    /// close of its protocol, so they go out even if the protocol has closed since.
    fn write_replies(&mut self) {
        let (replies, count) = self.scratch.outbox.replies();
        if !self.conn.is_ready() || self.conn.is_closing() {
            self.scratch.outbox.discard_replies();
            return;
        }
        self.telemetry.stats.messages_out += count;
        let mut slices = [IoSlice::new(replies)];
        let sent = self.conn.write_shared(&mut slices, false, &mut self.scratch.pool, self.clocks.now_tick);
        self.scratch.outbox.discard_replies();
        match sent {
            Ok(written) => self.telemetry.stats.bytes_out += written as u64,
            Err(error) => return self.close_later(CloseReason::Error(error)),
        }
        if self.conn.has_output_waiting() {
            self.conn.queue_for_flush();
        }
    }

    /// Writes what is pending, then as much of its file as the socket takes.
    fn flush(&mut self) -> Option<Next> {
        if self.conn.is_closing() {
            return None;
        }
        match self.conn.write_pending(&mut self.scratch.pool, self.clocks.now_tick) {
            Ok(written) => self.telemetry.stats.bytes_out += written as u64,
            Err(error) => {
                self.close_later(CloseReason::Error(error));
                return None;
            }
        }
        if self.conn.file_is_open() {
            return self.send_file();
        }
        None
    }

    /// After a write: pauses or resumes reading around `max_output`, closes the connection
    /// if it is finished and written out (or a slow consumer), and re-registers it only if
    /// its interest changed (each change is an `epoll_ctl` call).
    pub fn settle(&mut self) {
        if self.conn.is_closing() {
            return;
        }
        let settled = self.conn.settle_output(self.limits.max_output);
        let wanted = self.conn.wanted_interest();
        match settled {
            Settled::SlowConsumer => return self.drop_slow_consumer(),
            Settled::Finished(reason) => return self.finish_stopped(reason),
            Settled::Paused => self.telemetry.stats.reading_paused += 1,
            Settled::Resumed | Settled::Unchanged => {}
        }
        // Asked here first: most writes leave the interest as it was, and then there is
        // nothing more to do.
        if let Some(wanted) = wanted.filter(|&wanted| !self.conn.is_registered_for(wanted)) {
            if !self.update_interest(wanted) {
                return;
            }
        }
        if settled == Settled::Resumed {
            // Bytes it sent while paused raised their edge long ago: read them now.
            self.queues.owe_read(self.key, self.conn);
        }
    }

    /// Registers the connection for `wanted`; false if that failed (it is then closing).
    fn update_interest(&mut self, wanted: Interest) -> bool {
        match self.conn.reregister(self.registry, Token(self.key), wanted) {
            Ok(changed) => {
                self.telemetry.stats.interest_changes += u64::from(changed);
                true
            }
            Err(error) => {
                log::error!("reregister failed; conn={} error={error}", self.key);
                self.close_later(CloseReason::Error(error));
                false
            }
        }
    }

    /// Marks the connection to be removed at the end of the turn.
    fn close_later(&mut self, reason: CloseReason) {
        self.queues.close(self.key, self.conn, reason);
    }
}

/// What the serve step counts and records for a connection: the reactor's counters, and its
/// timeline when one is recorded.
struct Counts<'r> {
    key: usize,
    peer: &'r PeerAddr,
    limits: &'r Limits,
    telemetry: &'r mut Telemetry,
}

impl Serving for Counts<'_> {
    #[inline]
    fn work(&self) -> std::time::Duration {
        self.limits.work_per_message
    }

    #[inline]
    fn received(&mut self) {
        self.telemetry.stats.messages_in += 1;
    }

    fn refused(&mut self, error: &FrameError) {
        self.telemetry.bad_input(self.key, self.peer, error);
    }

    #[inline]
    fn timing(&self) -> bool {
        self.telemetry.recording.is_some()
    }

    fn handled(&mut self, started: std::time::Instant, length: usize) {
        if let Some(recording) = &mut self.telemetry.recording {
            recording.message(self.key, started, length);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle connection must stay small: this struct is most of its user-space memory
    /// (issue goal: under 512 bytes per idle connection, all included).
    #[test]
    fn connection_stays_small() {
        // mio keeps a selector id beside each socket in debug builds only (`IoSource`): the
        // stream is 24 bytes there and 8 in what ships, which is what the goal is about.
        let debug_only = size_of::<Stream>() - size_of::<u64>();
        let size = size_of::<Option<Connection>>() - debug_only;
        println!("slab entry of a connection (release layout): {size} bytes");
        assert!(size <= 184, "a slab entry grew to {size} bytes");
    }
}
