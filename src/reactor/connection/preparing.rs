//! Ready before served, from the connection's side: its place in its room once served, the
//! PROXY header (the preamble layer) while it has not come, and a transport that refuses what
//! it reads. A connection is served only once every layer below its handler is done (its
//! PROXY header parsed, its TLS and WebSocket handshakes finished): until then its handler
//! has not heard of it and no room line reaches it (`accept.rs` serves it when it is ready).

use std::io;

use log::warn;

use super::{CloseReason, Connection, Next, Progress, Stage, Stamp, Turn};
use crate::sys::address::PeerAddr;

impl Connection {
    /// Where it sits in its room's member list.
    pub fn member_index(&self) -> usize {
        self.member_index as usize
    }

    /// Another member left and this one took its place in the list.
    pub fn moved_to(&mut self, member_index: usize) {
        self.member_index = member_index as u32;
    }

    /// Whether it is still preparing with the deadline `until_ms` (not served, not closed
    /// and reused since).
    pub fn prepares_until(&self, until_ms: u64) -> bool {
        self.stage == Stage::Preparing { until: Stamp::of(until_ms) }
    }

    /// It is served from now on, as member `member_index` of its room.
    pub fn serve(&mut self, member_index: usize) {
        self.stage = Stage::Ready { room_wait: 0 };
        self.member_index = member_index as u32;
    }

    /// The PROXY header came: the client is `source` (the balancer's own connection, a health
    /// check, names none: the address stays the balancer's).
    pub fn preamble_received(&mut self, source: Option<std::net::SocketAddr>) {
        self.awaits_preamble = false;
        if let Some(source) = source {
            self.peer = PeerAddr::Tcp(source);
        }
    }
}

impl Turn<'_> {
    /// Behind a balancer: the connection's first bytes are a PROXY header. Until it is all
    /// there they wait in the connection's input; then the real client's address replaces
    /// the balancer's, and what followed the header goes on up the stack. A connection
    /// without a valid header is closed, never served with the wrong address.
    pub(super) fn take_preamble(&mut self, bytes: &[u8], progress: &mut Progress) -> Option<Next> {
        let mut input = self.conn.take_partial_input().unwrap_or_else(|| self.scratch.pool.take());
        input.extend_from_slice(bytes);
        let next = match crate::preamble::parse(&input) {
            Ok(None) => {
                self.conn.keep_partial_input(input, &mut self.scratch.pool);
                return None;
            }
            Ok(Some(header)) => {
                self.conn.preamble_received(header.source);
                if input.len() > header.length {
                    // What the client sent after the header, up the stack.
                    self.receive(&input[header.length..], progress)
                } else {
                    self.conn.is_ready_to_serve().then_some(Next::Promote)
                }
            }
            Err(error) => {
                let (key, peer) = (self.key, self.conn.peer().clone());
                self.telemetry.misbehaving(format_args!(
                    "closing a connection without a valid PROXY header; conn={key} peer={peer} error={error}"
                ));
                self.close_later(CloseReason::Error(io::Error::other(error.to_string())));
                None
            }
        };
        self.scratch.pool.give(input);
        next
    }

    /// A transport refused what it read (TLS: not TLS at all, a garbled or truncated
    /// ClientHello): counted, logged once per throttle period, and the connection closed
    /// (after the alert the transport queued). Nobody else is affected.
    pub(super) fn transport_failed(&mut self, error: io::Error) {
        if error.kind() != io::ErrorKind::InvalidData {
            return self.close_later(CloseReason::Error(error));
        }
        self.telemetry.stats.tls_failures += 1;
        let (key, peer): (usize, &PeerAddr) = (self.key, self.conn.peer());
        if let Some(held_back) = self.telemetry.misbehaving_log.allow(std::time::Instant::now()) {
            warn!("TLS failed; conn={key} peer={peer} error={error} repeats={held_back}");
        }
        self.close_later(CloseReason::Tls);
    }
}
