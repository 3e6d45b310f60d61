//! `--trace-file`: a timeline of one run in the Trace Event Format, the JSON that Perfetto
//! and chrome://tracing open. One track per client connection (each handled message a
//! slice, with its bytes) and, for the reactor, one for the loop (each wakeup an instant,
//! with its event count): the interleaving at a glance.
//!
//! Events are kept in memory and written when the run ends, so recording costs the loop no
//! I/O; past the limit, recording stops and the file says so (`otherData.truncated`). With
//! no `--trace-file` nothing is recorded: a branch per message.

use std::fmt::Write as _;
use std::io;
use std::path::PathBuf;
use std::time::Instant;

mod recording;

pub use recording::Recording;

/// The track of the reactor's loop; connection tracks are numbered from 1.
pub const LOOP_TRACK: u64 = 0;

/// Events recorded by default before recording stops (about 100 bytes each).
pub const DEFAULT_LIMIT: usize = 200_000;

/// See the module documentation.
#[derive(Debug)]
pub struct Timeline {
    path: PathBuf,
    start: Instant,
    /// The events so far, as JSON objects separated by commas.
    events: String,
    count: usize,
    limit: usize,
    truncated: bool,
}

impl Timeline {
    /// A timeline to be written to `path`, keeping at most `limit` events.
    pub fn new(path: PathBuf, limit: usize) -> Timeline {
        Timeline { path, start: Instant::now(), events: String::new(), count: 0, limit, truncated: false }
    }

    /// Whether another event fits; past the limit, notes that some were left out.
    fn room(&mut self) -> bool {
        if self.count >= self.limit {
            self.truncated = true;
            return false;
        }
        self.count += 1;
        if !self.events.is_empty() {
            self.events.push(',');
        }
        true
    }

    fn micros(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.start).as_nanos() as f64 / 1000.0
    }

    /// Names track `track` (a metadata event: the viewer's row label).
    pub fn name_track(&mut self, track: u64, name: &str) {
        if self.room() {
            let name = json_string(name);
            let _ = write!(
                self.events,
                r#"{{"name":"thread_name","ph":"M","ts":0,"pid":1,"tid":{track},"args":{{"name":{name}}}}}"#
            );
        }
    }

    /// A handled message of `bytes` bytes on `track`, from `start` to `end`.
    pub fn message(&mut self, track: u64, start: Instant, end: Instant, bytes: usize) {
        if self.room() {
            let (ts, dur) = (self.micros(start), self.micros(end) - self.micros(start));
            let _ = write!(
                self.events,
                r#"{{"name":"message","ph":"X","ts":{ts:.3},"dur":{dur:.3},"pid":1,"tid":{track},"args":{{"bytes":{bytes}}}}}"#
            );
        }
    }

    /// A wakeup of the loop at `at` that brought `events` readiness events.
    pub fn wakeup(&mut self, at: Instant, events: usize) {
        if self.room() {
            let ts = self.micros(at);
            let _ = write!(
                self.events,
                r#"{{"name":"wakeup","ph":"i","s":"t","ts":{ts:.3},"pid":1,"tid":{LOOP_TRACK},"args":{{"events":{events}}}}}"#
            );
        }
    }

    /// Writes the file: the events, and whether recording stopped at the limit.
    pub fn write(&self) -> io::Result<()> {
        let json = format!(
            r#"{{"traceEvents":[{}],"displayTimeUnit":"ms","otherData":{{"producer":"evloop-server","events":{},"limit":{},"truncated":{}}}}}"#,
            self.events, self.count, self.limit, self.truncated
        );
        std::fs::write(&self.path, json)
    }
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(quoted, "\\u{:04x}", c as u32);
            }
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names with quotes and control characters stay valid JSON strings.
    #[test]
    fn quotes_names() {
        assert_eq!(json_string("conn 1 \"a\"\n"), r#""conn 1 \"a\"\u000a""#);
    }

    /// Past the limit nothing more is kept, and the file says so.
    #[test]
    fn stops_at_the_limit() {
        let path = std::env::temp_dir().join(format!("evloop-timeline-unit-{}.json", std::process::id()));
        let mut timeline = Timeline::new(path.clone(), 3);
        let now = Instant::now();
        for _ in 0..10 {
            timeline.wakeup(now, 1);
        }
        timeline.write().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches("\"wakeup\"").count(), 3);
        assert!(text.contains(r#""truncated":true"#), "{text}");
        std::fs::remove_file(path).unwrap();
    }
}
