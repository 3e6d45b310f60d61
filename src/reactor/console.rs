//! The console: the loop watched live (`--listen console=ADDR`, `handlers/console.rs`).
//!
//! A browser opens the console page and a WebSocket on it: a watcher. The reactor then sends
//! each watcher, as JSON text messages (docs/console.md has the contract):
//!
//! - a `snapshot` on connect and every second: the connections (peer, handler, codec,
//!   transport, state, messages and bytes since the console started counting, output
//!   waiting), the rooms, and the loop's figures over the last second (turns, events per
//!   turn, turn time as percentiles and a histogram: the delay every other client saw, time
//!   blocked in the poll, client memory, evictions);
//! - a `turn` for each wakeup that served a client: which clients, in the order served, and
//!   what each got done;
//! - `skipped` when turns came faster than a watcher may be sent them (at most
//!   [`TURNS_PER_WINDOW`](crate::console::TURNS_PER_WINDOW) per
//!   [`WINDOW`](crate::console::WINDOW)) or than it reads (its output past [`BEHIND`]): how
//!   many were not sent. Nothing is dropped silently.
//!
//! The messages themselves, the caps and the figures are written in `console/`, which the
//! comparison models' console (`models/console/`) shares; this file is the reactor's side:
//! which connections are its own, and what a snapshot of the reactor holds.
//!
//! Watching must not feed itself: the console's own connections are left out of every turn
//! and snapshot, and the turns that served only them are not turns at all. It costs the loop
//! nothing without a console listener; with one, a few counters per served connection; with
//! a watcher, one JSON line per reported turn (and never more than the cap).

use std::time::{Duration, Instant};

use slab::Slab;

use super::Service;
use super::connection::Connection;
use super::room::Room;
pub(super) use crate::console::{BEHIND, PAGE, Served};
use crate::console::{Counters, Row, SNAPSHOT_EVERY, SnapshotWriter, TurnLog, Watchers};
use crate::stats::Stats;

/// See the module documentation.
#[derive(Debug)]
pub(super) struct Console {
    /// The console's service: its connections watch, and are never watched.
    service: usize,
    watchers: Watchers,
    /// What the turns served, the connections' totals, the loop's figures.
    log: TurnLog,
    /// Events of this turn that were the console's own.
    own_events: usize,
    next_snapshot: Instant,
    /// The message being written (reused).
    json: String,
}

impl Console {
    /// A console for `service`'s watchers.
    pub fn new(service: usize, now: Instant) -> Console {
        Console {
            service,
            watchers: Watchers::new(now),
            log: TurnLog::new(now),
            own_events: 0,
            next_snapshot: now + SNAPSHOT_EVERY,
            json: String::new(),
        }
    }

    /// Whether `service` is the console's (its connections are not watched).
    #[inline]
    pub fn is_own(&self, service: usize) -> bool {
        service == self.service
    }

    /// One of the console's own events in this turn.
    pub fn own_event(&mut self) {
        self.own_events += 1;
    }

    /// Connection `key` was served in this turn, and got this done.
    pub fn served(&mut self, served: Served) {
        self.log.served(served, !self.watchers.is_empty());
    }

    /// `bytes` were written to connection `key` outside its turn (the flush phase, its room's
    /// lines): into its totals only.
    pub fn wrote(&mut self, key: usize, bytes: u64) {
        self.log.wrote(key, bytes);
    }

    /// Connection `key` is new or gone: its totals start again.
    pub fn reset(&mut self, key: usize) {
        self.log.reset(key);
    }

    /// A watcher connected (its WebSocket is open).
    pub fn watch(&mut self, key: usize) {
        self.watchers.watch(key);
    }

    /// A watcher went.
    pub fn unwatch(&mut self, key: usize) {
        self.watchers.unwatch(key);
    }

    /// When the next snapshot is due, if anyone watches.
    pub fn next_due(&self) -> Option<Instant> {
        (!self.watchers.is_empty()).then_some(self.next_snapshot)
    }

    /// The turn `number` is over: `events` events in all, after `waited` in the poll,
    /// `busy` long. Its figures go into the second's; if it served anyone and someone
    /// watches, `send(watcher, message)` gets its message for each watcher that may have it
    /// now, `behind(watcher)` saying whether a watcher is behind in reading. Returns
    /// whether a snapshot is due.
    pub fn end_turn(
        &mut self,
        (number, events, waited, busy): (u64, usize, Duration, Duration),
        now: Instant,
        behind: impl Fn(usize) -> bool,
        mut send: impl FnMut(usize, &str),
    ) -> bool {
        let events = events.saturating_sub(std::mem::take(&mut self.own_events));
        self.log.record(events, waited, busy, now);
        self.watchers.tick(now, &behind, &mut send);
        if self.log.served_any() && !self.watchers.is_empty() {
            self.log.write_turn((number, events, waited, busy), &mut self.json);
            self.watchers.offer(&self.json, &behind, &mut send);
        }
        self.log.clear_turn();
        !self.watchers.is_empty() && now >= self.next_snapshot
    }

    /// The watchers, for a snapshot to each.
    pub fn watchers(&self) -> impl Iterator<Item = usize> + '_ {
        self.watchers.keys()
    }

    /// A snapshot of the server now: its connections (but the console's own), its rooms
    /// and the loop's figures over the last second.
    pub fn snapshot(&mut self, now: Instant, view: &View<'_>) -> &str {
        self.next_snapshot = now + SNAPSHOT_EVERY;
        let mut writer = SnapshotWriter::begin(&mut self.json, "reactor");
        for (key, conn) in view.conns.iter() {
            if conn.service() == self.service {
                continue;
            }
            let service = &view.services[conn.service()];
            writer.connection(&Row {
                conn: key,
                peer: conn.peer(),
                handler: &service.name,
                codec: &service.codec,
                transport: conn.transport_name(),
                state: conn.state_name(),
                totals: self.log.totals(key),
                waiting: conn.pending(),
            });
        }
        for room in view.rooms {
            if let Some(name) = room.shared_name() {
                writer.room(name, room.members());
            }
        }
        let counters = Counters {
            client_memory: Some(view.client_memory),
            evictions: Some(view.stats.clients_evicted),
            messages_in: view.stats.messages_in,
            messages_out: view.stats.messages_out,
        };
        writer.finish(Some(self.log.last_second()), &counters)
    }
}

/// What a snapshot is made from.
pub(super) struct View<'r> {
    pub conns: &'r Slab<Connection>,
    pub services: &'r [Service],
    pub rooms: &'r [Room],
    pub stats: &'r Stats,
    pub client_memory: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::{TURNS_PER_WINDOW, WINDOW};

    fn served(conn: usize, messages: u64) -> Served {
        Served { conn, messages, bytes_in: messages * 10, bytes_out: messages * 10 }
    }

    /// A turn that served clients is one message, served in order; a watcher is sent at most
    /// the cap per window, and told how many it was not sent when it may be sent again.
    #[test]
    fn turns_go_out_in_order_within_the_cap() {
        let start = Instant::now();
        let mut console = Console::new(9, start);
        console.watch(100);
        let mut sent: Vec<String> = Vec::new();
        for turn in 0..(TURNS_PER_WINDOW as u64 + 5) {
            console.served(served(3, 1));
            console.served(served(1, 2));
            console.end_turn(
                (turn, 2, Duration::ZERO, Duration::from_micros(5)),
                start,
                |_| false,
                |_, message| sent.push(message.to_string()),
            );
        }
        assert_eq!(sent.len(), TURNS_PER_WINDOW as usize);
        assert_eq!(
            sent[0],
            r#"{"type":"turn","turn":0,"events":2,"waited_us":0,"busy_us":5,"served":[{"conn":3,"messages":1,"bytes_in":10,"bytes_out":10},{"conn":1,"messages":2,"bytes_in":20,"bytes_out":20}]}"#
        );
        console.served(served(3, 1));
        console.end_turn(
            (99, 1, Duration::ZERO, Duration::ZERO),
            start + WINDOW,
            |_| false,
            |_, message| sent.push(message.to_string()),
        );
        assert_eq!(sent[TURNS_PER_WINDOW as usize], r#"{"type":"skipped","turns":5}"#);
        assert!(sent[TURNS_PER_WINDOW as usize + 1].starts_with(r#"{"type":"turn","turn":99,"#));
    }

    /// A turn that served no client is not a turn; a watcher behind in reading is skipped.
    #[test]
    fn empty_turns_and_watchers_behind() {
        let start = Instant::now();
        let mut console = Console::new(9, start);
        console.watch(100);
        let mut sent = 0;
        console.end_turn((1, 0, Duration::ZERO, Duration::ZERO), start, |_| false, |_, _| sent += 1);
        console.served(served(3, 1));
        console.end_turn((2, 1, Duration::ZERO, Duration::ZERO), start, |_| true, |_, _| sent += 1);
        assert_eq!(sent, 0);
        assert_eq!(console.watchers.skipped_of(100), 1);
    }
}
