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
use slab::Slab;

use super::Service;
use super::connection::Connection;

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

impl RawHint {
    /// Line connection `key` keeps an unterminated tail of `length` bytes: watch it, unless
    /// the hint has been given.
    pub fn watch(&mut self, key: usize, length: usize) {
        if self.given || self.watched.len() >= MAX_WATCHED {
            return;
        }
        self.watched.retain(|&(watched, _, _)| watched != key);
        self.watched.push((key, Instant::now() + HINT_AFTER, length));
    }

    /// Gives the hint if a watched tail sat unchanged for [`HINT_AFTER`] while the server
    /// kept reading it (not `draining`).
    pub fn check(&mut self, now: Instant, conns: &Slab<Connection>, services: &[Service], draining: bool) {
        if self.watched.is_empty() {
            return;
        }
        let watched = std::mem::take(&mut self.watched);
        for (key, due, length) in watched {
            if due > now {
                self.watched.push((key, due, length));
                continue;
            }
            let Some(conn) = conns.get(key) else { continue };
            // A tail that did not change because the server stopped reading (backpressure,
            // the drain) says nothing about the client.
            let read_on = conn.wants_read() && !draining;
            if conn.partial_input_len() != length || !read_on {
                continue;
            }
            let service = &services[conn.service()];
            info!(
                "a client sent {length} bytes with no newline and is waiting; conn={key} peer={} handler={}: line listeners answer whole lines only. Clients that send without a newline and recv() once (the classic course's) want the raw codec: --listen {}:raw=ADDR (the default server has raw listeners on 7100-7102)",
                conn.peer(),
                service.name,
                service.name
            );
            self.given = true;
            self.watched.clear();
            return;
        }
    }
}
