//! The reactor: one thread, one `mio::Poll`, every socket of the server.
//!
//! Each turn of the loop waits in `poll` until some socket is ready (or a timer is due), then
//! works through phases, each in its own file:
//!
//! 1. **events**: each readiness event goes to its source (`source.rs`): accept on ready
//!    listeners (`accept.rs`); read ready connections through their layers (preamble,
//!    transport, protocol: `input.rs`), hand each message to the handler, and write the
//!    replies at once, in one `write`; note connections that can take more output;
//! 2. **owed**: serve again what an earlier pass cut short (a budget ran out, reading resumed,
//!    plaintext waiting inside a transport);
//! 3. **timers**: resume paused accepting, expire idle connections (`idle.rs`) and those that
//!    never got ready (`ready.rs`), end the drain;
//! 4. **flush**: send the turn's room lines to the backplane, so other servers start on
//!    their members at once; write each room's lines of the turn to its members, straight
//!    from one buffer per codec (`room.rs`); write every connection that still has new
//!    output (a socket that became writable, say), in one `write` each (`output.rs`);
//! 5. **close**: remove the connections marked for closing (`close.rs`), after a lingering
//!    close where replies could otherwise be lost (`linger.rs`).
//!
//! Nothing blocks, and no connection gets more than a bounded share of one turn, so a single
//! thread serves thousands of clients "at once": by taking turns at message granularity.
//! Closing is deferred to the end of a turn so no step ever holds a connection that another
//! step has removed. docs/architecture.md draws the picture.
//!
//! The reactor's state is grouped by who uses it: the connections and what they are served
//! by (services, rooms), the other sources the poll watches ([`Sources`]), the work queued
//! for later ([`Queues`]), the buffers every connection borrows in turn ([`Scratch`]), the
//! clocks ([`Clocks`]), what it reports about itself ([`Telemetry`]), and the files it sends
//! ([`files::Files`]).

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
mod keepalive;
mod linger;
mod metrics;
mod output;
mod ready;
mod reporter;
mod room;
mod service;
mod source;
mod timer_wheel;
mod tls;
mod trace;

use std::collections::VecDeque;
use std::io;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::{Events, Interest, Poll};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::backplane::Backplane;
use buffer_pool::BufferPool;
use connection::{Connection, StopReason};
use control::{Command, ServerHandle};
use datagram::DatagramEndpoint;
use mio::net::UdpSocket;
use reporter::Reporter;
use room::Room;
use source::Source;
use timer_wheel::{Entry, TimerWheel};
use trace::WakeupTrace;

use crate::codec::{ProtocolOptions, SessionEvents};
use crate::config::{Limits, ServerConfig};
use crate::handlers::Outbox;
use crate::log_throttle::LogThrottle;
use crate::stats::{RunSummary, Stats};
use crate::sys::address::ListenAddr;
use crate::sys::nonblocking::interrupted;
use crate::sys::socket::Listener;
use crate::transport::TlsConfig;

pub(crate) use service::Service;

pub(crate) use close::CloseReason;
#[cfg(feature = "cli")]
pub(crate) use metrics::SLOT_WORDS as METRICS_SLOT_WORDS;
pub(crate) use source::MAX_LISTENERS;

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
/// Connections whose transport handshake (TLS) is advanced per turn; past it they wait for
/// the next turn. A full TLS 1.3 handshake costs about 150 µs of CPU (rustls's own figure),
/// so a storm of new connections could otherwise hold the thread for many milliseconds
/// while established clients wait.
const HANDSHAKES_PER_TURN: usize = 32;
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

/// What the poll watches besides connections, each with its own token (`source.rs`).
struct Sources {
    listeners: Vec<ListenerSlot>,
    /// UDP sockets (`datagram.rs`).
    datagrams: Vec<DatagramEndpoint>,
    /// SIGINT, SIGTERM and SIGHUP, when the server handles signals.
    signals: Option<Signals>,
    /// Commands from [`ServerHandle`]s, announced by the waker.
    commands: Receiver<Command>,
    /// Rooms shared with other servers through a pub/sub engine (`backplane.rs`).
    backplane: Option<Backplane>,
    /// Numbers Unix-socket clients, which have no address.
    unix_serial: u64,
    /// What `tls://` listeners' connections are made with (reloaded on `SIGUSR1`).
    tls: Option<TlsConfig>,
    /// Where the TLS certificate and key were read from, to read them again.
    tls_files: (Option<std::path::PathBuf>, Option<std::path::PathBuf>),
}

/// Work a turn leaves for later in the turn, or for the next one.
#[derive(Default)]
struct Queues {
    /// Sources served short of `WouldBlock` earlier: edge-triggered polling will not report
    /// them again for bytes already waiting, so the reactor must come back by itself.
    owed: Vec<Source>,
    /// Connections with new output this turn, written in the flush phase.
    flush: Vec<usize>,
    /// Connections to remove at the end of this turn, and why.
    close: Vec<(usize, CloseReason)>,
    /// Connections lingering after their last reply, by deadline (ms since the start); all
    /// share one timeout, so this is in deadline order. Entries of connections that closed
    /// earlier are skipped when they come up.
    lingering: VecDeque<(u64, usize)>,
    /// Connections not ready yet, by deadline (`--handshake-timeout`), likewise in order.
    preparing: VecDeque<(u64, usize)>,
    /// TLS handshake steps this turn, against [`HANDSHAKES_PER_TURN`].
    handshakes: usize,
}

/// Buffers every connection borrows in turn: one of each per reactor, not per connection.
#[derive(Default)]
struct Scratch {
    /// See [`READ_BUFFER_SIZE`].
    read: Vec<u8>,
    /// Plaintext from a transport that decrypts (the plain one reads straight into `read`).
    plain: Vec<u8>,
    /// Reused for every handler call.
    outbox: Outbox,
    /// What a stateful protocol found in one read.
    session: SessionEvents,
    /// Buffers a connection holds only while it needs them.
    pool: BufferPool,
}

/// Time: the idle wheel, the drain, and the start every deadline is counted from.
struct Clocks {
    /// Idle timeouts, if configured.
    idle: Option<TimerWheel>,
    /// Keepalive pings for protocols that have them (`--ws-ping`), if configured.
    keepalive: Option<TimerWheel>,
    /// Scratch space for entries coming due on the wheel.
    due: Vec<Entry>,
    /// The idle-wheel tick of the current turn; connections record it as their last activity.
    now_tick: u64,
    started: Instant,
    /// Set once shutdown starts: the drain deadline.
    draining: Option<Instant>,
}

impl Clocks {
    /// Milliseconds since the reactor started, at `now`.
    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.started).as_millis() as u64
    }
}

/// What the reactor reports about itself: counters, logs, the timeline.
struct Telemetry {
    stats: Stats,
    /// Connections not ready yet (the `preparing` gauge).
    preparing: usize,
    /// Connections closed unflushed at the drain deadline.
    cut_at_deadline: u64,
    reporter: Option<Reporter>,
    /// Which clients each wakeup served, for `trace` logging.
    trace: WakeupTrace,
    /// `--trace-file`: the timeline being recorded (`timeline/recording.rs`); `None`, the usual.
    recording: Option<crate::timeline::Recording>,
    /// Under `--workers`: metrics shared with the other workers (`metrics.rs`).
    shared_metrics: Option<metrics::SharedMetrics>,
    accept_log: LogThrottle,
    misbehaving_log: LogThrottle,
    /// The once-only hint about line framing (`hint.rs`).
    raw_hint: hint::RawHint,
}

/// See the module documentation.
pub(crate) struct Reactor {
    poll: Poll,
    /// Every client connection; the key is its token.
    conns: Slab<Connection>,
    /// What serves each listener: a handler and its codec.
    services: Vec<Service>,
    /// Who hears whose lines.
    rooms: Vec<Room>,
    limits: Limits,
    /// What protocols with a session are told (`ws`: allowed origins).
    protocols: ProtocolOptions,
    sources: Sources,
    queues: Queues,
    scratch: Scratch,
    clocks: Clocks,
    telemetry: Telemetry,
    files: files::Files,
}

impl Reactor {
    /// A reactor serving `listeners`, each feeding one of `services`.
    pub fn new(
        services: Vec<Service>,
        listeners: Vec<(Listener, ListenAddr, usize)>,
        datagrams: Vec<(UdpSocket, ListenAddr, usize)>,
        tls: Option<TlsConfig>,
        config: &ServerConfig,
        handle_signals: bool,
    ) -> io::Result<(Reactor, ServerHandle)> {
        let poll = Poll::new()?;
        let (handle, commands) = ServerHandle::new(poll.registry(), Source::Waker.token())?;
        let signals = if handle_signals {
            let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR1])?;
            poll.registry().register(&mut signals, Source::Signals.token(), Interest::READABLE)?;
            Some(signals)
        } else {
            None
        };
        let mut slots = Vec::with_capacity(listeners.len());
        for (index, (mut listener, addr, service)) in listeners.into_iter().enumerate() {
            poll.registry().register(&mut listener, Source::Listener(index).token(), Interest::READABLE)?;
            let proxy = config.proxy_protocol && matches!(listener, Listener::Tcp(_));
            slots.push(ListenerSlot { listener, addr, service, paused_until: None, owed: false, proxy });
        }
        let mut endpoints = Vec::with_capacity(datagrams.len());
        for (index, (mut socket, addr, service)) in datagrams.into_iter().enumerate() {
            poll.registry().register(&mut socket, Source::Datagram(index).token(), Interest::READABLE)?;
            endpoints.push(DatagramEndpoint::new(socket, addr, service));
        }
        let mut limits = config.limits();
        limits.max_connections = limits.max_connections.min(source::MAX_CONNECTIONS);
        let now = Instant::now();
        let mut services = services;
        let rooms = room::rooms_of(&mut services);
        let shared_rooms: Vec<String> =
            rooms.iter().filter_map(|room| room.shared_name().map(String::from)).collect();
        let backplane = match &config.backplane {
            Some(url) if !shared_rooms.is_empty() => {
                // A room line is a sender's address, ": " and a message of up to max_frame.
                let max_message = limits.max_frame + 1024;
                let tokens = (
                    Source::Backplane(crate::backplane::Role::Publisher).token(),
                    Source::Backplane(crate::backplane::Role::Subscriber).token(),
                );
                Some(Backplane::new(
                    url.clone(),
                    &shared_rooms,
                    tokens,
                    config.backplane_ping,
                    max_message,
                    now,
                ))
            }
            Some(url) => {
                info!("backplane unused: no listener serves a room; backplane={url}");
                None
            }
            None => None,
        };
        let recording = limits.trace_file.clone().map(|path| {
            crate::timeline::Recording::new(crate::timeline::Timeline::new(path, limits.trace_limit))
        });
        let reactor = Reactor {
            poll,
            conns: Slab::new(),
            services,
            rooms,
            sources: Sources {
                listeners: slots,
                datagrams: endpoints,
                signals,
                commands,
                backplane,
                unix_serial: 0,
                tls,
                tls_files: (config.tls_cert.clone(), config.tls_key.clone()),
            },
            queues: Queues::default(),
            scratch: Scratch { read: vec![0; READ_BUFFER_SIZE], ..Scratch::default() },
            clocks: Clocks {
                idle: config.idle_timeout.map(|timeout| TimerWheel::new(timeout, now)),
                keepalive: keepalive::wheel(config.ws_ping, now),
                due: Vec::new(),
                now_tick: 0,
                started: now,
                draining: None,
            },
            telemetry: Telemetry {
                stats: Stats::default(),
                preparing: 0,
                cut_at_deadline: 0,
                reporter: config.stats_interval.map(|interval| Reporter::new(interval, now)),
                trace: WakeupTrace::default(),
                recording,
                shared_metrics: shared_metrics(config),
                accept_log: LogThrottle::new(Duration::from_secs(1)),
                misbehaving_log: LogThrottle::new(Duration::from_secs(1)),
                raw_hint: hint::RawHint::default(),
            },
            files: files::Files::default(),
            protocols: ProtocolOptions {
                ws: std::sync::Arc::new(crate::codec::ws::Options {
                    origins: config.ws_origins.clone(),
                    deflate: cfg!(feature = "deflate"),
                }),
            },
            limits,
        };
        Ok((reactor, handle))
    }

    /// Serves until shut down (signal or [`ServerHandle::shutdown`]) and drained. Only a
    /// failure of the poller itself ends it with an error.
    pub fn run(mut self) -> io::Result<RunSummary> {
        info!(
            "started; listeners={} max_connections={} max_frame={} max_output={}",
            self.sources.listeners.len() + self.sources.datagrams.len(),
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
            if let Some(wheel) = &self.clocks.idle {
                self.clocks.now_tick = wheel.now_tick(woke);
            }
            self.telemetry.trace.begin(&self.telemetry.stats);
            self.queues.handshakes = 0;
            let mut event_count = 0;
            for event in events.iter() {
                event_count += 1;
                self.serve_source(Source::of(event.token()), source::Readiness::of(event), woke);
            }
            if let Some(recording) = &mut self.telemetry.recording {
                recording.wakeup(woke, event_count);
            }
            self.serve_owed();
            self.run_timers(woke);
            // The turn's publishes leave first: the other servers start their members'
            // copies while this one writes to its own (a room of 12,500 members here takes
            // ~150 ms of writes, which every other server waited out before).
            if let Some(backplane) = &mut self.sources.backplane {
                backplane.flush(woke);
            }
            self.release_rooms();
            self.flush_queued();
            self.close_queued();
            self.publish_metrics();
            let busy = woke.elapsed();
            let telemetry = &mut self.telemetry;
            telemetry.stats.record_wakeup(event_count, busy);
            telemetry.trace.finish(telemetry.stats.wakeups, event_count, busy, &telemetry.stats);
            if telemetry.reporter.is_some() {
                let stats = self.stats_snapshot();
                if let Some(reporter) = &mut self.telemetry.reporter {
                    reporter.note_wakeup(busy);
                    reporter.maybe_report(woke, &stats);
                }
            }
            if self.clocks.draining.is_some() && self.conns.is_empty() {
                break;
            }
        }
        let summary = RunSummary::new(
            self.clocks.started.elapsed(),
            self.stats_snapshot(),
            self.telemetry.cut_at_deadline,
        );
        if let Some(recording) = self.telemetry.recording.take() {
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
        if !self.queues.owed.is_empty()
            || !self.queues.flush.is_empty()
            || !self.queues.close.is_empty()
            || self.rooms_waiting()
        {
            return Some(Duration::ZERO);
        }
        let started = self.clocks.started;
        let at_ms = |&(until_ms, _): &(u64, usize)| started + Duration::from_millis(until_ms);
        [
            self.clocks.idle.as_ref().and_then(TimerWheel::next_due),
            self.clocks.keepalive.as_ref().and_then(TimerWheel::next_due),
            self.telemetry.reporter.as_ref().map(Reporter::next_due),
            self.sources.listeners.iter().filter_map(|slot| slot.paused_until).min(),
            self.clocks.draining,
            self.queues.lingering.front().map(at_ms),
            self.queues.preparing.front().map(at_ms),
            self.sources.backplane.as_ref().map(Backplane::next_deadline),
            self.telemetry.raw_hint.next_due(),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|deadline| deadline.saturating_duration_since(now))
    }

    fn run_timers(&mut self, now: Instant) {
        if let Some(backplane) = &mut self.sources.backplane {
            backplane.on_timers(self.poll.registry(), now);
        }
        self.resume_accepting(now);
        self.check_unterminated(now);
        self.expire_idle(now);
        self.check_keepalive(now);
        self.expire_preparing(now);
        self.expire_lingering(now);
        if let Some(deadline) = self.clocks.draining {
            if now >= deadline {
                self.cut_off_at_deadline();
            }
        }
    }

    fn run_commands(&mut self, now: Instant) {
        while let Ok(command) = self.sources.commands.try_recv() {
            match command {
                Command::Shutdown => self.begin_shutdown(now),
                Command::Stats(reply) => {
                    let _ = reply.try_send(self.stats_snapshot());
                }
            }
        }
    }

    fn on_signals(&mut self, now: Instant) {
        let Some(signals) = &mut self.sources.signals else {
            return;
        };
        let received: Vec<i32> = signals.pending().collect();
        for signal in received {
            info!("signal received; signal={signal}");
            if signal == SIGUSR1 {
                self.reload_tls();
            } else {
                self.begin_shutdown(now);
            }
        }
    }

    /// Stops accepting and starts draining: no more reading, pending output is flushed, each
    /// connection closes once written (told the server is going away, in its protocol, where
    /// the protocol has a way to say it), and the rest are cut at the deadline. A second stop
    /// request while draining ends the drain at once.
    fn begin_shutdown(&mut self, now: Instant) {
        if self.clocks.draining.is_some() {
            info!("second stop request; closing now");
            self.clocks.draining = Some(now);
            return;
        }
        let deadline = now + self.limits.drain_timeout;
        info!(
            "stopping; conns={} drain_timeout_ms={}",
            self.conns.len(),
            self.limits.drain_timeout.as_millis()
        );
        self.clocks.draining = Some(deadline);
        if self.sources.signals.is_some() {
            // Run as a program (it handles the signals): tell a systemd supervisor.
            crate::sys::notify::notify("STOPPING=1");
        }
        for mut slot in self.sources.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut slot.listener);
        }
        // UDP has no connections to drain: send what is queued if the socket takes it, and
        // stop serving datagrams.
        for index in 0..self.sources.datagrams.len() {
            self.flush_datagrams(index);
        }
        self.sources.datagrams.clear();
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.notify(key, crate::codec::Notice::GoingAway);
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
        self.telemetry.cut_at_deadline += keys.len() as u64;
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
        let mut stats = Stats {
            connections_open: self.conns.len(),
            connections_preparing: self.telemetry.preparing,
            buffers: self.scratch.pool.stats(),
            ..self.telemetry.stats.clone()
        };
        if let Some(backplane) = &self.sources.backplane {
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
