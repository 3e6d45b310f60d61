//! What the loop got done, turn by turn: the connections each turn served, in the order
//! served, each connection's totals, and the second's figures. A model tells it what it
//! served as it serves; at the turn's end it writes the `turn` message.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::{SNAPSHOT_EVERY, Window};

/// What one connection got done in one turn.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Served {
    pub conn: usize,
    pub messages: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// A connection's totals since the console started counting.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Totals {
    pub messages: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct TurnLog {
    /// Totals of the connections, by key, since the console started counting.
    totals: Vec<Totals>,
    /// This turn's connections, in the order served (kept only while someone watches).
    served: Vec<Served>,
    /// The current second's figures, and the last whole second's.
    window: Window,
    last_second: Window,
    second_started: Instant,
}

impl TurnLog {
    /// A log that starts counting `now`.
    pub fn new(now: Instant) -> TurnLog {
        TurnLog {
            totals: Vec::new(),
            served: Vec::new(),
            window: Window::default(),
            last_second: Window::default(),
            second_started: now,
        }
    }

    /// Connection `served.conn` was served in this turn, and got this done; `listing`:
    /// someone watches, so the turn's entry is kept for its message.
    pub fn served(&mut self, served: Served, listing: bool) {
        if self.totals.len() <= served.conn {
            self.totals.resize(served.conn + 1, Totals::default());
        }
        let totals = &mut self.totals[served.conn];
        totals.messages += served.messages;
        totals.bytes_in += served.bytes_in;
        totals.bytes_out += served.bytes_out;
        if !listing {
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

    /// `bytes` were written to connection `key` outside its turn (the reactor's flush
    /// phase, its room's lines): into its totals only.
    pub fn wrote(&mut self, key: usize, bytes: u64) {
        if let Some(totals) = self.totals.get_mut(key) {
            totals.bytes_out += bytes;
        }
    }

    /// `bytes` were written to connection `key` in this turn: into its entry, if this turn
    /// served it, and its totals (a loop that writes after it reads, as `select` does).
    #[cfg_attr(not(feature = "cli"), allow(dead_code))]
    pub fn wrote_in_turn(&mut self, key: usize, bytes: u64) {
        self.wrote(key, bytes);
        if let Some(entry) = self.served.iter_mut().find(|entry| entry.conn == key) {
            entry.bytes_out += bytes;
        }
    }

    /// Connection `key` is new or gone: its totals start again.
    pub fn reset(&mut self, key: usize) {
        if let Some(totals) = self.totals.get_mut(key) {
            *totals = Totals::default();
        }
    }

    /// Connection `key`'s totals.
    pub fn totals(&self, key: usize) -> Totals {
        self.totals.get(key).copied().unwrap_or_default()
    }

    /// Whether this turn served anyone (while someone watches).
    pub fn served_any(&self) -> bool {
        !self.served.is_empty()
    }

    /// The turn is over: `events` events (none of the console's own), after `waited` in the
    /// poll, `busy` long; into the second's figures if it did anything.
    pub fn record(&mut self, events: usize, waited: Duration, busy: Duration, now: Instant) {
        if !self.served.is_empty() || events > 0 {
            self.window.record(events, waited, busy);
        }
        if now.duration_since(self.second_started) >= SNAPSHOT_EVERY {
            self.last_second = std::mem::take(&mut self.window);
            self.second_started = now;
        }
    }

    /// Writes this turn's `turn` message into `json` (emptied first).
    pub fn write_turn(
        &self,
        (number, events, waited, busy): (u64, usize, Duration, Duration),
        json: &mut String,
    ) {
        json.clear();
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
    }

    /// The turn's entries are done with.
    pub fn clear_turn(&mut self) {
        self.served.clear();
    }

    /// The last whole second's figures.
    pub fn last_second(&mut self) -> &mut Window {
        &mut self.last_second
    }
}
