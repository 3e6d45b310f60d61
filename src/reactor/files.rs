//! Files: carrying out `Intent::SendFile`. The handler has checked the name and replied with
//! the size; here the file is opened and streamed behind that reply with `sendfile(2)` as the
//! socket drains, under the same rules as every other output: written first, `WRITABLE` asked
//! for only when the socket is full, a bounded share per turn. Nothing of the file passes
//! through user space, so a client that stops reading costs a descriptor, not memory. Over a
//! transport that transforms bytes (TLS), the file is copied a chunk at a time instead, the
//! next chunk only once the last is written (`Connection::send_file`).
//!
//! At most `--max-file-sends` files are open at once (each holds a descriptor); a download
//! past that waits, in order, for one to finish. While a connection sends a file, its later
//! requests wait in its kept input and are handled once the file is out.

use std::collections::VecDeque;

use log::warn;

use super::connection::FileProgress;
use super::{CloseReason, Reactor};

/// File bytes one connection sends per turn before the others get theirs (as reads are
/// bounded per turn): a big download must not hold the only thread.
const FILE_BYTES_PER_TURN: usize = 1024 * 1024;

/// Files being sent, and the connections waiting for a slot.
#[derive(Debug, Default)]
pub(super) struct Files {
    /// Files open for sending (at most `--max-file-sends`).
    pub open: usize,
    /// Connections waiting for a free file slot, in order.
    pub waiters: VecDeque<usize>,
}

impl Reactor {
    /// The handler asked to send `key` a file: queue it behind the pending output, and open
    /// it if a slot is free.
    pub(super) fn start_file(&mut self, key: usize, path: std::path::PathBuf, offset: u64, length: u64) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if conn.is_closing() {
            return;
        }
        conn.queue_file(path, offset, length);
        if self.files.open < self.limits.max_file_sends {
            self.open_file(key);
        } else {
            self.files.waiters.push_back(key);
        }
        self.queue_flush(key);
    }

    fn open_file(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        match conn.open_file() {
            Ok(()) => self.files.open += 1,
            Err(error) => {
                // Its reply promised the bytes: without them the connection cannot go on.
                warn!("cannot open a file to send; conn={key} error={error}");
                self.close_later(key, CloseReason::Error(error));
            }
        }
    }

    /// Sends what `key`'s file the socket takes now; called from the flush once its other
    /// output is written.
    pub(super) fn send_file(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if !conn.file_is_open() {
            return;
        }
        let mut sent = 0;
        let progress =
            conn.send_file(FILE_BYTES_PER_TURN, &mut sent, &mut self.scratch.pool, self.clocks.now_tick);
        self.telemetry.stats.bytes_out += sent;
        match progress {
            Ok(FileProgress::Done) => self.finish_file(key),
            Ok(FileProgress::Blocked) => {}
            Ok(FileProgress::Owed) => self.queue_flush_next_turn(key),
            Err(error) => {
                warn!("file transfer ended early; conn={key} error={error}");
                self.close_later(key, CloseReason::Error(error));
            }
        }
    }

    /// `key`'s file is out: free its slot for the next waiter, and handle the requests that
    /// waited behind it.
    fn finish_file(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if conn.drop_file() {
                self.release_file_slot();
            }
        }
        // Its later requests are in its kept input already: no new bytes or edge will come
        // for them.
        self.handle_input(key, &[]);
        self.owe_read(key);
        self.queue_flush(key);
    }

    /// A file slot is free: the first connection still waiting gets it.
    pub(super) fn release_file_slot(&mut self) {
        self.files.open -= 1;
        while let Some(key) = self.files.waiters.pop_front() {
            let waiting = self.conns.get(key).is_some_and(|conn| conn.has_file() && !conn.file_is_open());
            if waiting {
                self.open_file(key);
                self.queue_flush(key);
                return;
            }
        }
    }
}
