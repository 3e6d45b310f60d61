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
//!   [`TURNS_PER_WINDOW`] per [`WINDOW`]) or than it reads (its output past
//!   [`BEHIND`]): how many were not sent. Nothing is dropped silently.
//!
//! Watching must not feed itself: the console's own connections are left out of every turn
//! and snapshot, and the turns that served only them are not turns at all. It costs the loop
//! nothing without a console listener; with one, a few counters per served connection; with
//! a watcher, one JSON line per reported turn (and never more than the cap).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use slab::Slab;

use super::Service;
use super::connection::Connection;
use super::room::Room;
use crate::codec::ws::Page;
use crate::stats::Stats;

/// The console page: self-contained (no external assets), it opens its WebSocket at `/live`.
pub(super) const PAGE: Page = Page { html: include_str!("console.html"), name: "console" };

/// How often a snapshot goes out.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);
/// The window the turn cap counts over.
const WINDOW: Duration = Duration::from_millis(100);
/// Turns sent to one watcher per [`WINDOW`] at most (so at most 500 a second); the rest are
/// counted and said as `skipped`. A browser draws no more than that, and a loop turning
/// 200,000 times a second must not spend its time telling.
const TURNS_PER_WINDOW: u32 = 50;
/// A watcher with this much output not written yet is behind: turns for it are skipped (and
/// counted) until it catches up; past `--max-output` it is dropped like any slow consumer.
pub(super) const BEHIND: usize = 256 * 1024;
/// Connections listed in a snapshot at most (the first by key); the rest are counted in
/// `more`. 1,000 entries are ~150 KB of JSON a second.
const MAX_LISTED: usize = 1000;
/// Turns whose figures are kept per second for the percentiles (more are counted in the
/// maximum and the histogram only).
const MAX_SAMPLES: usize = 65_536;
/// Buckets of the turn-time histogram: bucket `i` holds turns of less than `2^i` µs.
const DELAY_BUCKETS: usize = 24;

/// What one connection got done in one turn.
#[derive(Clone, Copy, Debug)]
pub(super) struct Served {
    pub conn: usize,
    pub messages: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// A connection's totals since the console started counting.
#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    messages: u64,
    bytes_in: u64,
    bytes_out: u64,
}

/// One watcher: what it was sent, and what it was not.
#[derive(Debug)]
struct Watcher {
    key: usize,
    /// Turns sent in the current window.
    sent: u32,
    /// Turns not sent since the last it was told of.
    skipped: u64,
}

/// The loop's figures over one second.
#[derive(Debug, Default)]
struct Window {
    turns: u64,
    events: Vec<u32>,
    busy_us: Vec<u32>,
    max_events: u32,
    max_busy_us: u32,
    blocked: Duration,
    delay: [u64; DELAY_BUCKETS],
}

impl Window {
    fn record(&mut self, events: usize, waited: Duration, busy: Duration) {
        let (events, busy_us) =
            (events.min(u32::MAX as usize) as u32, busy.as_micros().min(u32::MAX as u128) as u32);
        self.turns += 1;
        if self.events.len() < MAX_SAMPLES {
            self.events.push(events);
            self.busy_us.push(busy_us);
        }
        self.max_events = self.max_events.max(events);
        self.max_busy_us = self.max_busy_us.max(busy_us);
        self.blocked += waited;
        let bucket = (u32::BITS - busy_us.leading_zeros()) as usize;
        self.delay[bucket.min(DELAY_BUCKETS - 1)] += 1;
    }
}

/// The p50 and p99 of `values` (sorted in place).
fn percentiles(values: &mut [u32]) -> (u32, u32) {
    if values.is_empty() {
        return (0, 0);
    }
    values.sort_unstable();
    let at = |fraction: f64| values[((values.len() - 1) as f64 * fraction).round() as usize];
    (at(0.50), at(0.99))
}

/// See the module documentation.
#[derive(Debug)]
pub(super) struct Console {
    /// The console's service: its connections watch, and are never watched.
    service: usize,
    watchers: Vec<Watcher>,
    /// Totals of the connections, by key, since the console started counting.
    totals: Vec<Totals>,
    /// This turn's connections, in the order served.
    served: Vec<Served>,
    /// Events of this turn that were the console's own.
    own_events: usize,
    /// The current second's figures, and the last whole second's.
    window: Window,
    last_second: Window,
    second_started: Instant,
    /// When the turn cap's window started.
    cap_started: Instant,
    next_snapshot: Instant,
    /// The message being written (reused).
    json: String,
}

impl Console {
    /// A console for `service`'s watchers.
    pub fn new(service: usize, now: Instant) -> Console {
        Console {
            service,
            watchers: Vec::new(),
            totals: Vec::new(),
            served: Vec::new(),
            own_events: 0,
            window: Window::default(),
            last_second: Window::default(),
            second_started: now,
            cap_started: now,
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
        if self.totals.len() <= served.conn {
            self.totals.resize(served.conn + 1, Totals::default());
        }
        let totals = &mut self.totals[served.conn];
        totals.messages += served.messages;
        totals.bytes_in += served.bytes_in;
        totals.bytes_out += served.bytes_out;
        if self.watchers.is_empty() {
            return;
        }
        // One entry per connection per turn, summed if it was served twice (owed, say).
        match self.served.iter_mut().find(|entry| entry.conn == served.conn) {
            Some(entry) => {
                entry.messages += served.messages;
                entry.bytes_in += served.bytes_in;
                entry.bytes_out += served.bytes_out;
            }
            None => self.served.push(served),
        }
    }

    /// `bytes` were written to connection `key` outside its turn (the flush phase, its room's
    /// lines): into its totals only.
    pub fn wrote(&mut self, key: usize, bytes: u64) {
        if let Some(totals) = self.totals.get_mut(key) {
            totals.bytes_out += bytes;
        }
    }

    /// Connection `key` is new or gone: its totals start again.
    pub fn reset(&mut self, key: usize) {
        if let Some(totals) = self.totals.get_mut(key) {
            *totals = Totals::default();
        }
    }

    /// A watcher connected (its WebSocket is open).
    pub fn watch(&mut self, key: usize) {
        self.watchers.push(Watcher { key, sent: 0, skipped: 0 });
    }

    /// A watcher went.
    pub fn unwatch(&mut self, key: usize) {
        self.watchers.retain(|watcher| watcher.key != key);
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
        if !self.served.is_empty() || events > 0 {
            self.window.record(events, waited, busy);
        }
        if now.duration_since(self.second_started) >= SNAPSHOT_EVERY {
            self.last_second = std::mem::take(&mut self.window);
            self.second_started = now;
        }
        if now.duration_since(self.cap_started) >= WINDOW {
            // A new window: each watcher may be sent turns again, and is told first of those
            // it was not sent (at the latest with the next snapshot's wakeup, a second on).
            self.cap_started = now;
            for watcher in &mut self.watchers {
                watcher.sent = 0;
                if watcher.skipped > 0 && !behind(watcher.key) {
                    let skipped =
                        format!(r#"{{"type":"skipped","turns":{}}}"#, std::mem::take(&mut watcher.skipped));
                    send(watcher.key, &skipped);
                }
            }
        }
        if !self.served.is_empty() && !self.watchers.is_empty() {
            self.json.clear();
            let json = &mut self.json;
            let _ = write!(
                json,
                r#"{{"type":"turn","turn":{number},"events":{events},"waited_us":{},"busy_us":{},"served":["#,
                waited.as_micros(),
                busy.as_micros()
            );
            for (index, served) in self.served.iter().enumerate() {
                let _ = write!(
                    json,
                    r#"{}{{"conn":{},"messages":{},"bytes_in":{},"bytes_out":{}}}"#,
                    if index == 0 { "" } else { "," },
                    served.conn,
                    served.messages,
                    served.bytes_in,
                    served.bytes_out
                );
            }
            json.push_str("]}");
            for watcher in &mut self.watchers {
                if watcher.sent >= TURNS_PER_WINDOW || behind(watcher.key) {
                    watcher.skipped += 1;
                    continue;
                }
                if watcher.skipped > 0 {
                    let skipped =
                        format!(r#"{{"type":"skipped","turns":{}}}"#, std::mem::take(&mut watcher.skipped));
                    send(watcher.key, &skipped);
                }
                watcher.sent += 1;
                send(watcher.key, json);
            }
        }
        self.served.clear();
        !self.watchers.is_empty() && now >= self.next_snapshot
    }

    /// The watchers, for a snapshot to each.
    pub fn watchers(&self) -> impl Iterator<Item = usize> + '_ {
        self.watchers.iter().map(|watcher| watcher.key)
    }

    /// A snapshot of the server now: its connections (but the console's own), its rooms
    /// and the loop's figures over the last second.
    pub fn snapshot(&mut self, now: Instant, view: &View<'_>) -> &str {
        self.next_snapshot = now + SNAPSHOT_EVERY;
        let json = &mut self.json;
        json.clear();
        json.push_str(r#"{"type":"snapshot","model":"reactor","connections":["#);
        let (mut listed, mut more) = (0, 0);
        for (key, conn) in view.conns.iter() {
            if conn.service() == self.service {
                continue;
            }
            if listed == MAX_LISTED {
                more += 1;
                continue;
            }
            let service = &view.services[conn.service()];
            let totals = self.totals.get(key).copied().unwrap_or_default();
            let _ = write!(
                json,
                r#"{}{{"conn":{key},"peer":"{}","handler":"{}","codec":"{}","transport":"{}","state":"{}","messages":{},"bytes_in":{},"bytes_out":{},"waiting":{}}}"#,
                if listed == 0 { "" } else { "," },
                escaped(&conn.peer().to_string()),
                escaped(&service.name),
                service.codec,
                conn.transport_name(),
                conn.state_name(),
                totals.messages,
                totals.bytes_in,
                totals.bytes_out,
                conn.pending()
            );
            listed += 1;
        }
        let _ = write!(json, r#"],"more":{more},"rooms":["#);
        let mut first = true;
        for room in view.rooms {
            let Some(name) = room.shared_name() else { continue };
            let _ = write!(
                json,
                r#"{}{{"room":"{}","members":{}}}"#,
                if first { "" } else { "," },
                escaped(name),
                room.members()
            );
            first = false;
        }
        let second = &mut self.last_second;
        let (events_p50, events_p99) = percentiles(&mut second.events);
        let (busy_p50, busy_p99) = percentiles(&mut second.busy_us);
        let _ = write!(
            json,
            r#"],"loop":{{"turns_per_second":{},"events_per_turn":{{"p50":{events_p50},"p99":{events_p99},"max":{}}},"turn_us":{{"p50":{busy_p50},"p99":{busy_p99},"max":{}}},"blocked_ms_per_second":{},"delay_histogram_us":["#,
            second.turns,
            second.max_events,
            second.max_busy_us,
            second.blocked.as_millis()
        );
        for (index, count) in second.delay.iter().enumerate() {
            let _ = write!(json, "{}{count}", if index == 0 { "" } else { "," });
        }
        let stats = view.stats;
        let _ = write!(
            json,
            r#"],"connections":{},"client_memory":{},"evictions":{},"messages_in":{},"messages_out":{}}}}}"#,
            listed + more,
            view.client_memory,
            stats.clients_evicted,
            stats.messages_in,
            stats.messages_out
        );
        json
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

/// `text` as the inside of a JSON string.
fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(console.watchers[0].skipped, 1);
    }
}
