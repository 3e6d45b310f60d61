//! One loader thread: a mio reactor of its own, driving its share of the connections
//! through the phases of a run, for one workload (`W`, see `workloads/`), which it never
//! needs to name.
//!
//! ```text
//! Connecting ─► Preparing ─► Ready ─► (Starting) ─► Running ─► Draining ─► (Holding) ─► Done
//!
//! - Connecting: open its connections; wait until every thread's are up.
//! - Preparing: what the workload needs first (broadcast: every member surely in the room).
//! - Ready: wait for the go (a part of a multi-process run: every process's connections are
//!   up and prepared; its parent then names the start, which may be a moment ahead).
//! - Starting: wait for the start the parent named.
//! - Running: send, read, verify every reply.
//! - Draining: no more sends; wait for outstanding replies (and for every thread to stop).
//! - Holding, with `--hold`: keep the connections open and idle (memory measurements).
//! - Done: what never came is counted as lost.
//! ```
//!
//! Like the server, it reads into one shared buffer, decodes with evloop's own codecs, and
//! writes each connection's new requests in one `write` per turn. Sockets stay registered
//! for reading and writing from the start (edge-triggered, so that costs no extra wakeups),
//! which saves the `epoll_ctl` calls the server must make: the loader's own cost stays low.
//!
//! The parts, each with its own methods: `conns.rs` (the connections and their I/O, through
//! the one gate), `schedule.rs` (when to send), `wire.rs` (requests out, replies counted),
//! `replies.rs` (what a workload may do with a connection), `connect.rs` (connecting and
//! handshakes), `phases.rs` (the phases above), `publish.rs` (totals for the other threads).

mod connect;
mod conns;
mod phases;
mod publish;
mod replies;
mod schedule;
mod wire;

use std::io;
use std::mem;
use std::sync::Arc;
use std::time::Duration;

use mio::{Events, Poll, Token};

use super::clock::now_ns;
use super::config::LoadConfig;
use super::plan::Plan;
use super::shared::Shared;
use super::tally::Tally;
use super::timer::Timer;
use super::workloads::Exchange;
use crate::sys::socket::interrupted;
use connect::Connecting;
use conns::Connections;
use publish::Published;
pub(crate) use replies::{Prep, Replies};
use schedule::Schedule;
pub(crate) use wire::Wire;

/// The pacer's token; connection tokens are slab keys, far below it.
const PACER: Token = Token(usize::MAX);
/// A workload's waker (closed-loop broadcast: another thread saw a line of ours reach its
/// last member).
pub(crate) const WAKER: Token = Token(usize::MAX - 1);
/// The alarm: a deadline of the run came.
const ALARM: Token = Token(usize::MAX - 2);
const EVENTS_PER_POLL: usize = 1024;
const READ_BUFFER_SIZE: usize = 64 * 1024;
/// Longest reply accepted; a longer one is a mismatch.
pub(crate) const MAX_REPLY: usize = 16 * 1024 * 1024;
/// How often a thread publishes its totals for the progress line (and the broadcast drain).
const PUBLISH_EVERY_NS: u64 = 100_000_000;
/// How often waiting phases look at the other threads' progress.
const CHECK_EVERY_NS: u64 = 5_000_000;
/// Told to stop (Ctrl-C), how long the replies already on their way may take: a live
/// server's come within milliseconds, and a stalled one is often why the run was stopped,
/// so waiting out `--reply-timeout` would only delay the report.
const INTERRUPTED_DRAIN_NS: u64 = 1_000_000_000;
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

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    Connecting,
    Preparing,
    /// Prepared; waiting for the go.
    Ready,
    /// Told to go at `at_ns` (a part of a larger run, whose start is a moment ahead).
    Starting {
        at_ns: u64,
    },
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

/// Runs one thread's share of the load (`plan`) with workload `W`, whose shared part is
/// `run`, and returns its tally.
pub(crate) fn run<W: Exchange>(
    config: &LoadConfig,
    plan: Plan,
    shared: &Shared,
    run: &Arc<W::Run>,
) -> io::Result<Tally> {
    Engine::<W>::new(config, plan, shared, run)?.run()
}

/// The alarm: one `timerfd` for the run's own deadlines, re-armed only when the next one
/// moves earlier or it has gone off (see `timer.rs`).
#[derive(Debug)]
struct Alarm {
    timer: Timer,
    /// When it is armed for; 0 when it is not.
    armed_ns: u64,
}

struct Engine<'a, W: Exchange> {
    config: &'a LoadConfig,
    shared: &'a Shared,
    plan: Plan,
    /// This thread's own of the workload.
    workload: W,
    poll: Poll,
    alarm: Alarm,
    conns: Connections<W::Conn>,
    connecting: Connecting,
    schedule: Schedule,
    phase: Phase,
    tally: Tally,
    published: Published,
    /// The one buffer every socket is read into.
    read_buf: Vec<u8>,
    /// A buffer for a datagram being built, or an expected reply.
    scratch: Vec<u8>,
}

impl<'a, W: Exchange> Engine<'a, W> {
    fn new(config: &'a LoadConfig, plan: Plan, shared: &'a Shared, run: &Arc<W::Run>) -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut workload = W::new(config, &plan, run);
        workload.start(poll.registry())?;
        let alarm = Alarm { timer: Timer::new(poll.registry(), ALARM)?, armed_ns: 0 };
        let schedule = Schedule::new(config, &plan, poll.registry())?;
        let now = now_ns();
        Ok(Engine {
            config,
            shared,
            workload,
            alarm,
            conns: Connections::new(plan.active as usize),
            connecting: Connecting::new(config, now)?,
            schedule,
            phase: Phase::Connecting,
            tally: Tally::default(),
            published: Published::new(now),
            read_buf: vec![0; READ_BUFFER_SIZE],
            scratch: Vec::new(),
            plan,
            poll,
        })
    }

    fn run(mut self) -> io::Result<Tally> {
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        loop {
            let now = now_ns();
            self.read_owed();
            self.step(now);
            self.wire().flush_queued();
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
        if W::ANSWERED_ON_ITS_CONNECTION {
            for (_, conn) in self.conns.iter() {
                self.tally.lost += conn.outstanding() as u64;
            }
        }
        self.tally.lost += self.workload.lost_at_end(self.shared);
        Ok(self.tally)
    }

    /// The parts a connection's traffic touches, borrowed together.
    fn wire(&mut self) -> Wire<'_, W> {
        Wire {
            config: self.config,
            workload: &self.workload,
            conns: &mut self.conns,
            schedule: &mut self.schedule,
            tally: &mut self.tally,
            scratch: &mut self.scratch,
            running: self.phase == Phase::Running,
        }
    }

    /// Adds what this thread counted since the last time to the shared totals.
    fn publish(&mut self, now: u64, force: bool) {
        self.published.publish(&self.tally, self.shared, self.plan.index, now, force);
    }

    /// Routes one readiness event: the pacer, the waker, the alarm, or a connection
    /// (connecting, readable, writable).
    fn on_event(&mut self, event: &mio::event::Event) {
        match event.token() {
            PACER => return self.schedule.on_pacer(),
            // The workload collects what the waker announced in the running phase.
            WAKER => return,
            ALARM => {
                self.alarm.timer.clear();
                self.alarm.armed_ns = 0;
                return;
            }
            _ => {}
        }
        let key = event.token().0;
        let Some(conn) = self.conns.get(key) else { return };
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
            self.conns.queue_flush(key);
        }
    }

    /// Reads what `key`'s socket holds. Like the server, it stops at a short read (later
    /// bytes raise a new edge) unless `drain`: the event already announced the end of the
    /// stream, and no further edge would come for it.
    fn read(&mut self, key: usize, drain: bool) {
        let Some(conn) = self.conns.get(key) else { return };
        if conn.stream.is_datagram() {
            return self.read_datagrams(key);
        }
        // A TLS read may return less than the socket holds (see `load/tls.rs`): read again,
        // after the others have had their turn (`TLS_READS_PER_TURN`).
        let tls = conn.stream.is_tls();
        let drain = drain || tls;
        let mut buffer = mem::take(&mut self.read_buf);
        let mut reads = 0;
        while let Some(conn) = self.conns.get_mut(key) {
            if tls && reads == TLS_READS_PER_TURN {
                self.conns.owe_read(key);
                break;
            }
            reads += 1;
            match conn.read(&mut buffer) {
                Ok(Some(0)) => {
                    self.wire().lose(key, None);
                    break;
                }
                Ok(Some(n)) => {
                    let now = now_ns();
                    conn.heard_ns = now;
                    self.take(key, &buffer[..n], now);
                    if n < buffer.len() && !drain {
                        break; // drained for now; more raises a new edge
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    self.wire().lose(key, Some(error));
                    break;
                }
            }
        }
        self.read_buf = buffer;
    }

    /// Hands the bytes `key` brought at `now` to the workload.
    fn take(&mut self, key: usize, bytes: &[u8], now: u64) {
        let mut replies = Replies { wire: self.wire(), key, now };
        let workload = replies.wire.workload;
        workload.take(&mut replies, bytes);
    }

    /// Reads the connections owed a read (see `TLS_READS_PER_TURN`).
    fn read_owed(&mut self) {
        for key in self.conns.take_owed_reads() {
            if self.conns.get(key).is_some_and(|conn| conn.up) {
                self.read(key, false);
            }
        }
    }

    /// UDP: every datagram waiting is one reply (an empty one included).
    fn read_datagrams(&mut self, key: usize) {
        let mut buffer = mem::take(&mut self.read_buf);
        while let Some(conn) = self.conns.get_mut(key) {
            match conn.read(&mut buffer) {
                Ok(Some(length)) => self.wire().on_datagram(key, &buffer[..length], now_ns()),
                Ok(None) => break,
                Err(error) => {
                    // ECONNREFUSED: an earlier datagram found nobody listening.
                    self.wire().lose(key, Some(error));
                    break;
                }
            }
        }
        self.read_buf = buffer;
    }

    /// How long `poll` may wait: not at all if a deadline has come; otherwise until an
    /// event, with the alarm armed for the next deadline (re-armed only when that moves
    /// earlier, or the alarm has gone off).
    fn poll_timeout(&mut self, now: u64) -> io::Result<Option<Duration>> {
        let wake_ns = self.next_deadline(now);
        if wake_ns <= now || self.conns.owes_reads() {
            return Ok(Some(Duration::ZERO));
        }
        if wake_ns != u64::MAX && (self.alarm.armed_ns <= now || wake_ns < self.alarm.armed_ns) {
            self.alarm.timer.arm_at(wake_ns)?;
            self.alarm.armed_ns = wake_ns;
        }
        Ok(None)
    }

    /// When the run must look at the time again (`u64::MAX`: only when something happens).
    fn next_deadline(&self, now: u64) -> u64 {
        match self.phase {
            Phase::Connecting => self.next_connect_due().unwrap_or(u64::MAX).min(now + CHECK_EVERY_NS),
            Phase::Preparing | Phase::Ready => now + CHECK_EVERY_NS,
            Phase::Starting { at_ns } => at_ns,
            // No connection left: nothing will wake it, and there is nothing to wait for.
            Phase::Running if self.conns.up_keys().is_empty() => now,
            Phase::Running => self.schedule.stop_ns.unwrap_or(u64::MAX).min(self.published.next_ns()),
            Phase::Draining { deadline_ns } => deadline_ns.min(now + CHECK_EVERY_NS),
            // Woken now and then to see whether it was told to stop.
            Phase::Holding { until_ns } => until_ns.min(now + PUBLISH_EVERY_NS),
            Phase::Done => now,
        }
    }
}
