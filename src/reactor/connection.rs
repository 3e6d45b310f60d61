//! One client connection: its stack of layers (socket, transport, protocol; the preamble is a
//! flag until it has come), the undecoded tail of its input, its pending output, and the
//! few flags the reactor derives its poll interest from.
//!
//! An idle connection holds no buffer at all (both are `None`/empty and went back to the
//! pool), which is what lets one reactor hold many thousands of them in little memory.
//!
//! Every read and write of its socket goes through the transport and the one I/O gate
//! (`sys::nonblocking::gate`): `WouldBlock` and `Interrupted` are turned into control flow in
//! one place.

use std::io::{self, IoSlice, Read as _};
use std::os::unix::fs::FileExt as _;

use mio::{Interest, Registry, Token};

use super::buffer_pool::BufferPool;
use crate::codec::{Codec, Decoder, Framing, Notice, Protocol, Session};
use crate::handlers::Outbox;
use crate::sys::address::PeerAddr;
use crate::sys::nonblocking::{gate, write_until_full};
use crate::sys::socket::Stream;
use crate::transport::Transport;

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
    /// replies it had not delivered yet (see `reactor/linger.rs`).
    Lingering {
        /// When to give up and close anyway.
        until: Stamp,
        /// Why it stopped, for the count of closes by reason.
        reason: StopReason,
    },
    /// Told, in its protocol, that it is too slow (a WebSocket close 1008) after what is
    /// queued for it: nothing more is read or sent, and it is cut at `until` if it has not
    /// read that by then.
    Told {
        /// When to cut it.
        until: Stamp,
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
    Ready,
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

    /// Gives the buffer back to the pool, dropping anything unwritten.
    fn release(&mut self, pool: &mut BufferPool) {
        if let Some(buffer) = self.buffer.take() {
            pool.give(buffer);
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
    /// Which service (handler and codec) it belongs to (at most `MAX_LISTENERS`).
    service: u32,
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
}

/// A file a connection is sending: `Intent::SendFile`, carried out.
#[derive(Debug)]
pub struct FileTransfer {
    /// The file; `None` while it waits for a free slot (see `--max-file-sends`).
    file: Option<std::fs::File>,
    path: std::path::PathBuf,
    /// The next byte to send, and the end (exclusive).
    offset: u64,
    end: u64,
}

/// How far a connection got with its file in one go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileProgress {
    /// All sent.
    Done,
    /// The socket is full: wait for `WRITABLE`.
    Blocked,
    /// This turn's share is spent; more next turn.
    Owed,
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
            service: service as u32,
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

    /// Where it sits in its room's member list.
    pub fn member_index(&self) -> usize {
        self.member_index as usize
    }

    /// Another member left and this one took its place in the list.
    pub fn moved_to(&mut self, member_index: usize) {
        self.member_index = member_index as u32;
    }

    // ----- the stack: ready when every layer below the handler is -----

    /// Whether it is served: its handler knows it and it is in its room.
    #[inline]
    pub fn is_ready(&self) -> bool {
        self.stage == Stage::Ready
    }

    /// Whether it is still preparing with the deadline `until_ms` (not served, not closed
    /// and reused since).
    pub fn prepares_until(&self, until_ms: u64) -> bool {
        self.stage == Stage::Preparing { until: Stamp::of(until_ms) }
    }

    /// Whether every layer below the handler is done, so that it may now be served.
    pub fn is_ready_to_serve(&self) -> bool {
        !self.is_ready() && !self.awaits_preamble && self.transport.is_ready() && self.protocol.is_ready()
    }

    /// It is served from now on, as member `member_index` of its room.
    pub fn serve(&mut self, member_index: usize) {
        self.stage = Stage::Ready;
        self.member_index = member_index as u32;
    }

    /// Whether messages may be sent to it: served, not closing, not told it is too slow,
    /// and its protocol not closed (after a WebSocket close frame, nothing more).
    #[inline]
    pub fn accepts_messages(&self) -> bool {
        self.is_ready()
            && !self.closing
            && !matches!(self.reading, Reading::Told { .. })
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

    /// The PROXY header came: the client is `source` (the balancer's own connection, a health
    /// check, names none: the address stays the balancer's).
    pub fn preamble_received(&mut self, source: Option<std::net::SocketAddr>) {
        self.awaits_preamble = false;
        if let Some(source) = source {
            self.peer = PeerAddr::Tcp(source);
        }
    }

    /// Bytes just read (after the preamble) through its transport: where their plaintext
    /// is (see `Transport::receive`).
    #[inline]
    pub fn receive(&mut self, raw: &[u8], plain: &mut Vec<u8>) -> io::Result<crate::transport::Received> {
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

    // ----- reading: open, paused, stopped, lingering -----

    /// Whether the reactor should read from it now.
    pub fn wants_read(&self) -> bool {
        self.reading == Reading::Open && !self.closing
    }

    /// Whether it may read and handle requests now: reading, and not in the middle of
    /// sending a file (later requests wait their turn, in its kept input).
    pub fn takes_requests(&self) -> bool {
        self.wants_read() && self.file.is_none()
    }

    /// Whether its transport holds plaintext not read yet, which no event will announce.
    pub fn has_plaintext_waiting(&self) -> bool {
        self.transport.has_plaintext_waiting()
    }

    // ----- files -----

    /// Queues a file to send after the pending output; it opens at [`open_file`](Self::open_file).
    pub fn queue_file(&mut self, path: std::path::PathBuf, offset: u64, length: u64) {
        self.file = Some(Box::new(FileTransfer { file: None, path, offset, end: offset + length }));
    }

    /// Whether it has a file queued or being sent.
    pub fn has_file(&self) -> bool {
        self.file.is_some()
    }

    /// Whether its file is open (holds a slot of `--max-file-sends`).
    pub fn file_is_open(&self) -> bool {
        self.file.as_ref().is_some_and(|transfer| transfer.file.is_some())
    }

    /// Opens its queued file.
    pub fn open_file(&mut self) -> io::Result<()> {
        let Some(transfer) = &mut self.file else { return Ok(()) };
        transfer.file = Some(std::fs::File::open(&transfer.path)?);
        Ok(())
    }

    /// Drops its file (sent, or the connection is going): true if it held an open slot.
    pub fn drop_file(&mut self) -> bool {
        self.file.take().is_some_and(|transfer| transfer.file.is_some())
    }

    /// Sends its open file, once the pending output is all written, up to `budget` bytes;
    /// the bytes sent go into `sent`. A transport that passes bytes through gets them from
    /// the page cache (`sendfile`); another gets a chunk at a time copied into the pending
    /// output, written through it, and the next chunk only once that is out (the same
    /// backpressure as any output). A file that ends before the bytes promised is an
    /// error: its size was in the reply already.
    pub fn send_file(
        &mut self,
        budget: usize,
        sent: &mut u64,
        pool: &mut BufferPool,
        now_tick: u64,
    ) -> io::Result<FileProgress> {
        if !self.output.is_empty() || self.transport.waiting() > 0 {
            return Ok(FileProgress::Blocked);
        }
        let Some(transfer) = &mut self.file else { return Ok(FileProgress::Done) };
        let Some(file) = &transfer.file else { return Ok(FileProgress::Blocked) };
        let shrank = || {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} shrank while being sent", transfer.path.display()),
            )
        };
        let mut left = budget;
        while transfer.offset < transfer.end {
            if left == 0 {
                return Ok(FileProgress::Owed);
            }
            let chunk = (transfer.end - transfer.offset).min(left as u64) as usize;
            if self.transport.passes_bytes_through() {
                match gate(|| self.stream.send_file(file, &mut transfer.offset, chunk))? {
                    Some(0) => return Err(shrank()),
                    Some(n) => {
                        left -= n.min(left);
                        *sent += n as u64;
                        self.last_active = now_tick;
                    }
                    None => return Ok(FileProgress::Blocked),
                }
                continue;
            }
            // The copying path: a chunk into the output, written through the transport.
            let chunk = chunk.min(COPY_CHUNK);
            let buffer = self.output.buffer(pool);
            let start = buffer.len();
            buffer.resize(start + chunk, 0);
            let read = file.read_at(&mut buffer[start..], transfer.offset)?;
            buffer.truncate(start + read);
            if read == 0 {
                return Err(shrank());
            }
            transfer.offset += read as u64;
            left -= read.min(left);
            let (stream, transport) = (&mut self.stream, &mut self.transport);
            let written = self.output.write_with(pool, |bytes| transport.send(stream, bytes))?;
            *sent += written as u64;
            self.last_active = now_tick;
            if !self.output.is_empty() || !self.transport.flush(&mut self.stream)? {
                return Ok(FileProgress::Blocked);
            }
        }
        Ok(FileProgress::Done)
    }

    /// Whether it is lingering: written out and shut down, its input only discarded.
    pub fn is_lingering(&self) -> bool {
        matches!(self.reading, Reading::Lingering { .. })
    }

    /// Why it lingers, if it is still the lingering that was to end at `until_ms` (not
    /// closed, not stopped again since).
    pub fn lingers_until(&self, until_ms: u64) -> Option<StopReason> {
        match self.reading {
            Reading::Lingering { until, reason } if until == Stamp::of(until_ms) => Some(reason),
            _ => None,
        }
    }

    /// Why it lingers, if it does.
    pub fn lingering_reason(&self) -> Option<StopReason> {
        match self.reading {
            Reading::Lingering { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// Whether it is still the slow consumer told at `until_ms` (`tell_too_slow`).
    pub fn told_until(&self, until_ms: u64) -> bool {
        self.reading == Reading::Told { until: Stamp::of(until_ms) }
    }

    /// It was told it is too slow (its notice is queued): it reads nothing more, gets
    /// nothing more, and is cut at `until_ms` unless it reads what is queued first.
    pub fn tell_too_slow(&mut self, until_ms: u64) {
        self.reading = Reading::Told { until: Stamp::of(until_ms) };
    }

    /// Stops reading its requests if its replies are over `max_output` (it is not reading
    /// them); true if it paused. Reading resumes in [`settle_output`](Self::settle_output).
    pub fn pause_if_backed_up(&mut self, max_output: usize) -> bool {
        if self.reading == Reading::Open && self.pending_len() > max_output {
            self.reading = Reading::Paused;
            return true;
        }
        false
    }

    /// Never reads again; it closes once its pending output is written. The first reason
    /// given is kept.
    pub fn stop(&mut self, reason: StopReason) {
        if !matches!(self.reading, Reading::Stopped(_)) {
            self.reading = Reading::Stopped(reason);
        }
    }

    /// Everything is written: shuts down the sending side (the transport's goodbye, then
    /// FIN, which the kernel sends after what is queued) and reads on only to discard,
    /// until the client closes or `until_ms` (see `linger.rs`).
    pub fn linger(&mut self, until_ms: u64, reason: StopReason) -> io::Result<()> {
        self.transport.shutdown(&mut self.stream)?;
        self.reading = Reading::Lingering { until: Stamp::of(until_ms), reason };
        Ok(())
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

    // ----- input between reads -----

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

    // ----- output -----

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

    /// Room lines for it, in `slices` of a buffer the room's members share (`room.rs`):
    /// sent straight from there (one `send`, or `sendmsg` for several slices) when nothing
    /// else waits to be written before them and the transport passes bytes through, so that
    /// only what the socket does not take is copied, into its pending output (as output
    /// others caused: see [`Settled::SlowConsumer`]). Returns the bytes written; what was
    /// copied goes out in the flush.
    pub fn write_shared(
        &mut self,
        slices: &mut [IoSlice<'_>],
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
            self.holds_pushed_output = true;
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

    /// Bytes waiting to be written: its pending output and what waits inside its transport.
    fn pending_len(&self) -> usize {
        self.output.len() + self.transport.waiting()
    }

    /// After a write: applies the water marks around `max_output` and says what the reactor
    /// must do next.
    pub fn settle_output(&mut self, max_output: usize) -> Settled {
        let pending = self.pending_len();
        if let Reading::Told { .. } = self.reading {
            // Its last word is queued: done once it has read it.
            return if pending == 0 { Settled::Finished(StopReason::TooSlow) } else { Settled::Unchanged };
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

    /// Gives its buffers back to the pool (it is being removed).
    pub fn release_buffers(&mut self, pool: &mut BufferPool) {
        if let Some(partial) = self.partial_input.take() {
            pool.give(partial);
        }
        self.output.release(pool);
    }

    // ----- poll interest -----

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

    // ----- the reactor's bookkeeping for this turn -----

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

    /// Takes it off the owed list (it is being read).
    pub fn clear_owed_read(&mut self) {
        self.owed_read = false;
    }

    /// Marks it to be removed at the end of the turn; false if it already is.
    pub fn mark_closing(&mut self) -> bool {
        !std::mem::replace(&mut self.closing, true)
    }

    /// Whether it is to be removed at the end of the turn.
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    // ----- idle timeouts -----

    /// The idle-wheel tick of its last activity.
    pub fn last_active(&self) -> u64 {
        self.last_active
    }

    /// The idle-wheel slot its entry sits in (an entry from another slot is stale).
    pub fn timer_slot(&self) -> u32 {
        self.timer_slot
    }

    /// Notes the slot its idle-wheel entry now sits in.
    pub fn set_timer_slot(&mut self, slot: u32) {
        self.timer_slot = slot;
    }

    /// The keepalive-wheel slot its entry sits in.
    pub fn keepalive_slot(&self) -> u32 {
        self.keepalive_slot
    }

    /// Notes the slot its keepalive-wheel entry now sits in.
    pub fn set_keepalive_slot(&mut self, slot: u32) {
        self.keepalive_slot = slot;
    }
}

/// File bytes copied at a time on the copying path (a transport that transforms bytes): a
/// few TLS records' worth, so a download costs one buffer, not the file.
const COPY_CHUNK: usize = 64 * 1024;

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
