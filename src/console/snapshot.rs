//! A `snapshot` message, written one part at a time: the connections (at most
//! [`MAX_LISTED`], the rest counted in `more`), the rooms, and the `loop` object: the
//! loop's figures over the last second where there is a loop, then the counters.

use std::fmt::{self, Write as _};

use super::{Totals, Window};

/// Connections listed in a snapshot at most (the first by key); the rest are counted in
/// `more`. 1,000 entries are ~150 KB of JSON a second.
const MAX_LISTED: usize = 1000;

/// One connection's line in a snapshot.
pub(crate) struct Row<'a> {
    pub conn: usize,
    pub peer: &'a dyn fmt::Display,
    pub handler: &'a str,
    pub codec: &'a dyn fmt::Display,
    pub transport: &'a str,
    pub state: &'a str,
    pub totals: Totals,
    /// Output bytes not written yet.
    pub waiting: usize,
}

/// The counters that close the `loop` object. A field that is `None` is left out: a model
/// without a memory budget has no client memory to show.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub client_memory: Option<usize>,
    pub evictions: Option<u64>,
    pub messages_in: u64,
    pub messages_out: u64,
}

/// See the module documentation.
pub(crate) struct SnapshotWriter<'j> {
    json: &'j mut String,
    listed: usize,
    more: usize,
    rooms: usize,
}

impl<'j> SnapshotWriter<'j> {
    /// Starts a snapshot of model `model` in `json` (emptied first).
    pub fn begin(json: &'j mut String, model: &str) -> SnapshotWriter<'j> {
        json.clear();
        let _ = write!(json, r#"{{"type":"snapshot","model":"{model}","connections":["#);
        SnapshotWriter { json, listed: 0, more: 0, rooms: 0 }
    }

    /// A connection (listed, or counted in `more` past [`MAX_LISTED`]).
    pub fn connection(&mut self, row: &Row<'_>) {
        if self.listed == MAX_LISTED {
            self.more += 1;
            return;
        }
        let totals = row.totals;
        let _ = write!(
            self.json,
            r#"{}{{"conn":{},"peer":"{}","handler":"{}","codec":"{}","transport":"{}","state":"{}","messages":{},"bytes_in":{},"bytes_out":{},"waiting":{}}}"#,
            if self.listed == 0 { "" } else { "," },
            row.conn,
            escaped(&row.peer.to_string()),
            escaped(row.handler),
            row.codec,
            row.transport,
            row.state,
            totals.messages,
            totals.bytes_in,
            totals.bytes_out,
            row.waiting
        );
        self.listed += 1;
    }

    /// A room, after every connection.
    pub fn room(&mut self, name: &str, members: usize) {
        if self.rooms == 0 {
            let _ = write!(self.json, r#"],"more":{},"rooms":["#, self.more);
        }
        let _ = write!(
            self.json,
            r#"{}{{"room":"{}","members":{members}}}"#,
            if self.rooms == 0 { "" } else { "," },
            escaped(name)
        );
        self.rooms += 1;
    }

    /// Ends the snapshot: the loop's figures (`None`: a model with no loop), then the
    /// connection count and `counters`.
    pub fn finish(self, figures: Option<&mut Window>, counters: &Counters) -> &'j str {
        if self.rooms == 0 {
            let _ = write!(self.json, r#"],"more":{},"rooms":["#, self.more);
        }
        self.json.push_str(r#"],"loop":"#);
        match figures {
            Some(window) => {
                window.write(self.json);
                self.json.push(',');
            }
            None => self.json.push('{'),
        }
        let _ = write!(self.json, r#""connections":{}"#, self.listed + self.more);
        if let Some(bytes) = counters.client_memory {
            let _ = write!(self.json, r#","client_memory":{bytes}"#);
        }
        if let Some(evictions) = counters.evictions {
            let _ = write!(self.json, r#","evictions":{evictions}"#);
        }
        let _ = write!(
            self.json,
            r#","messages_in":{},"messages_out":{}}}}}"#,
            counters.messages_in, counters.messages_out
        );
        self.json
    }
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

    /// A snapshot without a loop has no loop figures, and leaves out the counters it lacks.
    #[test]
    fn a_snapshot_without_a_loop() {
        let mut json = String::new();
        let mut writer = SnapshotWriter::begin(&mut json, "threads");
        writer.connection(&Row {
            conn: 1,
            peer: &"127.0.0.1:5000",
            handler: "echo",
            codec: &"line",
            transport: "plain",
            state: "ready",
            totals: Totals { messages: 2, bytes_in: 8, bytes_out: 8 },
            waiting: 0,
        });
        let counters = Counters { messages_in: 2, messages_out: 2, ..Counters::default() };
        assert_eq!(
            writer.finish(None, &counters),
            r#"{"type":"snapshot","model":"threads","connections":[{"conn":1,"peer":"127.0.0.1:5000","handler":"echo","codec":"line","transport":"plain","state":"ready","messages":2,"bytes_in":8,"bytes_out":8,"waiting":0}],"more":0,"rooms":[],"loop":{"connections":1,"messages_in":2,"messages_out":2}}"#
        );
    }
}
