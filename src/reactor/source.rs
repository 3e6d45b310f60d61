//! Sources: everything the poll watches, each with its token, and the one place a token is
//! routed to what it belongs to, whether a readiness event brings it or the owed list does.
//!
//! Connection tokens are slab keys (small numbers). Stream listeners, UDP endpoints, the
//! two backplane links, the signal pipe and the waker have fixed tokens in ranges at the
//! top of the `usize` range, which no slab key reaches.

use std::time::Instant;

use log::trace;
use mio::Token;

use super::Reactor;
use crate::backplane::Role;

/// Most listeners one reactor serves.
pub(crate) const MAX_LISTENERS: usize = 1024;
/// Wakes the poll when a `ServerHandle` sends a command.
const WAKER: usize = usize::MAX;
/// SIGINT, SIGTERM and SIGHUP, when the server handles signals: each drains and stops.
const SIGNALS: usize = usize::MAX - 1;
/// The backplane's publishing link.
const BACKPLANE_PUBLISHER: usize = usize::MAX - 2;
/// The backplane's subscribing link.
const BACKPLANE_SUBSCRIBER: usize = usize::MAX - 3;
/// Listener `i` has token `FIRST_LISTENER + i`.
const FIRST_LISTENER: usize = usize::MAX - 4 - MAX_LISTENERS;
/// UDP endpoint `j` has token `FIRST_DATAGRAM + j`.
const FIRST_DATAGRAM: usize = FIRST_LISTENER - MAX_LISTENERS;
/// Connection keys stay below this, far below the fixed tokens.
pub(crate) const MAX_CONNECTIONS: usize = FIRST_DATAGRAM;

/// Who a token belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Source {
    /// A `ServerHandle` sent a command.
    Waker,
    /// A signal arrived.
    Signals,
    /// A backplane link.
    Backplane(Role),
    /// Stream listener `i`.
    Listener(usize),
    /// UDP endpoint `i`.
    Datagram(usize),
    /// The connection with this slab key.
    Conn(usize),
}

impl Source {
    /// The source of `token`.
    #[inline]
    pub fn of(Token(token): Token) -> Source {
        match token {
            WAKER => Source::Waker,
            SIGNALS => Source::Signals,
            BACKPLANE_PUBLISHER => Source::Backplane(Role::Publisher),
            BACKPLANE_SUBSCRIBER => Source::Backplane(Role::Subscriber),
            token if token >= FIRST_LISTENER => Source::Listener(token - FIRST_LISTENER),
            token if token >= FIRST_DATAGRAM => Source::Datagram(token - FIRST_DATAGRAM),
            key => Source::Conn(key),
        }
    }

    /// Its token.
    pub fn token(self) -> Token {
        Token(match self {
            Source::Waker => WAKER,
            Source::Signals => SIGNALS,
            Source::Backplane(Role::Publisher) => BACKPLANE_PUBLISHER,
            Source::Backplane(Role::Subscriber) => BACKPLANE_SUBSCRIBER,
            Source::Listener(index) => FIRST_LISTENER + index,
            Source::Datagram(index) => FIRST_DATAGRAM + index,
            Source::Conn(key) => key,
        })
    }
}

/// What a source is ready for.
#[derive(Clone, Copy, Debug)]
pub(super) struct Readiness {
    pub readable: bool,
    pub writable: bool,
    /// The end of the stream (or an error) was announced with it: read on to `WouldBlock`,
    /// since no further edge will come.
    pub drain: bool,
    /// It comes from the owed list (not an event): it is off the list now.
    pub owed: bool,
}

impl Readiness {
    /// What a readiness event says.
    #[inline]
    pub fn of(event: &mio::event::Event) -> Readiness {
        let closed = event.is_read_closed() || event.is_error();
        Readiness {
            readable: event.is_readable() || closed,
            writable: event.is_writable() || event.is_write_closed() || event.is_error(),
            drain: closed,
            owed: false,
        }
    }

    /// Owed a read: no event will come for what waits, so read on to `WouldBlock`.
    const OWED: Readiness = Readiness { readable: true, writable: false, drain: true, owed: true };
}

impl Reactor {
    /// Serves `source`, ready as `ready` says: the one place a token is routed.
    pub(super) fn serve_source(&mut self, source: Source, ready: Readiness, now: Instant) {
        match source {
            Source::Waker => self.run_commands(now),
            Source::Signals => self.on_signals(now),
            Source::Backplane(role) => self.on_backplane(role, now),
            Source::Listener(index) => {
                if ready.owed {
                    if let Some(slot) = self.sources.listeners.get_mut(index) {
                        slot.owed = false;
                    }
                }
                self.accept_from(index);
            }
            Source::Datagram(index) => {
                if ready.writable {
                    self.flush_datagrams(index);
                }
                if ready.readable {
                    if ready.owed {
                        if let Some(endpoint) = self.sources.datagrams.get_mut(index) {
                            endpoint.owed = false;
                        }
                    }
                    self.receive_datagrams(index);
                }
            }
            Source::Conn(key) => {
                trace!(
                    "event; conn={key} readable={} writable={} closed={}",
                    ready.readable, ready.writable, ready.drain
                );
                if ready.writable {
                    self.queue_flush(key);
                }
                if ready.readable {
                    let mark = self.telemetry.trace.mark(&self.telemetry.stats);
                    if ready.owed {
                        if let Some(conn) = self.conns.get_mut(key) {
                            conn.clear_owed_read();
                        }
                    }
                    self.read_from(key, ready.drain);
                    if let Some(mark) = mark {
                        let peer = self.conns.get(key).map(|conn| conn.peer().clone());
                        self.telemetry.trace.served(key, peer, mark, &self.telemetry.stats);
                    }
                }
            }
        }
    }

    /// Serves what earlier passes cut short. A pass can owe again; that waits for the next
    /// turn (with a zero poll timeout), so new events get their turn in between.
    pub(super) fn serve_owed(&mut self) {
        let mut owed = std::mem::take(&mut self.queues.owed);
        for &source in &owed {
            self.serve_source(source, Readiness::OWED, Instant::now());
        }
        owed.clear();
        if self.queues.owed.is_empty() {
            self.queues.owed = owed;
        }
    }

    /// Notes that `key` has bytes waiting that no event will announce again.
    pub(super) fn owe_read(&mut self, key: usize) {
        if self.conns.get_mut(key).is_some_and(|conn| conn.owe_read()) {
            self.queues.owed.push(Source::Conn(key));
        }
    }

    /// Notes that listener `index` may have connections waiting in its backlog.
    pub(super) fn owe_accept(&mut self, index: usize) {
        if let Some(slot) = self.sources.listeners.get_mut(index) {
            if !slot.owed {
                slot.owed = true;
                self.queues.owed.push(Source::Listener(index));
            }
        }
    }

    /// Notes that endpoint `index` may have datagrams waiting that no event will announce.
    pub(super) fn owe_datagrams(&mut self, index: usize) {
        if let Some(endpoint) = self.sources.datagrams.get_mut(index) {
            if !endpoint.owed {
                endpoint.owed = true;
                self.queues.owed.push(Source::Datagram(index));
            }
        }
    }

    /// Notes that a backplane link's budget ran out with bytes perhaps still waiting.
    pub(super) fn owe_backplane(&mut self, role: Role) {
        let source = Source::Backplane(role);
        if !self.queues.owed.contains(&source) {
            self.queues.owed.push(source);
        }
    }
}
