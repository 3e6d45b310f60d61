//! A loop model's end of the console (`select`, `poll`): what each turn served, written as
//! the reactor's console writes it (`console/`), into the [`Feed`] for the console thread.
//! The loop tells it what it served as it serves, and ends each turn with it; the turn's
//! message is written only while someone watches, and at most [`TURNS_PER_WINDOW`] per
//! [`WINDOW`] (the rest are counted as missed, not written), so a loop turning 100,000
//! times a second does not spend its time telling.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::feed::Feed;
use crate::console::{
    Counters, SNAPSHOT_EVERY, Served, SnapshotWriter, TURNS_PER_WINDOW, Totals, TurnLog, WINDOW,
};
use crate::models::Model;

/// See the module documentation.
#[derive(Debug)]
pub struct LoopTap {
    model: Model,
    feed: Arc<Feed>,
    log: TurnLog,
    /// Someone watched when this turn began: its entries are kept for its message.
    listing: bool,
    /// Turns written in the current cap window, and when it started.
    sent: u32,
    cap_started: Instant,
    next_snapshot: Instant,
    /// The message being written (reused).
    json: String,
}

impl LoopTap {
    /// The tap of `model`'s loop into `feed`.
    pub fn new(model: Model, feed: Arc<Feed>, now: Instant) -> LoopTap {
        LoopTap {
            model,
            feed,
            log: TurnLog::new(now),
            listing: false,
            sent: 0,
            cap_started: now,
            next_snapshot: now,
            json: String::new(),
        }
    }

    /// Connection `served.conn` was served in this turn, and got this done.
    pub fn served(&mut self, served: Served) {
        self.log.served(served, self.listing);
    }

    /// `bytes` were written to connection `key` in this turn.
    pub fn wrote(&mut self, key: usize, bytes: u64) {
        self.log.wrote_in_turn(key, bytes);
    }

    /// Connection `key` is new or gone: its totals start again.
    pub fn reset(&mut self, key: usize) {
        self.log.reset(key);
    }

    /// Connection `key`'s totals, for a snapshot.
    pub fn totals(&self, key: usize) -> Totals {
        self.log.totals(key)
    }

    /// The turn is over (number, events, time blocked before it, time busy): its message
    /// into the feed if it served anyone and someone watches. Returns whether a snapshot
    /// is wanted now ([`LoopTap::snapshot`]).
    pub fn end_turn(&mut self, turn: (u64, usize, Duration, Duration), now: Instant) -> bool {
        let (_, events, waited, busy) = turn;
        self.log.record(events, waited, busy, now);
        if self.log.served_any() {
            if now.duration_since(self.cap_started) >= WINDOW {
                self.cap_started = now;
                self.sent = 0;
            }
            if self.sent < TURNS_PER_WINDOW {
                self.sent += 1;
                self.log.write_turn(turn, &mut self.json);
                self.feed.push_turn(&self.json);
            } else {
                self.feed.miss(1);
            }
        }
        self.log.clear_turn();
        self.listing = self.feed.watched();
        self.listing && (self.feed.snapshot_wanted() || now >= self.next_snapshot)
    }

    /// A snapshot into the feed: `rows` writes the connections and rooms (given this tap,
    /// for their totals), then the loop's figures and `counters` close it.
    pub fn snapshot(
        &mut self,
        now: Instant,
        counters: &Counters,
        rows: impl FnOnce(&mut SnapshotWriter<'_>, &LoopTap),
    ) {
        self.next_snapshot = now + SNAPSHOT_EVERY;
        let mut json = std::mem::take(&mut self.json);
        let mut writer = SnapshotWriter::begin(&mut json, &self.model.to_string());
        rows(&mut writer, self);
        self.feed.push_snapshot(writer.finish(Some(self.log.last_second()), counters));
        self.json = json;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::console::feed::Message;
    use std::collections::VecDeque;

    fn served(conn: usize) -> Served {
        Served { conn, messages: 1, bytes_in: 4, bytes_out: 0 }
    }

    /// Nothing is written while nobody watches; once someone does, a snapshot first, then
    /// each turn that served a client, with what was written to it in the turn, up to the
    /// cap per window; the rest are counted as missed.
    #[test]
    fn turns_go_into_the_feed_only_while_watched_and_within_the_cap() {
        let (feed, start) = (Arc::new(Feed::default()), Instant::now());
        let mut tap = LoopTap::new(Model::Select, Arc::clone(&feed), start);
        tap.served(served(1));
        assert!(!tap.end_turn((1, 1, Duration::ZERO, Duration::ZERO), start));
        let mut taken = VecDeque::new();
        assert_eq!((feed.take(&mut taken), taken.len()), (0, 0), "nobody watches: nothing written");
        feed.set_watchers(1);
        feed.want_snapshot();
        assert!(tap.end_turn((2, 0, Duration::ZERO, Duration::ZERO), start), "a snapshot wanted");
        tap.snapshot(start, &Counters::default(), |_, _| {});
        for turn in 0..(TURNS_PER_WINDOW as u64 + 3) {
            tap.served(served(1));
            tap.wrote(1, 4);
            tap.served(served(2));
            tap.end_turn((3 + turn, 2, Duration::ZERO, Duration::ZERO), start);
        }
        assert_eq!(feed.take(&mut taken), 3, "past the cap: counted, not written");
        assert_eq!(taken.len(), 1 + TURNS_PER_WINDOW as usize);
        let Some(Message::Snapshot(snapshot)) = taken.front() else { panic!("a snapshot first") };
        assert!(snapshot.starts_with(r#"{"type":"snapshot","model":"select","#), "{snapshot}");
        let Some(Message::Turn(turn)) = taken.get(1) else { panic!("then the turns") };
        assert_eq!(
            turn,
            r#"{"type":"turn","turn":3,"events":2,"waited_us":0,"busy_us":0,"served":[{"conn":1,"messages":1,"bytes_in":4,"bytes_out":4},{"conn":2,"messages":1,"bytes_in":4,"bytes_out":0}]}"#
        );
        assert_eq!(tap.totals(1).messages, 1 + TURNS_PER_WINDOW as u64 + 3, "totals count every turn");
    }
}
