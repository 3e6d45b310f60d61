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

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::mem;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::clock::now_ns;
use super::config::{LoadConfig, Stop};
use super::pacer::Pacer;
use super::shared::Shared;
use super::socket::LoadSocket;
use super::tally::Tally;
use super::workload::{self, SYNC, Workload};
use crate::codec::Decoder;
use crate::nonblocking::{interrupted, would_block};

/// The pacer's token; connection tokens are slab keys, far below it.
const PACER: Token = Token(usize::MAX);
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
/// UDP: how many outstanding requests a reply is matched against.
const DATAGRAM_MATCH_WINDOW: usize = 64;
/// UDP: how often requests are checked against `--reply-timeout`.
const DATAGRAM_CHECK_EVERY_NS: u64 = 20_000_000;

/// This thread's share of the run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The thread's number, 0-based.
    pub index: usize,
    /// The id of its first connection; it owns `first_id..first_id + count`.
    pub first_id: u32,
    /// How many connections it opens.
    pub count: u32,
    /// Its share of `--messages`.
    pub messages: Option<u64>,
    /// Its share of the open-loop rate, messages per second.
    pub rate: Option<f64>,
    /// Its share of `--connect-rate`.
    pub connect_rate: Option<f64>,
    /// How many of its connections send (`--active`); the rest stay idle.
    pub active: u32,
}

/// A request sent and not yet answered.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    seq: u64,
    intended_ns: u64,
    sent_ns: u64,
    wire_bytes: u32,
}

/// One loader connection.
#[derive(Debug)]
struct LoadConn {
    id: u32,
    stream: LoadSocket,
    up: bool,
    connect_started_ns: u64,
    decoder: Decoder,
    /// The undecoded tail of an incomplete reply.
    partial: Vec<u8>,
    /// Requests not written yet (`written` of them are).
    output: Vec<u8>,
    written: usize,
    queued_for_flush: bool,
    next_seq: u64,
    in_flight: VecDeque<InFlight>,
    /// Broadcast: it has seen the sync message, so it is surely in the room.
    synced: bool,
    /// UDP: requests the socket would not take yet, one datagram each.
    queued_datagrams: VecDeque<Vec<u8>>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    Connecting,
    Syncing,
    Running,
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
    plan: Plan,
    shared: &'a Shared,
    poll: Poll,
    pacer: Option<Pacer>,
    conns: Slab<LoadConn>,
    /// Keys of connections that are up, for open-loop round robin.
    up_keys: Vec<usize>,
    phase: Phase,
    tally: Tally,
    read_buf: Vec<u8>,
    scratch: Vec<u8>,
    expected: Vec<u8>,
    flush_queue: Vec<usize>,
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
    next_datagram_check_ns: u64,
    published: Published,
    next_publish_ns: u64,
}

/// The totals last added to the shared counters, so each publish adds only the change.
#[derive(Clone, Copy, Debug, Default)]
struct Published {
    sent: u64,
    received: u64,
    failures: u64,
    deliveries_expected: u64,
    deliveries_seen: u64,
}

impl<'a> Engine<'a> {
    fn new(config: &'a LoadConfig, plan: Plan, shared: &'a Shared) -> io::Result<Engine<'a>> {
        let poll = Poll::new()?;
        let pacer = match config.open_loop_rate() {
            Some(_) => Some(Pacer::new(poll.registry(), PACER)?),
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
            plan,
            shared,
            poll,
            pacer,
            conns: Slab::new(),
            up_keys: Vec::new(),
            phase: Phase::Connecting,
            tally: Tally::default(),
            read_buf: vec![0; READ_BUFFER_SIZE],
            scratch: Vec::new(),
            expected: Vec::new(),
            flush_queue: Vec::new(),
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
            next_datagram_check_ns: 0,
            published: Published::default(),
            next_publish_ns: now,
        })
    }

    fn run(mut self) -> io::Result<Tally> {
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        loop {
            let now = now_ns();
            self.step(now);
            self.flush_queued();
            self.publish(now, self.phase == Phase::Done);
            if self.phase == Phase::Done {
                break;
            }
            let timeout = self.poll_timeout(now_ns());
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
        for (_, conn) in &self.conns {
            self.tally.lost += conn.in_flight.len() as u64;
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

    // ----- phases -------------------------------------------------------------------

    fn step(&mut self, now: u64) {
        match self.phase {
            Phase::Connecting => {
                self.start_connects(now);
                self.expire_connects(now);
                let mine_done = self.next_connect == self.plan.count && self.pending_connects == 0;
                if mine_done && self.shared.all_connects_finished() && self.shared.may_run() {
                    if self.config.workload == Workload::Broadcast {
                        self.sender_addrs = self.shared.sender_addrs.lock().expect("not poisoned").clone();
                        self.phase = Phase::Syncing;
                    } else {
                        self.start_running(now);
                    }
                }
            }
            Phase::Syncing => self.sync(now),
            Phase::Running => {
                self.expire_datagrams(now);
                if self.pacer.is_some() {
                    self.send_due(now);
                }
                let out_of_time = self.stop_ns.is_some_and(|stop| now >= stop);
                let out_of_budget = self.budget == Some(0);
                if out_of_time || out_of_budget || self.up_keys.is_empty() {
                    let deadline_ns = now + self.config.reply_timeout.as_nanos() as u64;
                    self.phase = Phase::Draining { deadline_ns };
                }
            }
            Phase::Draining { deadline_ns } => {
                self.expire_datagrams(now);
                let settled = if self.config.workload == Workload::Broadcast {
                    self.publish(now, true);
                    self.shared.deliveries_seen.load(Ordering::Acquire)
                        >= self.shared.deliveries_expected.load(Ordering::Acquire)
                } else {
                    self.in_flight == 0
                };
                if settled || now >= deadline_ns {
                    self.hold_or_finish(now);
                }
            }
            Phase::Holding { until_ns } => {
                if now >= until_ns {
                    self.phase = Phase::Done;
                }
            }
            Phase::Done => {}
        }
    }

    /// The run is over: keep the connections open for `--hold` (so the server's memory per
    /// idle connection can be measured), or finish.
    fn hold_or_finish(&mut self, now: u64) {
        if self.config.hold.is_zero() {
            self.phase = Phase::Done;
            return;
        }
        self.publish(now, true);
        self.shared.holding.fetch_add(1, Ordering::AcqRel);
        self.phase = Phase::Holding { until_ns: now + self.config.hold.as_nanos() as u64 };
    }

    fn start_running(&mut self, now: u64) {
        self.run_start_ns = self.shared.agree_on_run_start(now);
        self.warmup_end_ns = self.run_start_ns + self.config.warmup.as_nanos() as u64;
        self.stop_ns = match self.config.stop {
            Stop::After(duration) => Some(self.warmup_end_ns + duration.as_nanos() as u64),
            Stop::Messages(_) => None,
        };
        self.phase = Phase::Running;
        if self.pacer.is_some() {
            // Open loop: send what is due and arm the pacer for the rest.
            self.send_due(now);
        } else {
            // Closed loop: fill every active connection's pipeline; each reply then sends the
            // next.
            for key in self.sending_keys().to_vec() {
                for _ in 0..self.config.pipeline {
                    self.send_next(key, now, now);
                }
            }
        }
    }

    /// Broadcast: a connection's messages reach only members already in the room. The first
    /// connection repeats a sync message until every other member has received it; since
    /// the server handles messages in order, every member is then surely in the room.
    fn sync(&mut self, now: u64) {
        let established = self.shared.established.load(Ordering::Acquire);
        if established <= 1 || self.shared.synced.load(Ordering::Acquire) + 1 >= established {
            self.start_running(now);
            return;
        }
        let Some(sync_id) = self.sender_addrs.iter().position(Option::is_some) else {
            return;
        };
        let sync_id = sync_id as u32;
        if now < self.next_sync_ns
            || !(self.plan.first_id..self.plan.first_id + self.plan.count).contains(&sync_id)
        {
            return;
        }
        self.next_sync_ns = now + SYNC_EVERY_NS;
        if let Some(key) = self.up_keys.iter().copied().find(|&key| self.conns[key].id == sync_id) {
            let conn = &mut self.conns[key];
            self.config.codec.encode(SYNC, &mut conn.output);
            self.queue_flush(key);
        }
    }

    // ----- connecting ---------------------------------------------------------------

    fn start_connects(&mut self, now: u64) {
        while self.next_connect < self.plan.count && self.pending_connects < MAX_PENDING_CONNECTS {
            if let Some(rate) = self.plan.connect_rate {
                let due = self.connect_phase_start_ns + (f64::from(self.next_connect) * 1e9 / rate) as u64;
                if due > now {
                    break;
                }
            }
            let id = self.plan.first_id + self.next_connect;
            self.next_connect += 1;
            self.open(id, now);
        }
    }

    /// When the next paced connect is due, if one is waiting for its turn.
    fn next_connect_due(&self) -> Option<u64> {
        let rate = self.plan.connect_rate?;
        (self.next_connect < self.plan.count && self.pending_connects < MAX_PENDING_CONNECTS)
            .then(|| self.connect_phase_start_ns + (f64::from(self.next_connect) * 1e9 / rate) as u64)
    }

    fn open(&mut self, id: u32, now: u64) {
        self.tally.attempted += 1;
        if self.tally.first_connect_ns == 0 {
            self.tally.first_connect_ns = now;
        }
        let source = self.config.source_for(id);
        let stream = LoadSocket::open(&self.config.target, source).and_then(|mut stream| {
            let key = self.conns.vacant_key();
            self.poll.registry().register(
                &mut stream,
                Token(key),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(stream)
        });
        match stream {
            Ok(stream) => {
                let datagram = stream.is_datagram();
                let key = self.conns.insert(LoadConn {
                    id,
                    stream,
                    up: false,
                    connect_started_ns: now,
                    decoder: self.config.codec.decoder(),
                    partial: Vec::new(),
                    output: Vec::new(),
                    written: 0,
                    queued_for_flush: false,
                    next_seq: 0,
                    in_flight: VecDeque::new(),
                    synced: false,
                    queued_datagrams: VecDeque::new(),
                });
                self.pending_connects += 1;
                if datagram {
                    // No handshake: a UDP socket is ready at once.
                    self.finish_connect(key);
                }
            }
            Err(error) => {
                self.tally.connect_failures.count(&error);
                self.shared.connects_finished.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// A connecting socket became writable (or failed): find out which.
    fn finish_connect(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let outcome = match conn.stream.connect_result() {
            Ok(true) => Ok(()),
            Ok(false) => return, // not yet
            Err(error) => Err(error),
        };
        self.pending_connects -= 1;
        self.shared.connects_finished.fetch_add(1, Ordering::AcqRel);
        let now = now_ns();
        self.tally.last_connect_ns = now;
        match outcome {
            Ok(()) => {
                conn.up = true;
                Tally::record(&mut self.tally.connect, now - conn.connect_started_ns);
                self.tally.established += 1;
                self.shared.established.fetch_add(1, Ordering::AcqRel);
                if self.config.workload == Workload::Broadcast {
                    // Unix clients have no address the server can print; they are counted
                    // as members (for the sync) with an empty name.
                    let name = conn.stream.local_name().unwrap_or_default();
                    self.shared.sender_addrs.lock().expect("not poisoned")[conn.id as usize] = Some(name);
                }
                self.up_keys.push(key);
            }
            Err(error) => {
                self.tally.connect_failures.count(&error);
                self.conns.remove(key);
            }
        }
    }

    /// Connects that took longer than `--connect-timeout` count as timeouts.
    fn expire_connects(&mut self, now: u64) {
        if now < self.next_timeout_check_ns || self.pending_connects == 0 {
            return;
        }
        self.next_timeout_check_ns = now + 50_000_000;
        let timeout = self.config.connect_timeout.as_nanos() as u64;
        let expired: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, conn)| !conn.up && now - conn.connect_started_ns > timeout)
            .map(|(key, _)| key)
            .collect();
        for key in expired {
            self.conns.remove(key);
            self.pending_connects -= 1;
            self.tally.connect_failures.timeout += 1;
            self.shared.connects_finished.fetch_add(1, Ordering::AcqRel);
        }
    }

    // ----- sending ------------------------------------------------------------------

    /// Open loop: sends every message whose scheduled time has come, round robin over the
    /// connections that are up, then arms the pacer for the next one.
    fn send_due(&mut self, now: u64) {
        while let Some(due) = self.next_due() {
            if due > now || self.up_keys.is_empty() {
                break;
            }
            let senders = self.sending_keys();
            if senders.is_empty() {
                break;
            }
            let key = senders[(self.next_send % senders.len() as u64) as usize];
            self.next_send += 1;
            self.send_next(key, due, now);
        }
        if let (Some(pacer), Some(due)) = (&self.pacer, self.next_due()) {
            if let Err(error) = pacer.arm_at(due) {
                log::error!("cannot arm the pacer; error={error}");
            }
        }
    }

    /// The connections that send: the first `--active` of those up.
    fn sending_keys(&self) -> &[usize] {
        &self.up_keys[..self.up_keys.len().min(self.plan.active as usize)]
    }

    /// When the next scheduled message is due, unless the schedule has ended.
    fn next_due(&self) -> Option<u64> {
        if self.budget == Some(0) || !self.interval_ns.is_finite() {
            return None;
        }
        let due = self.run_start_ns + (self.next_send as f64 * self.interval_ns) as u64;
        self.stop_ns.is_none_or(|stop| due < stop).then_some(due)
    }

    /// Queues the next request (or broadcast message) of `key`, scheduled for `intended_ns`.
    fn send_next(&mut self, key: usize, intended_ns: u64, now: u64) {
        if let Some(budget) = &mut self.budget {
            if *budget == 0 {
                return;
            }
            *budget -= 1;
        }
        let conn = &mut self.conns[key];
        let seq = conn.next_seq;
        conn.next_seq += 1;
        self.scratch.clear();
        let size = self.config.size;
        if self.config.workload == Workload::Broadcast {
            workload::broadcast_message(conn.id, seq, intended_ns, now, size, &mut self.scratch);
            let others = self.shared.established.load(Ordering::Relaxed).saturating_sub(1);
            self.tally.deliveries_expected += others as u64;
        } else {
            self.config.workload.request(conn.id, seq, size, &mut self.scratch);
        }
        let mut failed = None;
        let wire_bytes = if conn.stream.is_datagram() {
            // One message, one datagram: UDP has nothing to batch, so it goes now, and is
            // copied into the queue only if the socket is full.
            if conn.queued_datagrams.is_empty() {
                match send_datagram(&mut conn.stream, &self.scratch) {
                    Ok(true) => {}
                    Ok(false) => conn.queued_datagrams.push_back(self.scratch.clone()),
                    Err(error) => failed = Some(error),
                }
            } else {
                conn.queued_datagrams.push_back(self.scratch.clone());
            }
            self.scratch.len()
        } else {
            let before = conn.output.len();
            self.config.codec.encode(&self.scratch, &mut conn.output);
            conn.output.len() - before
        };
        if self.config.workload != Workload::Broadcast {
            conn.in_flight.push_back(InFlight {
                seq,
                intended_ns,
                sent_ns: now,
                wire_bytes: wire_bytes as u32,
            });
            self.in_flight += 1;
        }
        self.tally.sent += 1;
        if self.pacer.is_some() {
            Tally::record(&mut self.tally.schedule_lag, now.saturating_sub(intended_ns));
        }
        if let Some(error) = failed {
            return self.lose(key, Some(error));
        }
        let conn = &self.conns[key];
        if !conn.output.is_empty() || !conn.queued_datagrams.is_empty() {
            self.queue_flush(key);
        }
    }

    fn queue_flush(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if !conn.queued_for_flush {
            conn.queued_for_flush = true;
            self.flush_queue.push(key);
        }
    }

    fn flush_queued(&mut self) {
        let queue = mem::take(&mut self.flush_queue);
        for &key in &queue {
            self.flush(key);
        }
        if self.flush_queue.is_empty() {
            self.flush_queue = queue;
            self.flush_queue.clear();
        }
    }

    fn flush(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.queued_for_flush = false;
        while let Some(datagram) = conn.queued_datagrams.front() {
            match send_datagram(&mut conn.stream, datagram) {
                Ok(true) => drop(conn.queued_datagrams.pop_front()),
                Ok(false) => return,
                Err(error) => return self.lose(key, Some(error)),
            }
        }
        while conn.written < conn.output.len() {
            match conn.stream.write(&conn.output[conn.written..]) {
                Ok(n) => conn.written += n,
                Err(error) if would_block(&error) => return,
                Err(error) if interrupted(&error) => continue,
                Err(error) => return self.lose(key, Some(error)),
            }
        }
        conn.output.clear();
        conn.written = 0;
    }

    // ----- receiving ----------------------------------------------------------------

    fn on_event(&mut self, event: &mio::event::Event) {
        if event.token() == PACER {
            if let Some(pacer) = &self.pacer {
                pacer.clear();
            }
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
            self.read(key);
        }
        if event.is_writable() && self.conns.contains(key) {
            self.queue_flush(key);
        }
    }

    fn read(&mut self, key: usize) {
        if self.conns.get(key).is_some_and(|conn| conn.stream.is_datagram()) {
            return self.read_datagrams(key);
        }
        let mut buffer = mem::take(&mut self.read_buf);
        while let Some(conn) = self.conns.get_mut(key) {
            match conn.stream.read(&mut buffer) {
                Ok(0) => {
                    self.lose(key, None);
                    break;
                }
                Ok(n) => {
                    self.take_replies(key, &buffer[..n]);
                    if n < buffer.len() {
                        break; // drained for now; more raises a new edge
                    }
                }
                Err(error) if would_block(&error) => break,
                Err(error) if interrupted(&error) => continue,
                Err(error) => {
                    self.lose(key, Some(error));
                    break;
                }
            }
        }
        self.read_buf = buffer;
    }

    /// UDP: every datagram waiting is one reply (an empty one included).
    fn read_datagrams(&mut self, key: usize) {
        let mut buffer = mem::take(&mut self.read_buf);
        while let Some(conn) = self.conns.get_mut(key) {
            match conn.stream.read(&mut buffer) {
                Ok(length) => self.on_datagram(key, &buffer[..length], now_ns()),
                Err(error) if would_block(&error) => break,
                Err(error) if interrupted(&error) => continue,
                Err(error) => {
                    // ECONNREFUSED: an earlier datagram found nobody listening.
                    self.lose(key, Some(error));
                    break;
                }
            }
        }
        self.read_buf = buffer;
    }

    /// UDP may drop datagrams (and, off loopback, reorder them): a reply belongs to the first
    /// outstanding request it matches, within [`DATAGRAM_MATCH_WINDOW`]; the requests before
    /// that one lost their replies.
    fn on_datagram(&mut self, key: usize, reply: &[u8], now: u64) {
        self.tally.received += 1;
        let conn = &self.conns[key];
        let id = conn.id;
        let mut matched = None;
        for (index, flight) in conn.in_flight.iter().take(DATAGRAM_MATCH_WINDOW).enumerate() {
            self.expected.clear();
            self.config.workload.expected_reply(id, flight.seq, self.config.size, &mut self.expected);
            if self.expected.as_slice() == reply {
                matched = Some(index);
                break;
            }
        }
        let Some(index) = matched else {
            return self.tally.mismatch(id, b"(a reply to an outstanding request)", reply);
        };
        for _ in 0..index {
            self.conns[key].in_flight.pop_front();
            self.count_lost_datagram(key, now);
        }
        let flight = self.conns[key].in_flight.pop_front().expect("the matched request");
        self.in_flight -= 1;
        self.count_verified(&flight, reply.len(), now);
        self.send_after_reply(key, now);
    }

    /// A reply matched its request: counted, and measured if the request was sent after the
    /// warmup.
    fn count_verified(&mut self, flight: &InFlight, reply_len: usize, now: u64) {
        self.tally.verified += 1;
        if flight.intended_ns >= self.warmup_end_ns {
            let wire_bytes = u64::from(flight.wire_bytes) + reply_len as u64;
            self.count_measured(flight.intended_ns, flight.sent_ns, now, wire_bytes);
        }
    }

    /// A UDP request whose reply never came (already taken off `in_flight`).
    fn count_lost_datagram(&mut self, key: usize, now: u64) {
        self.tally.lost += 1;
        self.in_flight -= 1;
        // The closed loop goes on: a lost datagram must not stall its connection.
        self.send_after_reply(key, now);
    }

    /// UDP: requests older than `--reply-timeout` count as lost (checked a few times a
    /// second), so a dropped datagram is a loss, not a hang.
    fn expire_datagrams(&mut self, now: u64) {
        if !self.config.target.is_datagram() || now < self.next_datagram_check_ns {
            return;
        }
        self.next_datagram_check_ns = now + DATAGRAM_CHECK_EVERY_NS;
        let timeout = self.config.reply_timeout.as_nanos() as u64;
        for index in 0..self.up_keys.len() {
            let key = self.up_keys[index];
            while self.conns[key].in_flight.front().is_some_and(|flight| flight.sent_ns + timeout <= now) {
                self.conns[key].in_flight.pop_front();
                self.count_lost_datagram(key, now);
            }
        }
    }

    /// Decodes replies from `bytes` (after any incomplete tail) and checks each.
    fn take_replies(&mut self, key: usize, bytes: &[u8]) {
        let now = now_ns();
        let conn = &mut self.conns[key];
        let mut partial = mem::take(&mut conn.partial);
        let mut decoder = conn.decoder;
        let input: &[u8] = if partial.is_empty() {
            bytes
        } else {
            partial.extend_from_slice(bytes);
            &partial
        };
        let mut rest = input;
        loop {
            match decoder.decode(&mut rest, MAX_REPLY) {
                Ok(Some(reply)) => self.on_reply(key, reply, now),
                Ok(None) => break,
                Err(error) => {
                    let id = self.conns[key].id;
                    self.tally.mismatch(id, b"(a reply)", error.to_string().as_bytes());
                }
            }
        }
        let used = input.len() - rest.len();
        let tail_in_bytes = partial.is_empty();
        if let Some(conn) = self.conns.get_mut(key) {
            conn.decoder = decoder;
            if tail_in_bytes {
                conn.partial.extend_from_slice(&bytes[used..]);
            } else {
                partial.drain(..used);
                conn.partial = partial;
            }
        }
    }

    fn on_reply(&mut self, key: usize, reply: &[u8], now: u64) {
        self.tally.received += 1;
        if self.config.workload == Workload::Broadcast {
            return self.on_broadcast_line(key, reply, now);
        }
        let conn = &mut self.conns[key];
        let id = conn.id;
        let Some(flight) = conn.in_flight.pop_front() else {
            self.tally.mismatch(id, b"(no reply: nothing was outstanding)", reply);
            return;
        };
        self.in_flight -= 1;
        self.expected.clear();
        self.config.workload.expected_reply(id, flight.seq, self.config.size, &mut self.expected);
        if reply != self.expected.as_slice() {
            let expected = mem::take(&mut self.expected);
            self.tally.mismatch(id, &expected, reply);
            self.expected = expected;
        } else {
            self.count_verified(&flight, reply.len(), now);
        }
        self.send_after_reply(key, now);
    }

    /// Closed loop: an answered (or lost) request makes room for the next one.
    fn send_after_reply(&mut self, key: usize, now: u64) {
        if self.pacer.is_none() && self.phase == Phase::Running && self.stop_ns.is_none_or(|stop| now < stop)
        {
            self.send_next(key, now, now);
        }
    }

    fn on_broadcast_line(&mut self, key: usize, line: &[u8], now: u64) {
        let conn = &mut self.conns[key];
        if line.ends_with(b": sync") {
            self.tally.received -= 1;
            if !conn.synced {
                conn.synced = true;
                self.shared.synced.fetch_add(1, Ordering::AcqRel);
            }
            return;
        }
        let id = conn.id;
        let addrs = &self.sender_addrs;
        let sender_addr = |sender: u32| addrs.get(sender as usize).and_then(Option::as_deref);
        match workload::verify_broadcast(line, self.config.size, sender_addr, &mut self.expected) {
            Some(delivery) => {
                self.tally.verified += 1;
                self.tally.deliveries_seen += 1;
                if delivery.intended_ns >= self.warmup_end_ns {
                    self.count_measured(delivery.intended_ns, delivery.sent_ns, now, line.len() as u64);
                }
            }
            None => self.tally.mismatch(id, b"(a broadcast line from a loader connection)", line),
        }
    }

    fn count_measured(&mut self, intended_ns: u64, sent_ns: u64, now: u64, wire_bytes: u64) {
        self.tally.measured += 1;
        self.tally.measured_bytes += wire_bytes;
        self.tally.last_reply_ns = now;
        Tally::record(&mut self.tally.latency, now.saturating_sub(intended_ns));
        if self.pacer.is_some() {
            Tally::record(&mut self.tally.uncorrected, now.saturating_sub(sent_ns));
        }
    }

    /// A connection that was up failed or was closed by the server: what it had
    /// outstanding is lost.
    fn lose(&mut self, key: usize, error: Option<io::Error>) {
        let Some(conn) = self.conns.try_remove(key) else {
            return;
        };
        match error {
            Some(error) => self.tally.run_failures.count(&error),
            None => self.tally.run_failures.closed += 1,
        }
        self.tally.lost += conn.in_flight.len() as u64;
        self.in_flight -= conn.in_flight.len();
        if let Some(position) = self.up_keys.iter().position(|&up| up == key) {
            self.up_keys.swap_remove(position);
        }
    }

    // ----- bookkeeping --------------------------------------------------------------

    /// Adds what changed since the last publish to the shared totals.
    fn publish(&mut self, now: u64, force: bool) {
        if !force && now < self.next_publish_ns {
            return;
        }
        self.next_publish_ns = now + PUBLISH_EVERY_NS;
        let (tally, shared) = (&self.tally, self.shared);
        let now_published = Published {
            sent: tally.sent,
            received: tally.received,
            failures: tally.failure_count(),
            deliveries_expected: tally.deliveries_expected,
            deliveries_seen: tally.deliveries_seen,
        };
        let before = mem::replace(&mut self.published, now_published);
        shared.sent.fetch_add(now_published.sent - before.sent, Ordering::AcqRel);
        shared.received.fetch_add(now_published.received - before.received, Ordering::AcqRel);
        shared.failures.fetch_add(now_published.failures - before.failures, Ordering::AcqRel);
        shared
            .deliveries_expected
            .fetch_add(now_published.deliveries_expected - before.deliveries_expected, Ordering::AcqRel);
        shared
            .deliveries_seen
            .fetch_add(now_published.deliveries_seen - before.deliveries_seen, Ordering::AcqRel);
        shared.p99_ns[self.plan.index].store(tally.latency.value_at_quantile(0.99), Ordering::Relaxed);
    }

    fn poll_timeout(&self, now: u64) -> Option<Duration> {
        let wake_ns = match self.phase {
            Phase::Connecting => self.next_connect_due().unwrap_or(u64::MAX).min(now + CHECK_EVERY_NS),
            Phase::Syncing => now + CHECK_EVERY_NS,
            Phase::Running => self.stop_ns.unwrap_or(u64::MAX).min(self.next_publish_ns),
            Phase::Draining { deadline_ns } => deadline_ns.min(now + CHECK_EVERY_NS),
            Phase::Holding { until_ns } => until_ns,
            Phase::Done => now,
        };
        Some(Duration::from_nanos(wake_ns.saturating_sub(now)))
    }
}

/// Sends one datagram: `Ok(true)` sent, `Ok(false)` the socket is full (try again when it is
/// writable).
fn send_datagram(socket: &mut LoadSocket, datagram: &[u8]) -> io::Result<bool> {
    loop {
        match socket.write(datagram) {
            Ok(_) => return Ok(true),
            Err(error) if would_block(&error) => return Ok(false),
            Err(error) if interrupted(&error) => continue,
            Err(error) => return Err(error),
        }
    }
}
