//! A small pool of byte buffers, so that idle connections hold none.
//!
//! A connection needs a buffer only while it has an incomplete message (input) or bytes the
//! socket would not take yet (output). It takes one from here when that starts and gives it
//! back when it ends, so a million idle connections hold no buffers at all, and a busy
//! server reuses the same few instead of going to the allocator for each.

use crate::stats::PoolStats;

/// Capacity of a fresh buffer: a few replies, or a partial message of typical size.
const FRESH_CAPACITY: usize = 4 * 1024;

/// Buffers that grew past this are freed rather than kept, so one burst of large messages
/// does not pin its memory in the pool forever.
const MAX_KEPT_CAPACITY: usize = 64 * 1024;

/// At most this many free buffers are kept (at most 16 MiB, usually 1 MiB).
const MAX_FREE: usize = 256;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct BufferPool {
    free: Vec<Vec<u8>>,
    stats: PoolStats,
}

impl BufferPool {
    /// An empty buffer, reused when one is free.
    pub fn take(&mut self) -> Vec<u8> {
        self.stats.in_use += 1;
        match self.free.pop() {
            Some(buffer) => {
                self.stats.reused += 1;
                buffer
            }
            None => {
                self.stats.allocated += 1;
                Vec::with_capacity(FRESH_CAPACITY)
            }
        }
    }

    /// Gives a buffer back; its contents are dropped.
    pub fn give(&mut self, mut buffer: Vec<u8>) {
        self.stats.in_use -= 1;
        if buffer.capacity() <= MAX_KEPT_CAPACITY && self.free.len() < MAX_FREE {
            buffer.clear();
            self.free.push(buffer);
        }
    }

    /// Takes a buffer back and frees it rather than keeping it: memory is short
    /// (`budget.rs`), and a kept buffer would go to the next taker at the capacity it grew
    /// to (an evicted client's 60 KB line would come back holding its 53-byte notice).
    pub fn free(&mut self, buffer: Vec<u8>) {
        self.stats.in_use -= 1;
        drop(buffer);
    }

    /// Frees the spare buffers (memory is short: `budget.rs`).
    pub fn trim(&mut self) {
        self.free = Vec::new();
    }

    /// The pool's counters.
    pub fn stats(&self) -> PoolStats {
        PoolStats { free: self.free.len(), ..self.stats }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A returned buffer is handed out again, empty, and counted as reused.
    #[test]
    fn reuses_returned_buffers() {
        let mut pool = BufferPool::default();
        let mut buffer = pool.take();
        buffer.extend_from_slice(b"abc");
        pool.give(buffer);
        let again = pool.take();
        assert!(again.is_empty());
        let stats = pool.stats();
        assert_eq!((stats.allocated, stats.reused, stats.in_use), (1, 1, 1));
    }

    /// A buffer freed is not kept, whatever its size.
    #[test]
    fn frees_on_request() {
        let mut pool = BufferPool::default();
        let buffer = pool.take();
        pool.free(buffer);
        assert_eq!((pool.stats().free, pool.stats().in_use), (0, 0));
    }

    /// Buffers that grew large are freed, not kept.
    #[test]
    fn drops_large_buffers() {
        let mut pool = BufferPool::default();
        let mut buffer = pool.take();
        buffer.reserve(MAX_KEPT_CAPACITY * 2);
        pool.give(buffer);
        assert_eq!(pool.stats().free, 0);
        assert_eq!(pool.stats().in_use, 0);
    }
}
