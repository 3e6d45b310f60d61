//! The watchers of a console, and how many turns each may be sent: at most
//! [`TURNS_PER_WINDOW`] per [`WINDOW`], none while it is behind in reading. What a watcher
//! is not sent is counted and told as `skipped` when it may be sent again.

use std::time::Instant;

use super::{TURNS_PER_WINDOW, WINDOW, skipped};

/// One watcher: what it was sent, and what it was not.
#[derive(Debug)]
struct Watcher {
    key: usize,
    /// Turns sent in the current window.
    sent: u32,
    /// Turns not sent since the last it was told of.
    skipped: u64,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Watchers {
    list: Vec<Watcher>,
    /// When the turn cap's window started.
    cap_started: Instant,
}

impl Watchers {
    /// Nobody watching yet.
    pub fn new(now: Instant) -> Watchers {
        Watchers { list: Vec::new(), cap_started: now }
    }

    /// A watcher connected (its WebSocket is open).
    pub fn watch(&mut self, key: usize) {
        self.list.push(Watcher { key, sent: 0, skipped: 0 });
    }

    /// A watcher went.
    pub fn unwatch(&mut self, key: usize) {
        self.list.retain(|watcher| watcher.key != key);
    }

    /// Whether nobody watches.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// How many watch.
    #[cfg_attr(not(feature = "cli"), allow(dead_code))]
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// The watchers' keys.
    pub fn keys(&self) -> impl Iterator<Item = usize> + '_ {
        self.list.iter().map(|watcher| watcher.key)
    }

    /// Called at each turn's end: once a window is over, each watcher may be sent turns
    /// again, and is told first of those it was not sent (unless `behind(watcher)`: it is
    /// still behind in reading).
    pub fn tick(&mut self, now: Instant, behind: impl Fn(usize) -> bool, mut send: impl FnMut(usize, &str)) {
        if now.duration_since(self.cap_started) < WINDOW {
            return;
        }
        self.cap_started = now;
        for watcher in &mut self.list {
            watcher.sent = 0;
            if watcher.skipped > 0 && !behind(watcher.key) {
                send(watcher.key, &skipped(std::mem::take(&mut watcher.skipped)));
            }
        }
    }

    /// A `turn` message, to each watcher that may have it now; counted as skipped for the
    /// others.
    pub fn offer(&mut self, turn: &str, behind: impl Fn(usize) -> bool, mut send: impl FnMut(usize, &str)) {
        for watcher in &mut self.list {
            if watcher.sent >= TURNS_PER_WINDOW || behind(watcher.key) {
                watcher.skipped += 1;
                continue;
            }
            if watcher.skipped > 0 {
                send(watcher.key, &skipped(std::mem::take(&mut watcher.skipped)));
            }
            watcher.sent += 1;
            send(watcher.key, turn);
        }
    }

    /// `turns` turns went to no watcher (a model's loop had no room to queue them): each
    /// watcher is told with its next `skipped`.
    #[cfg_attr(not(feature = "cli"), allow(dead_code))]
    pub fn missed(&mut self, turns: u64) {
        for watcher in &mut self.list {
            watcher.skipped += turns;
        }
    }

    /// Turns not sent to `key` yet told of (for tests).
    #[cfg(test)]
    pub fn skipped_of(&self, key: usize) -> u64 {
        self.list.iter().find(|watcher| watcher.key == key).map_or(0, |watcher| watcher.skipped)
    }
}
