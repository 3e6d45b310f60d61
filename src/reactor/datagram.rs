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
use mio::Interest;
use mio::net::UdpSocket;

use super::Reactor;
use super::source::Source;
use crate::handlers::{ConnId, Peer};
use crate::sys::address::{ListenAddr, PeerAddr};
use crate::sys::nonblocking::gate;

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
    /// Replies the socket would not take yet.
    queued: VecDeque<(SocketAddr, Vec<u8>)>,
    queued_bytes: usize,
    writable_wanted: bool,
    /// Already on the owed list.
    pub owed: bool,
}

impl DatagramEndpoint {
    /// An endpoint for `socket`, registered elsewhere for reading.
    pub fn new(socket: UdpSocket, addr: ListenAddr, service: usize) -> DatagramEndpoint {
        DatagramEndpoint {
            socket,
            addr,
            service,
            queued: VecDeque::new(),
            queued_bytes: 0,
            writable_wanted: false,
            owed: false,
        }
    }
}

impl Reactor {
    /// Reads and answers datagrams on endpoint `index`, up to the turn's budget.
    pub(super) fn receive_datagrams(&mut self, index: usize) {
        let mut buffer = std::mem::take(&mut self.scratch.read);
        let mut budget_spent = true;
        for _ in 0..DATAGRAMS_PER_TURN {
            let Some(endpoint) = self.sources.datagrams.get(index) else {
                budget_spent = false;
                break;
            };
            match gate(|| endpoint.socket.recv_from(&mut buffer)) {
                Ok(Some((length, from))) => {
                    self.telemetry.stats.bytes_in += length as u64;
                    self.answer_datagram(index, from, &buffer[..length]);
                }
                Ok(None) => {
                    budget_spent = false;
                    break;
                }
                Err(error) => {
                    // An ICMP error for an earlier reply, say: that client, not this socket.
                    debug!("datagram receive failed; endpoint={} error={error}", endpoint.addr);
                }
            }
        }
        self.scratch.read = buffer;
        if budget_spent {
            self.owe_datagrams(index);
        }
    }

    /// Runs the handler on one datagram from `from` and sends what it replies.
    fn answer_datagram(&mut self, index: usize, from: SocketAddr, datagram: &[u8]) {
        let service = self.sources.datagrams[index].service;
        if datagram.len() > self.limits.max_frame {
            self.telemetry.stats.frame_errors += 1;
            let error = format!("ERR datagram too long (max {} bytes)", self.limits.max_frame);
            return self.send_datagram(index, from, error.as_bytes());
        }
        self.telemetry.stats.messages_in += 1;
        crate::handlers::work::busy_work(self.limits.work_per_message);
        let peer = PeerAddr::Udp(from);
        let sender = Peer { id: DATAGRAM_SENDER, addr: &peer };
        self.services[service].handler.on_message(sender, datagram, &mut self.scratch.outbox);
        let outbox = std::mem::take(&mut self.scratch.outbox);
        crate::serve::carry_out(
            &outbox,
            DATAGRAM_SENDER,
            &mut Datagram { reactor: self, endpoint: index, to: from },
        );
        self.scratch.outbox = outbox;
        self.scratch.outbox.clear();
    }

    /// Sends one reply datagram now, or queues it if the socket is full (dropping it if the
    /// queue is full too).
    fn send_datagram(&mut self, index: usize, to: SocketAddr, payload: &[u8]) {
        self.telemetry.stats.messages_out += 1;
        let endpoint = &mut self.sources.datagrams[index];
        if endpoint.queued.is_empty() {
            match gate(|| endpoint.socket.send_to(payload, to)) {
                Ok(Some(sent)) => {
                    self.telemetry.stats.bytes_out += sent as u64;
                    return;
                }
                Ok(None) => {}
                Err(error) => {
                    debug!("datagram send failed; to={to} error={error}");
                    self.telemetry.stats.datagrams_dropped += 1;
                    return;
                }
            }
        }
        if endpoint.queued.len() >= MAX_QUEUED_REPLIES
            || endpoint.queued_bytes + payload.len() > self.limits.max_output
        {
            self.telemetry.stats.datagrams_dropped += 1;
            if let Some(held_back) = self.telemetry.misbehaving_log.allow(std::time::Instant::now()) {
                warn!("reply queue full, dropping; endpoint={} to={to} repeats={held_back}", endpoint.addr);
            }
            return;
        }
        endpoint.queued_bytes += payload.len();
        endpoint.queued.push_back((to, payload.to_vec()));
        self.want_writable(index, true);
    }

    /// The socket can take more: sends queued replies.
    pub(super) fn flush_datagrams(&mut self, index: usize) {
        let Some(endpoint) = self.sources.datagrams.get_mut(index) else { return };
        while let Some((to, payload)) = endpoint.queued.front() {
            match gate(|| endpoint.socket.send_to(payload, *to)) {
                Ok(Some(sent)) => self.telemetry.stats.bytes_out += sent as u64,
                Ok(None) => return,
                Err(error) => {
                    debug!("datagram send failed; to={to} error={error}");
                    self.telemetry.stats.datagrams_dropped += 1;
                }
            }
            let (_, payload) = endpoint.queued.pop_front().expect("a queued reply");
            endpoint.queued_bytes -= payload.len();
        }
        self.want_writable(index, false);
    }

    /// Asks for `WRITABLE` while replies are queued, and stops asking once they are sent.
    fn want_writable(&mut self, index: usize, wanted: bool) {
        let endpoint = &mut self.sources.datagrams[index];
        if endpoint.writable_wanted == wanted {
            return;
        }
        let interest = if wanted { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
        let token = Source::Datagram(index).token();
        match self.poll.registry().reregister(&mut endpoint.socket, token, interest) {
            Ok(()) => endpoint.writable_wanted = wanted,
            Err(error) => warn!("reregister failed; endpoint={} error={error}", endpoint.addr),
        }
    }
}

/// What a handler's intents mean for a datagram: replies go back to its sender, one datagram
/// each. There are no connections: nothing else to send to, and nothing to close.
struct Datagram<'r> {
    reactor: &'r mut Reactor,
    endpoint: usize,
    to: SocketAddr,
}

impl crate::serve::Carrier for Datagram<'_> {
    fn reply(&mut self, payload: &[u8]) {
        self.reactor.send_datagram(self.endpoint, self.to, payload);
    }

    fn send_to(&mut self, _to: ConnId, _payload: &[u8]) {}

    fn send_to_room(&mut self, _except: ConnId, _payload: &[u8]) {}

    fn close(&mut self) {}

    fn send_file(&mut self, _path: &std::path::Path, _offset: u64, _length: u64) {}

    fn send_metrics(&mut self) {}
}
