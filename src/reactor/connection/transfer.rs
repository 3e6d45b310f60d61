//! A file a connection sends (`Intent::SendFile`, carried out): behind its pending output,
//! with `sendfile(2)` where the transport passes bytes through (nothing of the file enters
//! user space), a chunk at a time through the transport otherwise (TLS). The file slots
//! (`--max-file-sends`) are the reactor's (`files.rs`).

use std::io;
use std::os::unix::fs::FileExt as _;

use log::warn;

use super::{CloseReason, Connection, Next, Turn};
use crate::reactor::buffer_pool::BufferPool;
use crate::sys::socket::gate;

/// File bytes one connection sends per turn before the others get theirs (as reads are
/// bounded per turn): a big download must not hold the only thread.
const FILE_BYTES_PER_TURN: usize = 1024 * 1024;

/// A file a connection is sending: `Intent::SendFile`, carried out.
#[derive(Debug)]
pub struct FileTransfer {
    /// The file; `None` while it waits for a free slot (see `--max-file-sends`).
    pub(super) file: Option<std::fs::File>,
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

/// File bytes copied at a time on the copying path (a transport that transforms bytes): a
/// few TLS records' worth, so a download costs one buffer, not the file.
const COPY_CHUNK: usize = 64 * 1024;

impl Connection {
    /// Queues a file to send after the pending output; it opens at [`open_file`](Self::open_file).
    pub fn queue_file(&mut self, path: std::path::PathBuf, offset: u64, length: u64) {
        self.file = Some(Box::new(FileTransfer { file: None, path, offset, end: offset + length }));
    }

    /// Whether it has a file queued or being sent.
    pub fn has_file(&self) -> bool {
        self.file.is_some()
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
}

impl Turn<'_> {
    /// Sends what of the connection's open file the socket takes now, behind its written
    /// output: `FileDone` once it is all out (the loop frees the slot and serves what
    /// waited).
    pub(super) fn send_file(&mut self) -> Option<Next> {
        let mut sent = 0;
        let progress =
            self.conn.send_file(FILE_BYTES_PER_TURN, &mut sent, &mut self.scratch.pool, self.clocks.now_tick);
        self.telemetry.stats.bytes_out += sent;
        match progress {
            Ok(FileProgress::Done) => return Some(Next::FileDone),
            Ok(FileProgress::Blocked) => {}
            Ok(FileProgress::Owed) => self.queues.flush_next_turn(self.key, self.conn),
            Err(error) => {
                warn!("file transfer ended early; conn={} error={error}", self.key);
                self.close_later(CloseReason::Error(error));
            }
        }
        None
    }
}
