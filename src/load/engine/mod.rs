//! One loader thread: a mio reactor of its own, driving its share of the connections
//! through the phases of a run.
//!
//! ```text
//! Connecting ─► (Syncing) ─► Running ─► Draining ─► (Holding) ─► Done
//!
//! - Connecting: open its connections; wait until every thread's (and, for a part of a
//!   multi-process run, every process's) are up.
//! - Syncing, broadcast only: make sure every member is in the room before anything counts.
//! - Running: send, read, verify every reply.
//! - Draining: no more sends; wait for outstanding replies.
//! - Holding, with `--hold`: keep the connections open and idle (memory measurements).
//! - Done: what never came is counted as lost.
//! ```
//!
//! Like the server, it reads into one shared buffer, decodes with evloop's own codecs, and
//! writes each connection's new requests in one `write` per turn. Sockets stay registered
//! for reading and writing from the start (edge-triggered, so that costs no extra wakeups),
//! which saves the `epoll_ctl` calls the server must make: the loader's own cost stays low.

mod connect;
mod generic;
mod phases;
mod publish;
mod receive;
mod send;

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mio::{Events, Poll, Token};
use publish::Published;
use slab::Slab;

use super::clock::now_ns;
use super::config::LoadConfig;
use super::plan::Plan;
use super::shared::Shared;
use super::socket::LoadSocket;
use super::tally::Tally;
use super::timer::Timer;
use super::workload::Workload;
use crate::codec::Decoder;
use crate::sys::nonblocking::interrupted;

/// The pacer's token; connection tokens are slab keys, far below it.
const PACER: Token = Token(usize::MAX);
/// Closed-loop broadcast: another thread saw a line of ours reach its last member.
const WAKER: Token = Token(usize::MAX - 1);
/// The alarm: a deadline of the run came.
const ALARM: Token = Token(usize::MAX - 2);
const EVENTS_PER_POLL: usize = 1024;
const READ_BUFFER_SIZE: usize = 64 * 1024;
/// Connects in progress at once when no `--connect-rate` is given: as fast as the server
/// accepts, without flooding its backlog.
const MAX_PENDING_CONNECTS: usize = 256;
/// Longest reply accepted; a longer one is a mismatch.
const MAX_REPLY: usize = 16 * 1024 * 1024;
/// How often a thread publishes its totals for the progress line (and the broadcast drain).
const PUBLISH_EVERY_NS: u64 = 100_000_000;
/// How often the broadcast sync message is repeated until every member has seen it.
const SYNC_EVERY_NS: u64 = 20_000_000;
/// How often waiting phases look at the other threads' progress.
const CHECK_EVERY_NS: u64 = 5_000_000;
/// TLS: reads of one connection per turn before the others get theirs. A TLS read cannot tell
/// a drained socket from a short record, so the connection must be read again, but not at
/// once: a fast server kept the loader on one connection while the rest waited (write-each,
/// 16 in flight, 100 connections: 119k msgs/s and p99 518 ms reading on; 1 read a turn:
/// 325k msgs/s, p99 8.6 ms; 2, 4 and 8 fall in between).
const TLS_READS_PER_TURN: usize = 1;
/// UDP: how many outstanding requests a reply is matched against.
const DATAGRAM_MATCH_WINDOW: usize = 64;
/// How often outstanding requests are checked against `--reply-timeout`: this many times
/// per timeout (so a wait ends at most a 16th of it late), between the two bounds below.
/// Each check looks at every connection that is up.
const REPLY_CHECKS_PER_TIMEOUT: u64 = 16;
const REPLY_CHECK_MIN_NS: u64 = 20_000_000;
const REPLY_CHECK_MAX_NS: u64 = 1_000_000_000;

/// Hashes the connection ids the loader keys its maps with: one multiplication. The
/// default (SipHash, built against hash flooding, which ids chosen here cannot do) costs
/// more than the lookup it serves, once per broadcast delivery.
#[derive(Clone, Copy, Debug, Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64((self.0 << 8) | u64::from(byte));
        }
    }

    fn write_u32(&mut self, id: u32) {
        self.write_u64(u64::from(id));
    }

    fn write_u64(&mut self, value: u64) {
        // Fibonacci hashing: the golden ratio spreads consecutive ids over the high bits.
        self.0 = value.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// The last sequence number a receiver got from each sender. Lines come in runs from one
/// sender (a room's lines of a turn are grouped by sender), so the current sender's is kept
/// aside and the map is touched only when the sender changes.
#[derive(Debug, Default)]
struct LastSeqs {
    current: Option<(u32, u64)>,
    others: HashMap<u32, u64, BuildHasherDefault<IdHasher>>,
}

impl LastSeqs {
    /// Notes line `seq` of `sender`; returns the one before it from that sender, if any.
    fn advance(&mut self, sender: u32, seq: u64) -> Option<u64> {
        if let Some((current, last)) = &mut self.current {
            if *current == sender {
                return Some(std::mem::replace(last, seq));
            }
        }
        if let Some((previous, last)) = self.current.replace((sender, seq)) {
            self.others.insert(previous, last);
        }
        self.others.remove(&sender)
    }
}

/// A request sent and not yet answered.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    seq: u64,
    intended_ns: u64,
    sent_ns: u64,
    wire_bytes: u32,
}

/// The handshakes a connection goes through once connected, before it is up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Handshake {
    /// None under way (not connected yet, or up).
    None,
    /// `--tls`: the TLS handshake, started then (monotonic ns): its latency is reported
    /// apart from the TCP connect's.
    Tls { started_ns: u64 },
    /// `--codec ws`: the opening request sent, the server's answer awaited.
    WebSocket,
    /// `--first-expect`: the first message sent, the server's answer awaited.
    FirstReply,
}

/// A file coming in: what is left of it, and the checksum of what came.
#[derive(Clone, Debug)]
struct Download {
    /// Its index in the catalogue.
    file: usize,
    remaining: u64,
    hasher: crc32fast::Hasher,
}

/// One loader connection.
#[derive(Debug)]
struct LoadConn {
    id: u32,
    stream: LoadSocket,
    up: bool,
    /// Connected, and this handshake under way (the connection is up once it is done).
    handshake: Handshake,
    connect_started_ns: u64,
    decoder: Decoder,
    /// The undecoded tail of an incomplete reply.
    partial: Vec<u8>,
    /// Bytes of replies taken so far: where in the stream a mismatch is.
    received_bytes: u64,
    /// `--latency-marker`: the search for it across reads.
    marker: crate::load::script::MarkerScan,
    /// Requests not written yet (`written` of them are).
    output: Vec<u8>,
    written: usize,
    queued_for_flush: bool,
    next_seq: u64,
    in_flight: VecDeque<InFlight>,
    /// `--workload file`: the download under way (its header read, bytes still to come).
    download: Option<Download>,
    /// Broadcast: it has seen the sync message, so it is surely in the room.
    synced: bool,
    /// Closed-loop broadcast: its lines before this one have reached every member.
    answered: u64,
    /// Broadcast: the last sequence number it got from each sender, to check that every
    /// line arrives once and in the order sent.
    last_seq_from: LastSeqs,
    /// UDP: requests the socket would not take yet, one datagram each.
    queued_datagrams: VecDeque<Vec<u8>>,
    /// When reply bytes last came (monotonic ns): a stream's wait for its oldest reply
    /// counts from this or that request's send, whichever is later, so a long reply still
    /// coming is not taken for a stall.
    heard_ns: u64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    Connecting,
    Syncing,
    Running,
    /// No more sends; waiting for the replies outstanding, until the deadline:
    /// `--reply-timeout` after every thread has stopped sending (`u64::MAX` until then).
    Draining {
        deadline_ns: u64,
    },
    /// `--hold`: everything verified, connections kept open and idle until then.
    Holding {
        until_ns: u64,
    },
    Done,
}

/// Runs one thread's share of the load and returns its tally.
pub fn run(config: &LoadConfig, plan: Plan, shared: &Shared) -> io::Result<Tally> {
    Engine::new(config, plan, shared)?.run()
}

struct Engine<'a> {
    config: &'a LoadConfig,
    /// `--tls`: the client settings every connection's session is made with.
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    plan: Plan,
    shared: &'a Shared,
    poll: Poll,
    /// Open loop: when the next message is due.
    pacer: Option<Timer>,
    /// The next deadline of the run itself (see `timer.rs`), armed at `alarm_ns`.
    alarm: Timer,
    alarm_ns: u64,
    conns: Slab<LoadConn>,
    /// Keys of connections that are up, for open-loop round robin.
    up_keys: Vec<usize>,
    phase: Phase,
    tally: Tally,
    read_buf: Vec<u8>,
    scratch: Vec<u8>,
    expected: Vec<u8>,
    flush_queue: Vec<usize>,
    /// TLS connections whose read stopped at `TLS_READS_PER_TURN`: read again next turn (no
    /// new edge will say their bytes are there).
    owed_reads: Vec<usize>,
    /// Connecting: the next connection to open (0-based within the plan), and how many are
    /// still in progress.
    next_connect: u32,
    pending_connects: usize,
    connect_phase_start_ns: u64,
    next_timeout_check_ns: u64,
    /// Running: the common start, the end of warmup, and the end of sending.
    run_start_ns: u64,
    warmup_end_ns: u64,
    stop_ns: Option<u64>,
    /// Messages this thread may still send (`--messages`), if limited.
    budget: Option<u64>,
    /// Open loop: the index of the next scheduled message, and the spacing.
    next_send: u64,
    interval_ns: f64,
    in_flight: usize,
    /// Broadcast: each connection's address as the server prints it, by id.
    sender_addrs: Vec<Option<String>>,
    next_sync_ns: u64,
    /// Broadcast: when to stop waiting for every member to be in the room.
    sync_deadline_ns: u64,
    next_reply_check_ns: u64,
    published: Published,
    next_publish_ns: u64,
}

impl<'a> Engine<'a> {
    fn new(config: &'a LoadConfig, plan: Plan, shared: &'a Shared) -> io::Result<Engine<'a>> {
        let poll = Poll::new()?;
        let pacer = match config.open_loop_rate() {
            Some(_) => Some(Timer::new(poll.registry(), PACER)?),
            None => None,
        };
        if let Some(acks) = &shared.acks {
            acks.set_waker(plan.index, mio::Waker::new(poll.registry(), WAKER)?);
        }
        let alarm = Timer::new(poll.registry(), ALARM)?;
        let tls = match &config.tls {
            Some(trust) => Some(super::tls::client_config(trust).map_err(io::Error::other)?),
            None => None,
        };
        let budget = plan.messages;
        // No rate share (no active connection here): an endless interval, nothing is due.
        let interval_ns = match plan.rate {
            Some(rate) if rate > 0.0 => 1e9 / rate,
            _ => f64::INFINITY,
        };
        let now = now_ns();
        Ok(Engine {
            config,
            tls,
            plan,
            shared,
            poll,
            pacer,
            alarm,
            alarm_ns: 0,
            conns: Slab::new(),
            up_keys: Vec::new(),
            phase: Phase::Connecting,
            tally: Tally::default(),
            read_buf: vec![0; READ_BUFFER_SIZE],
            scratch: Vec::new(),
            expected: Vec::new(),
            flush_queue: Vec::new(),
            owed_reads: Vec::new(),
            next_connect: 0,
            pending_connects: 0,
            connect_phase_start_ns: now,
            next_timeout_check_ns: now,
            run_start_ns: 0,
            warmup_end_ns: 0,
            stop_ns: None,
            budget,
            next_send: 0,
            interval_ns,
            in_flight: 0,
            sender_addrs: Vec::new(),
            next_sync_ns: 0,
            sync_deadline_ns: u64::MAX,
            next_reply_check_ns: 0,
            published: Published::default(),
            next_publish_ns: now,
        })
    }

    fn run(mut self) -> io::Result<Tally> {
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        loop {
            let now = now_ns();
            self.read_owed();
            self.step(now);
            self.flush_queued();
            self.publish(now, self.phase == Phase::Done);
            if self.phase == Phase::Done {
                break;
            }
            let timeout = self.poll_timeout(now_ns())?;
            if let Err(error) = self.poll.poll(&mut events, timeout) {
                if interrupted(&error) {
                    continue;
                }
                return Err(error);
            }
            for event in events.iter() {
                self.on_event(event);
            }
        }
        if self.config.workload != Workload::Broadcast {
            for (_, conn) in &self.conns {
                self.tally.lost += conn.in_flight.len() as u64;
            }
        }
        if self.config.workload == Workload::Broadcast && self.plan.index == 0 {
            // Deliveries are expected by senders and seen by receivers in any thread: the
            // shortfall is only known in total, so one thread reports it.
            let expected = self.shared.deliveries_expected.load(Ordering::Acquire);
            let seen = self.shared.deliveries_seen.load(Ordering::Acquire);
            self.tally.lost += expected.saturating_sub(seen);
        }
        Ok(self.tally)
    }

    /// Routes one readiness event: the pacer, or a connection (connecting, readable,
    /// writable).
    fn on_event(&mut self, event: &mio::event::Event) {
        if event.token() == PACER {
            if let Some(pacer) = &self.pacer {
                pacer.clear();
            }
            return;
        }
        if event.token() == WAKER {
            return; // the answered lines are collected in the running phase
        }
        if event.token() == ALARM {
            self.alarm.clear();
            self.alarm_ns = 0;
            return;
        }
        let key = event.token().0;
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        if !conn.up {
            self.finish_connect(key);
        }
        if !self.conns.get(key).is_some_and(|conn| conn.up) {
            return;
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.read(key, event.is_read_closed() || event.is_error());
        }
        if event.is_writable() && self.conns.contains(key) {
            self.queue_flush(key);
        }
    }

    /// How long `poll` may wait: not at all if a deadline has come; otherwise until an
    /// event, with the alarm armed for the next deadline (re-armed only when that moves
    /// earlier, or the alarm has gone off).
    fn poll_timeout(&mut self, now: u64) -> io::Result<Option<Duration>> {
        let wake_ns = self.next_deadline(now);
        if wake_ns <= now || !self.owed_reads.is_empty() {
            return Ok(Some(Duration::ZERO));
        }
        if wake_ns != u64::MAX && (self.alarm_ns <= now || wake_ns < self.alarm_ns) {
            self.alarm.arm_at(wake_ns)?;
            self.alarm_ns = wake_ns;
        }
        Ok(None)
    }

    /// When the run must look at the time again (`u64::MAX`: only when something happens).
    fn next_deadline(&self, now: u64) -> u64 {
        match self.phase {
            Phase::Connecting => self.next_connect_due().unwrap_or(u64::MAX).min(now + CHECK_EVERY_NS),
            Phase::Syncing => now + CHECK_EVERY_NS,
            // No connection left: nothing will wake it, and there is nothing to wait for.
            Phase::Running if self.up_keys.is_empty() => now,
            Phase::Running => self.stop_ns.unwrap_or(u64::MAX).min(self.next_publish_ns),
            Phase::Draining { deadline_ns } => deadline_ns.min(now + CHECK_EVERY_NS),
            Phase::Holding { until_ns } => until_ns,
            Phase::Done => now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LastSeqs;

    /// Each sender's previous line is remembered, whichever senders come between.
    #[test]
    fn last_seqs_follow_each_sender() {
        let mut seqs = LastSeqs::default();
        assert_eq!(seqs.advance(1, 0), None);
        assert_eq!(seqs.advance(1, 1), Some(0));
        assert_eq!(seqs.advance(2, 0), None);
        assert_eq!(seqs.advance(1, 2), Some(1));
        assert_eq!(seqs.advance(3, 7), None);
        assert_eq!(seqs.advance(2, 1), Some(0));
        assert_eq!(seqs.advance(2, 2), Some(1));
        assert_eq!(seqs.advance(1, 3), Some(2));
        assert_eq!(seqs.advance(3, 8), Some(7));
    }
}
