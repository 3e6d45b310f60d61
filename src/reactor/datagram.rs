//! UDP on the same reactor: each datagram is one message (no codec), and the reply goes back
//! to the sender's address as one datagram.
//!
//! There is no connection, so no per-client state at all: a datagram comes in, the handler
//! answers, the answer goes out. Reading is budgeted per turn like everything else. The read
//! buffer (64 KiB) holds the largest possible datagram, so nothing is ever truncated;
//! datagrams over `--max-frame` get an `ERR` datagram back. A reply the socket will not take
//! right now (`WouldBlock`) waits in a bounded queue; past the bound it is dropped and
//! counted: UDP may drop, but the server must neither block nor grow without end.

use std::collections::VecDeque;
use std::net::SocketAddr;

use log::{debug, warn};
use mio::net::UdpSocket;
use mio::{Interest, Registry};

use super::Service;
use super::Source;
use super::parts::{Scratch, Telemetry};
use crate::codec::FrameError;
use crate::config::Limits;
use crate::handlers::serve::{Carrier, Serving, carry_out, serve};
use crate::handlers::{ConnId, Peer};
use crate::stats::Stats;
use crate::sys::address::{ListenAddr, PeerAddr};
use crate::sys::socket::gate;

/// Datagrams one endpoint reads per turn before the others get theirs.
const DATAGRAMS_PER_TURN: usize = 256;
/// Replies waiting for the socket, at most (their bytes are also bounded by `--max-output`).
const MAX_QUEUED_REPLIES: usize = 4096;

/// What a handler sees as the id of a datagram's sender: there is no connection, so replies
/// go to the sender's address and sends to other connections do not apply.
pub(crate) const DATAGRAM_SENDER: ConnId = ConnId(usize::MAX);

/// A UDP socket the reactor serves.
#[derive(Debug)]
pub(crate) struct DatagramEndpoint {
    pub socket: UdpSocket,
    /// The address actually bound.
    pub addr: ListenAddr,
    pub service: usize,
    /// Its index among the endpoints: its token is `Source::Datagram(index)`.
    index: usize,
    /// Replies the socket would not take yet.
    queued: VecDeque<(SocketAddr, Vec<u8>)>,
    queued_bytes: usize,
    writable_wanted: bool,
    /// Already on the owed list.
    pub owed: bool,
}

impl DatagramEndpoint {
    /// Endpoint `index` for `socket`, registered elsewhere for reading.
    pub fn new(socket: UdpSocket, addr: ListenAddr, service: usize, index: usize) -> DatagramEndpoint {
        DatagramEndpoint {
            socket,
            addr,
            service,
            index,
            queued: VecDeque::new(),
            queued_bytes: 0,
            writable_wanted: false,
            owed: false,
        }
    }

    /// Reads and answers datagrams, up to the turn's budget; true if the budget ran out
    /// (more may be waiting, and no new edge will say so).
    pub fn receive(
        &mut self,
        service: &mut Service,
        scratch: &mut Scratch,
        telemetry: &mut Telemetry,
        limits: &Limits,
        registry: &Registry,
    ) -> bool {
        let mut buffer = std::mem::take(&mut scratch.read);
        let mut budget_spent = true;
        for _ in 0..DATAGRAMS_PER_TURN {
            match gate(|| self.socket.recv_from(&mut buffer)) {
                Ok(Some((length, from))) => {
                    telemetry.stats.bytes_in += length as u64;
                    let datagram = &buffer[..length];
                    let mut one = std::iter::once(if length > limits.max_frame {
                        Err(FrameError::DatagramTooLong { max: limits.max_frame })
                    } else {
                        Ok(datagram)
                    });
                    let peer = PeerAddr::Udp(from);
                    let sender = Peer { id: DATAGRAM_SENDER, addr: &peer };
                    let outbox = &mut scratch.outbox;
                    let mut counts = Counts { stats: &mut telemetry.stats, limits };
                    serve(service.handler.as_mut(), sender, &mut one, outbox, &mut counts);
                    let mut reply = Reply {
                        endpoint: self,
                        to: from,
                        telemetry,
                        max_output: limits.max_output,
                        registry,
                    };
                    carry_out(outbox, DATAGRAM_SENDER, &mut reply);
                    outbox.clear();
                }
                Ok(None) => {
                    budget_spent = false;
                    break;
                }
                Err(error) => {
                    // An ICMP error for an earlier reply, say: that client, not this socket.
                    debug!("datagram receive failed; endpoint={} error={error}", self.addr);
                }
            }
        }
        scratch.read = buffer;
        budget_spent
    }

    /// Sends one reply datagram now, or queues it if the socket is full (dropping it if the
    /// queue is full too).
    fn send(
        &mut self,
        to: SocketAddr,
        payload: &[u8],
        telemetry: &mut Telemetry,
        max_output: usize,
        registry: &Registry,
    ) {
        telemetry.stats.messages_out += 1;
        if self.queued.is_empty() {
            match gate(|| self.socket.send_to(payload, to)) {
                Ok(Some(sent)) => {
                    telemetry.stats.bytes_out += sent as u64;
                    return;
                }
                Ok(None) => {}
                Err(error) => {
                    debug!("datagram send failed; to={to} error={error}");
                    telemetry.stats.datagrams_dropped += 1;
                    return;
                }
            }
        }
        if self.queued.len() >= MAX_QUEUED_REPLIES || self.queued_bytes + payload.len() > max_output {
            telemetry.stats.datagrams_dropped += 1;
            let addr = &self.addr;
            telemetry.misbehaving(format_args!("reply queue full, dropping; endpoint={addr} to={to}"));
            return;
        }
        self.queued_bytes += payload.len();
        self.queued.push_back((to, payload.to_vec()));
        self.want_writable(registry, true);
    }

    /// The socket can take more: sends queued replies.
    pub fn flush(&mut self, registry: &Registry, stats: &mut Stats) {
        while let Some((to, payload)) = self.queued.front() {
            match gate(|| self.socket.send_to(payload, *to)) {
                Ok(Some(sent)) => stats.bytes_out += sent as u64,
                Ok(None) => return,
                Err(error) => {
                    debug!("datagram send failed; to={to} error={error}");
                    stats.datagrams_dropped += 1;
                }
            }
            let (_, payload) = self.queued.pop_front().expect("a queued reply");
            self.queued_bytes -= payload.len();
        }
        self.want_writable(registry, false);
    }

    /// Asks for `WRITABLE` while replies are queued, and stops asking once they are sent.
    fn want_writable(&mut self, registry: &Registry, wanted: bool) {
        if self.writable_wanted == wanted {
            return;
        }
        let interest = if wanted { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
        match registry.reregister(&mut self.socket, Source::Datagram(self.index).token(), interest) {
            Ok(()) => self.writable_wanted = wanted,
            Err(error) => warn!("reregister failed; endpoint={} error={error}", self.addr),
        }
    }
}

/// What the serve step counts for a datagram.
struct Counts<'r> {
    stats: &'r mut Stats,
    limits: &'r Limits,
}

impl Serving for Counts<'_> {
    fn work(&self) -> std::time::Duration {
        self.limits.work_per_message
    }

    fn received(&mut self) {
        self.stats.messages_in += 1;
    }

    fn refused(&mut self, _error: &FrameError) {
        self.stats.frame_errors += 1;
    }
}

/// What a handler's intents mean for a datagram: replies go back to its sender, one datagram
/// each. There are no connections: nothing else to send to, and nothing to close.
struct Reply<'r> {
    endpoint: &'r mut DatagramEndpoint,
    to: SocketAddr,
    telemetry: &'r mut Telemetry,
    max_output: usize,
    registry: &'r Registry,
}

impl Carrier for Reply<'_> {
    fn reply(&mut self, payload: &[u8]) {
        self.endpoint.send(self.to, payload, self.telemetry, self.max_output, self.registry);
    }

    fn send_to(&mut self, _to: ConnId, _payload: &[u8]) {}

    fn send_to_room(&mut self, _except: ConnId, _payload: &[u8]) {}

    fn close(&mut self) {}

    fn send_file(&mut self, _path: &std::path::Path, _offset: u64, _length: u64) {}

    fn send_metrics(&mut self) {}
}
