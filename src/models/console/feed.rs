//! The queue from a loop model (`select`, `poll`) to its console thread: the loop writes
//! its `turn` and `snapshot` messages, the console thread takes them a few times a tick and
//! sends them on. The loop never waits on it: a queue holding [`MAX_QUEUED`] bytes takes
//! no more turns, it counts them, and the console thread tells each watcher how many were
//! missed (`skipped`). Nothing is dropped silently, and memory stays bounded.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::models::blocking::lock;

/// The bytes of messages queued at most. The console thread empties the queue every tick
/// (20 ms), and the loop sends at most 50 turns per 100 ms, so this is reached only when
/// the console thread is starved of CPU.
const MAX_QUEUED: usize = 1 << 20;

/// A message from the loop, in the order written.
#[derive(Debug)]
pub enum Message {
    /// A `snapshot`.
    Snapshot(String),
    /// A `turn`.
    Turn(String),
}

/// What the queue holds.
#[derive(Debug, Default)]
struct Queue {
    messages: VecDeque<Message>,
    bytes: usize,
    /// Turns not queued (it was full) since the console thread last took it.
    missed: u64,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Feed {
    /// Watchers connected (the console thread keeps it up to date): with none, the loop
    /// writes no message at all.
    watchers: AtomicUsize,
    /// A new watcher waits for its first snapshot: the loop writes one at its turn's end.
    snapshot_wanted: AtomicBool,
    queue: Mutex<Queue>,
}

impl Feed {
    /// Whether anyone watches.
    pub fn watched(&self) -> bool {
        self.watchers.load(Ordering::Relaxed) > 0
    }

    /// `count` watchers are connected now.
    pub fn set_watchers(&self, count: usize) {
        self.watchers.store(count, Ordering::Relaxed);
    }

    /// Asks the loop for a snapshot at its next turn's end.
    pub fn want_snapshot(&self) {
        self.snapshot_wanted.store(true, Ordering::Relaxed);
    }

    /// Whether a snapshot was asked for (the ask is taken).
    pub fn snapshot_wanted(&self) -> bool {
        self.snapshot_wanted.swap(false, Ordering::Relaxed)
    }

    /// Queues a turn, or counts it as missed if the queue is full.
    pub fn push_turn(&self, turn: &str) {
        let mut queue = lock(&self.queue);
        if queue.bytes + turn.len() > MAX_QUEUED {
            queue.missed += 1;
            return;
        }
        queue.bytes += turn.len();
        queue.messages.push_back(Message::Turn(turn.to_string()));
    }

    /// Counts `turns` turns the loop did not write (its own cap).
    pub fn miss(&self, turns: u64) {
        lock(&self.queue).missed += turns;
    }

    /// Queues a snapshot: always taken (one a second, or one per new watcher), so a new
    /// watcher is never left without one.
    pub fn push_snapshot(&self, snapshot: &str) {
        let mut queue = lock(&self.queue);
        queue.bytes += snapshot.len();
        queue.messages.push_back(Message::Snapshot(snapshot.to_string()));
    }

    /// Takes everything queued, in order, into `into`; returns the turns missed since the
    /// last take.
    pub fn take(&self, into: &mut VecDeque<Message>) -> u64 {
        let mut queue = lock(&self.queue);
        queue.bytes = 0;
        into.append(&mut queue.messages);
        std::mem::take(&mut queue.missed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full queue takes no more turns but counts them; a take empties it, in order, and
    /// hands over the count once.
    #[test]
    fn a_full_queue_counts_what_it_does_not_take() {
        let feed = Feed::default();
        let turn = "x".repeat(MAX_QUEUED / 4);
        for _ in 0..6 {
            feed.push_turn(&turn);
        }
        feed.push_snapshot("{}");
        let mut taken = VecDeque::new();
        assert_eq!(feed.take(&mut taken), 2);
        assert_eq!(taken.len(), 5);
        assert!(matches!(taken.back(), Some(Message::Snapshot(_))), "the snapshot, after the turns");
        assert_eq!(feed.take(&mut taken), 0);
        feed.push_turn(&turn);
        assert_eq!((feed.take(&mut taken), taken.len()), (0, 6), "room again once taken");
    }
}
