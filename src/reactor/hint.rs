//! A hint for newcomers. The clients of the classic socket course send a request with no
//! newline and wait in `recv`; against a `line` listener they wait forever, since the line
//! never ends. When a line listener holds an unterminated tail that has sat unchanged for
//! [`HINT_AFTER`] while the server kept reading it (not paused by backpressure, not
//! draining), the server logs once (info) what is going on and what to use instead.
//!
//! Only a few connections are watched (and none once the hint is out), so this costs nothing
//! on a busy server.

use std::time::{Duration, Instant};

use log::info;

use super::Reactor;
use crate::codec::Codec;

/// How long an unterminated line must sit unchanged before the hint.
const HINT_AFTER: Duration = Duration::from_secs(1);
/// Connections watched at once; more are not needed to say it once.
const MAX_WATCHED: usize = 16;

/// See the module documentation.
#[derive(Debug, Default)]
pub(super) struct RawHint {
    /// Said already: nothing more to watch, ever.
    given: bool,
    /// (connection, when to check, the tail's length then): a tail that grew or went away
    /// was not a client stuck waiting.
    watched: Vec<(usize, Instant, usize)>,
}

impl RawHint {
    /// When the next watched tail is due for a look.
    pub fn next_due(&self) -> Option<Instant> {
        self.watched.iter().map(|&(_, due, _)| due).min()
    }
}

impl Reactor {
    /// `key` keeps an unterminated tail of `length` bytes: watch it, if it is a line
    /// listener's and the hint has not been given.
    pub(super) fn watch_unterminated(&mut self, key: usize, length: usize) {
        let hint = &mut self.telemetry.raw_hint;
        if hint.given || hint.watched.len() >= MAX_WATCHED {
            return;
        }
        let Some(conn) = self.conns.get(key) else { return };
        if self.services[conn.service()].codec == Codec::Line {
            hint.watched.retain(|&(watched, _, _)| watched != key);
            hint.watched.push((key, Instant::now() + HINT_AFTER, length));
        }
    }

    /// Gives the hint if a watched tail sat unchanged for [`HINT_AFTER`].
    pub(super) fn check_unterminated(&mut self, now: Instant) {
        if self.telemetry.raw_hint.watched.is_empty() {
            return;
        }
        let watched = std::mem::take(&mut self.telemetry.raw_hint.watched);
        for (key, due, length) in watched {
            if due > now {
                self.telemetry.raw_hint.watched.push((key, due, length));
                continue;
            }
            let Some(conn) = self.conns.get(key) else { continue };
            // A tail that did not change because the server stopped reading (backpressure,
            // the drain) says nothing about the client.
            let read_on = conn.wants_read() && self.clocks.draining.is_none();
            if conn.partial_input_len() != length || !read_on {
                continue;
            }
            let service = &self.services[conn.service()];
            info!(
                "a client sent {length} bytes with no newline and is waiting; conn={key} peer={} handler={}: line listeners answer whole lines only. Clients that send without a newline and recv() once (the classic course's) want the raw codec: --listen {}:raw=ADDR (the default server has raw listeners on 7100-7102)",
                conn.peer(),
                service.name,
                service.name
            );
            self.telemetry.raw_hint.given = true;
            self.telemetry.raw_hint.watched.clear();
            return;
        }
    }
}
