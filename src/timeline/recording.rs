//! A single-threaded server's side of `--trace-file` (the reactor; the `select` and `poll`
//! models): which track each connection is (a new one per connection, even when its slab
//! key is reused), and the hooks its loop calls. See `timeline.rs` for the format.

use std::collections::HashMap;
use std::fmt::Display;
use std::time::Instant;

use log::{info, warn};

use super::{LOOP_TRACK, Timeline};

/// See the module documentation.
#[derive(Debug)]
pub struct Recording {
    timeline: Timeline,
    /// The track of each open connection, by slab key.
    tracks: HashMap<usize, u64>,
    next_track: u64,
}

impl Recording {
    pub fn new(timeline: Timeline) -> Recording {
        let mut timeline = timeline;
        timeline.name_track(LOOP_TRACK, "event loop (wakeups)");
        Recording { timeline, tracks: HashMap::new(), next_track: 1 }
    }

    /// Connection `key` opened: a track of its own, named `conn KEY PEER` as the logs name
    /// it (a key is reused once its connection is gone; the track is not, and the peer
    /// tells two connections of one key apart).
    pub fn opened(&mut self, key: usize, peer: &impl Display) {
        let track = self.next_track;
        self.next_track += 1;
        self.tracks.insert(key, track);
        self.timeline.name_track(track, &format!("conn {key} {peer}"));
    }

    pub fn closed(&mut self, key: usize) {
        self.tracks.remove(&key);
    }

    pub fn message(&mut self, key: usize, start: Instant, bytes: usize) {
        if let Some(&track) = self.tracks.get(&key) {
            self.timeline.message(track, start, Instant::now(), bytes);
        }
    }

    pub fn wakeup(&mut self, at: Instant, events: usize) {
        self.timeline.wakeup(at, events);
    }

    /// Writes the file; a failure is logged, not fatal (the run itself went fine).
    pub fn finish(self) {
        match self.timeline.write() {
            Ok(()) => info!("timeline written"),
            Err(error) => warn!("cannot write the timeline; error={error}"),
        }
    }
}
