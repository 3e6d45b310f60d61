//! File slots: carrying out `Intent::SendFile` holds a descriptor per file being sent, so at
//! most `--max-file-sends` files are open at once; a download past that waits, in order, for
//! one to finish. The handler has checked the name and replied with the size; the file is
//! streamed behind that reply by the connection's turn (`connection/transfer.rs`), with
//! `sendfile(2)` as the socket drains, under the same rules as every other output: written
//! first, `WRITABLE` asked for only when the socket is full, a bounded share per turn. While a
//! connection sends a file, its later requests wait in its kept input and are served once
//! the file is out.

use std::collections::VecDeque;
use std::io;

use slab::Slab;

use super::connection::Connection;

/// Files being sent, and the connections waiting for a slot.
#[derive(Debug, Default)]
pub(super) struct Files {
    /// Files open for sending (at most `--max-file-sends`).
    open: usize,
    /// Connections waiting for a free file slot, in order.
    waiters: VecDeque<usize>,
}

impl Files {
    /// Whether a file may be opened now, under `max_open`.
    pub fn has_free_slot(&self, max_open: usize) -> bool {
        self.open < max_open
    }

    /// `key` waits for a slot.
    pub fn wait(&mut self, key: usize) {
        self.waiters.push_back(key);
    }

    /// Opens `key`'s queued file in a slot.
    pub fn open(&mut self, key: usize, conn: &mut Connection) -> io::Result<()> {
        conn.open_file().inspect_err(|error| {
            log::warn!("cannot open a file to send; conn={key} error={error}");
        })?;
        self.open += 1;
        Ok(())
    }

    /// A file is out (or its connection gone): its slot is free. Returns the connection that
    /// waited longest and is still waiting, to open its file.
    pub fn release(&mut self, conns: &mut Slab<Connection>) -> Option<usize> {
        self.open -= 1;
        while let Some(key) = self.waiters.pop_front() {
            if conns.get(key).is_some_and(|conn| conn.has_file() && !conn.file_is_open()) {
                return Some(key);
            }
        }
        None
    }
}
