//! The memory budget for all clients together (`--max-client-memory`).
//!
//! Each client is bounded on its own (`--max-frame` for what it sends, `--max-output` for
//! what waits for it), but a server with many of them is not: 15,000 connections, each in the
//! middle of a 60 KB line, took a default server from 4 MiB to 865 MiB. So what every client
//! holds between reads is counted as it changes, not sampled: each connection keeps the
//! figure it was last counted at, and its turn (or whatever just gave it output) counts it
//! again, adding the difference to the total here. What is counted is memory the client
//! makes the server hold: its unfinished input (every codec, the PROXY header in progress),
//! its pending output (its own replies, room lines it has not read, a file's chunk on the
//! copying path), what waits inside its transport (TLS records not complete or not written)
//! and its protocol (a WebSocket message's fragments). Buffers are counted by capacity, as
//! the allocator sees them.
//!
//! Over the budget, the policy is Redis's (`maxmemory-clients`): first free what costs
//! nothing (the pool's spare buffers, slack in clients' buffers), then evict the client
//! holding most, then the next, until the rest hold less than seven eighths of the budget.
//! Evicting, rather than pausing the biggest holders, because what a client holds is mostly
//! its own unfinished input or output it does not read: pausing it would keep that memory
//! held for as long as it likes. Evicting below the budget (not just to it) means one scan
//! of the connections frees an eighth of the budget, so an attacker who keeps pushing
//! costs a scan now and then, not one per read. A client evicted is told in its protocol
//! (`ERR evicted: ...`; a WebSocket close 1013), logged once a second at most, and counted.
//! Honest clients hold little (an echo client nothing between messages) and are never the
//! biggest.
//!
//! An evicted client's buffers go at once; it is told why (its notice the only output it
//! still gets: no room line reaches it any more) and cut within two seconds if it does not
//! read that, so a client that never reads cannot keep what it was evicted for. What is left
//! with nothing to evict (a TLS record being written, say) does not make every count scan
//! again: the next scan waits until clients hold an eighth of the budget more.
//!
//! The count may pass the budget within one step (a connection's turn reads at most 4 x 64
//! KiB; one member's copy of a room's lines) before the step's end counts and evicts.

use std::time::{Duration, Instant};

use log::warn;
use slab::Slab;

use super::connection::Connection;
use crate::log_throttle::LogThrottle;

/// What all clients hold, and the budget they hold it in.
pub(super) struct Budget {
    /// The most all clients may hold together; 0: no budget (nothing is counted).
    limit: usize,
    /// What they hold now, as last counted.
    held: usize,
    /// Evictions are logged once a second at most.
    log: LogThrottle,
    /// What all clients held when a scan found nobody left to evict (what they hold is on
    /// its way out): no new scan until they hold an eighth of the budget more.
    fruitless: Option<usize>,
}

impl Budget {
    /// A budget of `limit` bytes (0: none).
    pub fn new(limit: usize) -> Budget {
        Budget { limit, held: 0, log: LogThrottle::new(Duration::from_secs(1)), fruitless: None }
    }

    /// Counts `conn` again: what it holds now replaces what it held. True if all clients
    /// now hold more than the budget (the caller evicts).
    #[inline]
    pub fn count(&mut self, conn: &mut Connection) -> bool {
        if self.limit == 0 {
            return false;
        }
        let (before, now) = conn.recount();
        self.held = self.held - before + now;
        self.held > self.limit
    }

    /// `conn` is gone: what it held is held no more.
    pub fn forget(&mut self, conn: &Connection) {
        self.held -= conn.held();
    }

    /// What all clients hold now.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Whether all clients hold more than the budget.
    pub fn is_over(&self) -> bool {
        self.limit > 0 && self.held > self.limit
    }

    /// Over the budget: frees the slack in every client's buffers (nothing is lost), then
    /// picks the clients to evict, the biggest holders first, until the rest hold less than
    /// seven eighths of the budget. Returns their keys.
    pub fn choose_evictions(&mut self, conns: &mut Slab<Connection>) -> Vec<usize> {
        if self.fruitless.is_some_and(|held| self.held < held + self.limit / 8) {
            return Vec::new();
        }
        let mut holders: Vec<(usize, usize)> = Vec::new();
        for (key, conn) in conns.iter_mut() {
            if conn.is_closing() || conn.is_evicted() || conn.held() == 0 {
                continue;
            }
            conn.shrink_buffers();
            let (before, now) = conn.recount();
            self.held = self.held - before + now;
            holders.push((now, key));
        }
        let target = self.limit - self.limit / 8;
        if self.held <= target {
            self.fruitless = None;
            return Vec::new();
        }
        holders.sort_unstable_by(|a, b| b.cmp(a));
        let mut excess = self.held - target;
        let mut chosen = Vec::new();
        for (held, key) in holders {
            if excess == 0 {
                break;
            }
            chosen.push(key);
            excess = excess.saturating_sub(held);
        }
        self.fruitless = chosen.is_empty().then_some(self.held);
        chosen
    }

    /// Logs an eviction, once a second at most.
    pub fn log_eviction(&mut self, key: usize, conn: &Connection) {
        if let Some(held_back) = self.log.allow(Instant::now()) {
            warn!(
                "client memory over budget, evicting the biggest holder; conn={key} peer={} held={} clients_hold={} max_client_memory={} repeats={held_back}",
                conn.peer(),
                conn.held(),
                self.held,
                self.limit
            );
        }
    }
}
