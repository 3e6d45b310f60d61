//! The reactor: one thread, one `mio::Poll`, every socket of the server.
//!
//! Each turn of the loop waits in `poll` until some socket is ready (or a timer is due), then
//! works through phases, each in its own file:
//!
//! 1. **events**: accept on ready listeners (`accept.rs`); read and handle messages from ready
//!    connections, then write their replies at once, in one `write` (`input.rs`); note
//!    connections that can take more output;
//! 2. **owed**: serve again what an earlier pass cut short (a budget ran out, reading resumed);
//! 3. **timers**: resume paused accepting, expire idle connections (`idle.rs`), end the drain;
//! 4. **flush**: write each room's lines of the turn to its members, straight from one
//!    buffer (`room.rs`); write every connection that still has new output (a socket that
//!    became writable, say), in one `write` each (`output.rs`);
//! 5. **close**: remove the connections marked for closing (`close.rs`), after a lingering
//!    close where replies could otherwise be lost (`linger.rs`).
//!
//! Nothing blocks, and no connection gets more than a bounded share of one turn, so a single
//! thread serves thousands of clients "at once": by taking turns at message granularity.
//! Closing is deferred to the end of a turn so no step ever holds a connection that another
//! step has removed. docs/architecture.md draws the picture.

mod accept;
mod backplane;
pub(crate) mod buffer_pool;
mod close;
pub(crate) mod connection;
pub(crate) mod control;
mod datagram;
mod files;
mod hint;
mod idle;
mod input;
mod linger;
mod log_throttle;
mod metrics;
mod output;
mod recording;
mod reporter;
mod room;
mod service;
mod timer_wheel;
mod trace;

use std::collections::VecDeque;
use std::io;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use log::{debug, info, trace, warn};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::backplane::{Backplane, Role};
use buffer_pool::BufferPool;
use connection::{Connection, StopReason};
use control::{Command, ServerHandle};
use datagram::DatagramEndpoint;
use log_throttle::LogThrottle;
use mio::net::UdpSocket;
use reporter::Reporter;
use timer_wheel::{Entry, TimerWheel};
use trace::WakeupTrace;

use crate::config::{Limits, ServerConfig};
use crate::handlers::Outbox;
use crate::stats::{RunSummary, Stats};
use crate::sys::address::ListenAddr;
use crate::sys::nonblocking::interrupted;
use crate::sys::socket::Listener;

pub(crate) use service::Service;

pub(crate) use close::CloseReason;
#[cfg(feature = "cli")]
pub(crate) use metrics::SLOT_WORDS as METRICS_SLOT_WORDS;

/// Wakes the poll when a [`ServerHandle`] sends a command.
const WAKER: Token = Token(usize::MAX);
/// SIGINT, SIGTERM and SIGHUP, when the server handles signals: each drains and stops.
const SIGNALS: Token = Token(usize::MAX - 1);
/// The backplane's publishing link.
const BACKPLANE_PUBLISHER: Token = Token(usize::MAX - 2);
/// The backplane's subscribing link.
const BACKPLANE_SUBSCRIBER: Token = Token(usize::MAX - 3);
/// Most listeners one reactor serves.
pub(crate) const MAX_LISTENERS: usize = 1024;
/// Listener `i` has token `FIRST_LISTENER + i`, and UDP endpoint `j` token
/// `FIRST_DATAGRAM + j`. Connection tokens are slab keys, which stay below
/// `max_connections`, far below these ranges.
const FIRST_LISTENER: usize = usize::MAX - 4 - MAX_LISTENERS;
/// See [`FIRST_LISTENER`].
const FIRST_DATAGRAM: usize = FIRST_LISTENER - MAX_LISTENERS;

/// Readiness events taken from the kernel per `poll`.
const EVENTS_PER_POLL: usize = 1024;
/// The one read buffer every connection reads into. Bytes of a complete message never leave
/// it; only an incomplete tail is copied into a per-connection buffer.
const READ_BUFFER_SIZE: usize = 64 * 1024;
/// Reads one connection gets per turn (up to 256 KiB) before the others get theirs: without a
/// bound, one client sending flat out would hold the only thread.
const READS_PER_TURN: usize = 4;
/// Connections one listener accepts per turn, so an accept storm cannot starve clients that
/// are already connected (Redis: 10; tokio put accept under its budget for the same reason).
const ACCEPTS_PER_TURN: usize = 64;
/// How long accepting pauses when descriptors run out. `accept` cannot succeed until a
/// connection closes, and retrying at once would spin the CPU.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A listening socket and what it feeds.
#[derive(Debug)]
pub(crate) struct ListenerSlot {
    pub listener: Listener,
    /// The address actually bound.
    pub addr: ListenAddr,
    pub service: usize,
    /// Accepting is paused until then (out of descriptors).
    pub paused_until: Option<Instant>,
    /// Already on the owed list.
    pub owed: bool,
    /// Its connections start with a PROXY header (`--proxy-protocol`, TCP listeners).
    pub proxy: bool,
}

/// See the module documentation.
pub(crate) struct Reactor {
    poll: Poll,
    listeners: Vec<ListenerSlot>,
    /// UDP sockets (`datagram.rs`).
    datagrams: Vec<DatagramEndpoint>,
    services: Vec<Service>,
    /// Every client connection; the key is its token.
    conns: Slab<Connection>,
    limits: Limits,
    /// See [`READ_BUFFER_SIZE`].
    read_buf: Vec<u8>,
    /// Reused for every handler call.
    outbox: Outbox,
    pool: BufferPool,
    /// Tokens served short of `WouldBlock` earlier: edge-triggered polling will not report
    /// them again for bytes already waiting, so the reactor must come back by itself.
    owed: Vec<Token>,
    /// Connections with new output this turn, written in the flush phase.
    flush_queue: Vec<usize>,
    /// Connections to remove at the end of this turn, and why.
    close_queue: Vec<(usize, CloseReason)>,
    /// Idle timeouts, if configured.
    idle: Option<TimerWheel>,
    /// Scratch space for entries coming due on the wheel.
    due: Vec<Entry>,
    /// The idle-wheel tick of the current turn; connections record it as their last activity.
    now_tick: u64,
    stats: Stats,
    reporter: Option<Reporter>,
    commands: Receiver<Command>,
    signals: Option<Signals>,
    /// Connections lingering after their last reply, by deadline (ms since `started`); all
    /// share one timeout, so this is in deadline order. Entries of connections that closed
    /// earlier are skipped when they come up.
    lingering: VecDeque<(u64, usize)>,
    /// Set once shutdown starts: the drain deadline.
    draining: Option<Instant>,
    /// Connections closed unflushed at the drain deadline.
    cut_at_deadline: u64,
    unix_serial: u64,
    accept_log: LogThrottle,
    misbehaving_log: LogThrottle,
    started: Instant,
    /// Which clients each wakeup served, for `trace` logging.
    trace: WakeupTrace,
    /// Rooms shared with other servers through a pub/sub engine (`reactor/backplane.rs`).
    backplane: Option<Backplane>,
    /// The once-only hint about line framing (`hint.rs`).
    raw_hint: hint::RawHint,
    /// Files open for sending, and the connections waiting for a slot (`files.rs`).
    files_open: usize,
    file_waiters: files::FileWaiters,
    /// `--trace-file`: the timeline being recorded (`recording.rs`); `None`, the usual.
    recording: Option<recording::Recording>,
    /// Under `--workers`: metrics shared with the other workers (`metrics.rs`).
    shared_metrics: Option<metrics::SharedMetrics>,
}

impl Reactor {
    /// A reactor serving `listeners`, each feeding one of `services`.
    pub fn new(
        services: Vec<Service>,
        listeners: Vec<(Listener, ListenAddr, usize)>,
        datagrams: Vec<(UdpSocket, ListenAddr, usize)>,
        rooms: &[String],
        config: &ServerConfig,
        handle_signals: bool,
    ) -> io::Result<(Reactor, ServerHandle)> {
        let poll = Poll::new()?;
        let (handle, commands) = ServerHandle::new(poll.registry(), WAKER)?;
        let signals = if handle_signals {
            let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
            poll.registry().register(&mut signals, SIGNALS, Interest::READABLE)?;
            Some(signals)
        } else {
            None
        };
        let mut slots = Vec::with_capacity(listeners.len());
        for (index, (mut listener, addr, service)) in listeners.into_iter().enumerate() {
            poll.registry().register(&mut listener, Token(FIRST_LISTENER + index), Interest::READABLE)?;
            let proxy = config.proxy_protocol && matches!(listener, Listener::Tcp(_));
            slots.push(ListenerSlot { listener, addr, service, paused_until: None, owed: false, proxy });
        }
        let mut endpoints = Vec::with_capacity(datagrams.len());
        for (index, (mut socket, addr, service)) in datagrams.into_iter().enumerate() {
            poll.registry().register(&mut socket, Token(FIRST_DATAGRAM + index), Interest::READABLE)?;
            endpoints.push(DatagramEndpoint::new(socket, addr, service));
        }
        let mut limits = config.limits();
        limits.max_connections = limits.max_connections.min(FIRST_DATAGRAM);
        let now = Instant::now();
        let backplane = match &config.backplane {
            Some(url) if !rooms.is_empty() => {
                // A room line is a sender's address, ": " and a message of up to max_frame.
                let max_message = limits.max_frame + 1024;
                let tokens = (BACKPLANE_PUBLISHER, BACKPLANE_SUBSCRIBER);
                Some(Backplane::new(url.clone(), rooms, tokens, config.backplane_ping, max_message, now))
            }
            Some(url) => {
                info!("backplane unused: no listener serves a room; backplane={url}");
                None
            }
            None => None,
        };
        let recording = limits
            .trace_file
            .clone()
            .map(|path| recording::Recording::new(crate::timeline::Timeline::new(path, limits.trace_limit)));
        let reactor = Reactor {
            poll,
            listeners: slots,
            datagrams: endpoints,
            services,
            conns: Slab::new(),
            limits,
            read_buf: vec![0; READ_BUFFER_SIZE],
            outbox: Outbox::default(),
            pool: BufferPool::default(),
            owed: Vec::new(),
            flush_queue: Vec::new(),
            close_queue: Vec::new(),
            idle: config.idle_timeout.map(|timeout| TimerWheel::new(timeout, now)),
            due: Vec::new(),
            now_tick: 0,
            stats: Stats::default(),
            reporter: config.stats_interval.map(|interval| Reporter::new(interval, now)),
            commands,
            signals,
            lingering: VecDeque::new(),
            draining: None,
            cut_at_deadline: 0,
            unix_serial: 0,
            accept_log: LogThrottle::new(Duration::from_secs(1)),
            misbehaving_log: LogThrottle::new(Duration::from_secs(1)),
            started: now,
            trace: WakeupTrace::default(),
            backplane,
            raw_hint: hint::RawHint::default(),
            files_open: 0,
            file_waiters: files::FileWaiters::new(),
            recording,
            shared_metrics: shared_metrics(config),
        };
        Ok((reactor, handle))
    }

    /// Serves until shut down (signal or [`ServerHandle::shutdown`]) and drained. Only a
    /// failure of the poller itself ends it with an error.
    pub fn run(mut self) -> io::Result<RunSummary> {
        info!(
            "started; listeners={} max_connections={} max_frame={} max_output={}",
            self.listeners.len() + self.datagrams.len(),
            self.limits.max_connections,
            self.limits.max_frame,
            self.limits.max_output
        );
        self.claim_metrics_slot();
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        loop {
            let timeout = self.poll_timeout(Instant::now());
            if let Err(error) = self.poll.poll(&mut events, timeout) {
                if interrupted(&error) {
                    continue;
                }
                return Err(error);
            }
            let woke = Instant::now();
            if let Some(wheel) = &self.idle {
                self.now_tick = wheel.now_tick(woke);
            }
            self.trace.begin(&self.stats);
            let mut event_count = 0;
            for event in events.iter() {
                event_count += 1;
                self.dispatch(event, woke);
            }
            if let Some(recording) = &mut self.recording {
                recording.wakeup(woke, event_count);
            }
            self.serve_owed();
            self.run_timers(woke);
            self.release_rooms();
            self.flush_queued();
            if let Some(backplane) = &mut self.backplane {
                backplane.flush(woke);
            }
            self.close_queued();
            self.publish_metrics();
            let busy = woke.elapsed();
            self.stats.record_wakeup(event_count, busy);
            self.trace.finish(self.stats.wakeups, event_count, busy, &self.stats);
            if let Some(reporter) = &mut self.reporter {
                reporter.note_wakeup(busy);
                self.stats.connections_open = self.conns.len();
                self.stats.buffers = self.pool.stats();
                if let Some(backplane) = &self.backplane {
                    self.stats.set_backplane(backplane.counters());
                }
                reporter.maybe_report(woke, &self.stats);
            }
            if self.draining.is_some() && self.conns.is_empty() {
                break;
            }
        }
        let summary = RunSummary::new(self.started.elapsed(), self.stats_snapshot(), self.cut_at_deadline);
        if let Some(recording) = self.recording.take() {
            recording.finish();
        }
        // The summary itself is the caller's to print (the binary prints it on stdout): on a
        // terminal, logging it too would show it twice.
        info!("stopped");
        debug!("stopped; {summary}");
        Ok(summary)
    }

    /// How long `poll` may sleep: not at all if work is owed, else until the next timer.
    /// With nothing to do and no timers, it sleeps until a socket is ready: an idle server
    /// uses no CPU.
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.owed.is_empty()
            || !self.flush_queue.is_empty()
            || !self.close_queue.is_empty()
            || self.rooms_waiting()
        {
            return Some(Duration::ZERO);
        }
        let backplane = self.backplane.as_ref().map(Backplane::next_deadline);
        let accept_resume = self.listeners.iter().filter_map(|slot| slot.paused_until).min();
        [
            self.idle.as_ref().and_then(TimerWheel::next_due),
            self.reporter.as_ref().map(Reporter::next_due),
            accept_resume,
            self.draining,
            self.lingering.front().map(|&(until_ms, _)| self.started + Duration::from_millis(until_ms)),
            backplane,
            self.raw_hint.next_due(),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|deadline| deadline.saturating_duration_since(now))
    }

    /// Routes one readiness event.
    fn dispatch(&mut self, event: &mio::event::Event, now: Instant) {
        match event.token() {
            WAKER => self.run_commands(now),
            SIGNALS => self.on_signals(now),
            BACKPLANE_PUBLISHER => self.on_backplane(Role::Publisher, now),
            BACKPLANE_SUBSCRIBER => self.on_backplane(Role::Subscriber, now),
            Token(token) if token >= FIRST_LISTENER => self.accept_from(token - FIRST_LISTENER),
            Token(token) if token >= FIRST_DATAGRAM => {
                if event.is_writable() {
                    self.flush_datagrams(token - FIRST_DATAGRAM);
                }
                if event.is_readable() {
                    self.receive_datagrams(token - FIRST_DATAGRAM);
                }
            }
            Token(key) => {
                trace!(
                    "event; conn={key} readable={} writable={} closed={}",
                    event.is_readable(),
                    event.is_writable(),
                    event.is_read_closed() || event.is_write_closed()
                );
                if event.is_writable() || event.is_write_closed() || event.is_error() {
                    self.queue_flush(key);
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    let mark = self.trace.mark(&self.stats);
                    // Stopping at a short read is safe only when the event did not already
                    // announce the end of the stream: no new edge would come for it.
                    let drain = event.is_read_closed() || event.is_error();
                    self.read_from(key, drain);
                    if let Some(mark) = mark {
                        let peer = self.conns.get(key).map(|conn| conn.peer().clone());
                        self.trace.served(key, peer, mark, &self.stats);
                    }
                }
            }
        }
    }

    /// Serves what earlier passes cut short. A pass can owe again; that waits for the next
    /// turn (with a zero poll timeout), so new events get their turn in between.
    fn serve_owed(&mut self) {
        let mut owed = std::mem::take(&mut self.owed);
        for &Token(token) in &owed {
            if Token(token) == BACKPLANE_PUBLISHER {
                self.on_backplane(Role::Publisher, Instant::now());
            } else if Token(token) == BACKPLANE_SUBSCRIBER {
                self.on_backplane(Role::Subscriber, Instant::now());
            } else if token >= FIRST_LISTENER {
                let index = token - FIRST_LISTENER;
                if let Some(slot) = self.listeners.get_mut(index) {
                    slot.owed = false;
                    self.accept_from(index);
                }
            } else if token >= FIRST_DATAGRAM {
                let index = token - FIRST_DATAGRAM;
                if let Some(endpoint) = self.datagrams.get_mut(index) {
                    endpoint.owed = false;
                    self.receive_datagrams(index);
                }
            } else if let Some(conn) = self.conns.get_mut(token) {
                conn.clear_owed_read();
                self.read_from(token, true);
            }
        }
        owed.clear();
        if self.owed.is_empty() {
            self.owed = owed;
        }
    }

    /// Notes that `key` has bytes waiting that no event will announce again.
    fn owe_read(&mut self, key: usize) {
        if self.conns.get_mut(key).is_some_and(|conn| conn.owe_read()) {
            self.owed.push(Token(key));
        }
    }

    /// Notes that listener `index` may have connections waiting in its backlog.
    fn owe_accept(&mut self, index: usize) {
        if let Some(slot) = self.listeners.get_mut(index) {
            if !slot.owed {
                slot.owed = true;
                self.owed.push(Token(FIRST_LISTENER + index));
            }
        }
    }

    fn run_timers(&mut self, now: Instant) {
        if let Some(backplane) = &mut self.backplane {
            backplane.on_timers(self.poll.registry(), now);
        }
        self.resume_accepting(now);
        self.check_unterminated(now);
        self.expire_idle(now);
        self.expire_lingering(now);
        if let Some(deadline) = self.draining {
            if now >= deadline {
                self.cut_off_at_deadline();
            }
        }
    }

    fn run_commands(&mut self, now: Instant) {
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Shutdown => self.begin_shutdown(now),
                Command::Stats(reply) => {
                    let _ = reply.try_send(self.stats_snapshot());
                }
            }
        }
    }

    fn on_signals(&mut self, now: Instant) {
        let Some(signals) = &mut self.signals else {
            return;
        };
        let received: Vec<i32> = signals.pending().collect();
        for signal in received {
            info!("signal received; signal={signal}");
            self.begin_shutdown(now);
        }
    }

    /// Stops accepting and starts draining: no more reading, pending output is flushed, each
    /// connection closes once written, and the rest are cut at the deadline. A second stop
    /// request while draining ends the drain at once.
    fn begin_shutdown(&mut self, now: Instant) {
        if self.draining.is_some() {
            info!("second stop request; closing now");
            self.draining = Some(now);
            return;
        }
        let deadline = now + self.limits.drain_timeout;
        info!(
            "stopping; conns={} drain_timeout_ms={}",
            self.conns.len(),
            self.limits.drain_timeout.as_millis()
        );
        self.draining = Some(deadline);
        if self.signals.is_some() {
            // Run as a program (it handles the signals): tell a systemd supervisor.
            crate::sys::notify::notify("STOPPING=1");
        }
        for mut slot in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut slot.listener);
        }
        // UDP has no connections to drain: send what is queued if the socket takes it, and
        // stop serving datagrams.
        for index in 0..self.datagrams.len() {
            self.flush_datagrams(index);
        }
        self.datagrams.clear();
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.stop_reading(key, StopReason::Shutdown);
        }
    }

    /// Closes, unflushed, whatever is still open at the drain deadline.
    fn cut_off_at_deadline(&mut self) {
        let keys: Vec<usize> =
            self.conns.iter().filter(|(_, conn)| !conn.is_closing()).map(|(key, _)| key).collect();
        if !keys.is_empty() {
            warn!("drain deadline reached; cutting off conns={}", keys.len());
        }
        self.cut_at_deadline += keys.len() as u64;
        for key in keys {
            self.close_later(key, CloseReason::DrainDeadline);
        }
    }

    /// Stops reading `key`; it closes once its pending output is written.
    fn stop_reading(&mut self, key: usize, reason: StopReason) {
        if let Some(conn) = self.conns.get_mut(key) {
            conn.stop(reason);
            self.queue_flush(key);
        }
    }

    fn stats_snapshot(&self) -> Stats {
        let mut stats =
            Stats { connections_open: self.conns.len(), buffers: self.pool.stats(), ..self.stats.clone() };
        if let Some(backplane) = &self.backplane {
            stats.set_backplane(backplane.counters());
        }
        stats
    }
}

/// Under `--workers`: the block of metrics shared with the other workers, mapped.
fn shared_metrics(config: &ServerConfig) -> Option<metrics::SharedMetrics> {
    let (fd, worker) = config.shared_metrics?;
    match crate::sys::shared_memory::SharedWords::map_inherited(fd) {
        Ok(region) => Some(metrics::SharedMetrics::new(region, worker)),
        Err(error) => {
            warn!("cannot share metrics with the other workers; error={error}");
            None
        }
    }
}
