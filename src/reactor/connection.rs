//! One client connection's state: its socket, the undecoded tail of its input, its pending
//! output, and a few flags the reactor derives its poll interest from.
//!
//! An idle connection holds no buffer at all (both are `None`/empty and went back to the
//! pool), which is what lets one reactor hold many thousands of them in little memory.

use std::io::{self, Write};

use mio::Interest;

use super::buffer_pool::BufferPool;
use crate::codec::Decoder;
use crate::sys::address::PeerAddr;
use crate::sys::nonblocking::{interrupted, would_block};
use crate::sys::transport::Stream;

/// Whether the reactor reads from a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reading {
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
        until_ms: u64,
    },
}

/// Why a connection stopped reading (and will close once flushed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The client half-closed (end of stream).
    PeerClosed,
    /// The handler asked to close it.
    HandlerClosed,
    /// The server is shutting down.
    Shutdown,
}

/// Bytes waiting for the socket to take them. The buffer comes from the pool when output
/// first backs up and goes back as soon as it is all written.
#[derive(Debug, Default)]
pub struct PendingOutput {
    buffer: Option<Vec<u8>>,
    /// How much of `buffer` is already written.
    written: usize,
}

impl PendingOutput {
    /// Bytes not written yet.
    pub fn len(&self) -> usize {
        self.buffer.as_ref().map_or(0, |buffer| buffer.len() - self.written)
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The buffer to append new output to, taken from the pool if there is none.
    pub fn buffer(&mut self, pool: &mut BufferPool) -> &mut Vec<u8> {
        let buffer = self.buffer.get_or_insert_with(|| pool.take());
        // Drop the written front now and then, so a connection that always has some output
        // pending does not grow its buffer forever.
        if self.written > 0 && self.written >= buffer.len() / 2 {
            buffer.drain(..self.written);
            self.written = 0;
        }
        buffer
    }

    /// Writes until all is written or the socket is full; returns the bytes written. Writing
    /// on to `WouldBlock` (rather than stopping at a short write) costs a syscall only when
    /// the socket is really full, and then the caller asks for `WRITABLE`.
    pub fn write_to(&mut self, stream: &mut Stream, pool: &mut BufferPool) -> io::Result<usize> {
        let mut total = 0;
        while let Some(buffer) = &self.buffer {
            match stream.write(&buffer[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    total += n;
                    self.written += n;
                    if self.written == buffer.len() {
                        self.release(pool);
                    }
                }
                Err(error) if would_block(&error) => break,
                Err(error) if interrupted(&error) => continue,
                Err(error) => return Err(error),
            }
        }
        Ok(total)
    }

    /// Gives the buffer back to the pool, dropping anything unwritten.
    pub fn release(&mut self, pool: &mut BufferPool) {
        if let Some(buffer) = self.buffer.take() {
            pool.give(buffer);
        }
        self.written = 0;
    }
}

/// One client connection, stored in the reactor's slab; its key is its `mio::Token`.
#[derive(Debug)]
pub struct Connection {
    /// The socket.
    pub stream: Stream,
    /// Who the client is.
    pub peer: PeerAddr,
    /// Which service (handler and codec) it belongs to.
    pub service: usize,
    /// Where it sits in its service's member list, so leaving the room is O(1).
    pub member_index: usize,
    /// Decoding state between reads (a few bytes).
    pub decoder: Decoder,
    /// The undecoded tail of an incomplete message, if there is one.
    pub partial_input: Option<Vec<u8>>,
    /// Replies and messages not written yet.
    pub output: PendingOutput,
    /// Whether it is being read.
    pub reading: Reading,
    /// Its pending output holds messages other clients caused (a broadcast): if that backs
    /// up, pausing its reading would not help, so it is dropped instead. Cleared when the
    /// output is all written.
    pub holds_pushed_output: bool,
    /// The interest it is registered with now, to re-register only on change.
    pub registered: Interest,
    /// Already on the reactor's flush queue for this wakeup.
    pub queued_for_flush: bool,
    /// Already on the reactor's list of connections owed a read.
    pub owed_read: bool,
    /// Scheduled to close at the end of this wakeup; ignore it until then.
    pub closing: bool,
    /// The idle-timer tick of its last activity (bytes in or out).
    pub last_active: u64,
    /// The idle timer slot its entry sits in.
    pub timer_slot: u32,
}

impl Connection {
    /// A freshly accepted connection, registered for reading.
    pub fn new(stream: Stream, peer: PeerAddr, service: usize, decoder: Decoder) -> Connection {
        Connection {
            stream,
            peer,
            service,
            member_index: 0,
            decoder,
            partial_input: None,
            output: PendingOutput::default(),
            reading: Reading::Open,
            holds_pushed_output: false,
            registered: Interest::READABLE,
            queued_for_flush: false,
            owed_read: false,
            closing: false,
            last_active: 0,
            timer_slot: 0,
        }
    }

    /// Whether the reactor should read from it now.
    pub fn wants_read(&self) -> bool {
        self.reading == Reading::Open && !self.closing
    }

    /// The poll interest its state calls for: readable while reading (or lingering),
    /// writable while output is pending. `None` when it wants neither, which means it is
    /// about to close.
    pub fn wanted_interest(&self) -> Option<Interest> {
        let reading = matches!(self.reading, Reading::Open | Reading::Lingering { .. });
        let read = reading.then_some(Interest::READABLE);
        let write = (!self.output.is_empty()).then_some(Interest::WRITABLE);
        match (read, write) {
            (Some(read), Some(write)) => Some(read | write),
            (read, write) => read.or(write),
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
        let size = size_of::<Option<Connection>>();
        println!("slab entry of a connection: {size} bytes");
        assert!(size <= 192, "a slab entry grew to {size} bytes");
    }
}
