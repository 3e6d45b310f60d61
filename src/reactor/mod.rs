//! The reactor: one thread, one `mio::Poll`, every socket of the server.
//!
//! Each turn of the loop waits in `poll` until some socket is ready (or a timer is due), then
//! works through phases:
//!
//! 1. **events**: each readiness event goes to its source, here ([`Source`]): a ready
//!    connection gets its turn ([`Turn`](connection::Turn), `connection.rs`: read, decode,
//!    handle, write, settle); a ready listener accepts (`accept.rs`); a UDP endpoint answers
//!    its datagrams (`datagram.rs`); a backplane link delivers its room lines;
//! 2. **owed**: serve again what an earlier pass cut short (a budget ran out, reading resumed,
//!    plaintext waiting inside a transport);
//! 3. **timers**: resume paused accepting, expire idle connections, those that never got
//!    ready and those done lingering (`close.rs`), ping quiet WebSocket clients
//!    (`keepalive.rs`), end the drain;
//! 4. **flush**: send the turn's room lines to the backplane, so other servers start on
//!    their members at once; write each room's lines of the turn to its members, straight
//!    from one buffer per codec (`room.rs`, `output.rs`); write every connection that still
//!    has new output (a socket that became writable, say), in one `write` each;
//! 5. **close**: remove the connections marked for closing (`close.rs`).
//!
//! Nothing blocks, and no connection gets more than a bounded share of one turn, so a single
//! thread serves thousands of clients "at once": by taking turns at message granularity.
//! Closing is deferred to the end of a turn so no step ever holds a connection that another
//! step has removed. The loop dispatches; a connection's work is its [`Turn`](connection::Turn)'s,
//! which hands back to the loop only what concerns others ([`Next`](connection::Next)).
//! docs/architecture.md draws the picture.
//!
//! The reactor's state is grouped by who uses it (`parts.rs`): the connections and what they
//! are served by (services, rooms), the other sources the poll watches ([`Sources`]), the
//! work queued for later, the buffers every connection borrows in turn, the clocks, what it
//! reports about itself, and the files it sends ([`files::Files`]).

mod accept;
mod budget;
pub(crate) mod buffer_pool;
mod close;
pub(crate) mod connection;
mod console;
pub(crate) mod control;
mod datagram;
mod files;
mod hint;
mod keepalive;
mod metrics;
mod output;
mod parts;
mod record;
mod reporter;
mod room;
mod service;
mod timer_wheel;
mod trace;

use std::io;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use log::{debug, error, info, trace, warn};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::backplane::{Backplane, Role};
use crate::codec::ProtocolOptions;
use crate::config::{Limits, ServerConfig};
use crate::stats::{RunSummary, Stats};
use crate::sys::address::ListenAddr;
use crate::sys::socket::{Listener, interrupted};
use crate::transport::{TlsConfig, load_tls};
use accept::AddressCounts;
use budget::Budget;
use connection::{Connection, Next, Progress, StopReason, Turn};
use console::Console;
use control::{Command, ServerHandle};
use datagram::DatagramEndpoint;
use mio::net::UdpSocket;
use parts::{Clocks, Preparing, Queues, Scratch, Telemetry};
use record::Records;
use reporter::Reporter;
use room::Room;
use timer_wheel::TimerWheel;
use trace::Mark;

pub(crate) use close::CloseReason;
#[cfg(feature = "cli")]
pub(crate) use metrics::SLOT_WORDS as METRICS_SLOT_WORDS;
pub(crate) use service::Service;

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

// ----- sources: everything the poll watches, each with its token -----

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

/// Who a token belongs to. Connection tokens are slab keys (small numbers); listeners, UDP
/// endpoints, the two backplane links, the signal pipe and the waker have fixed tokens in
/// ranges at the top of the `usize` range, which no slab key reaches.
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
struct Readiness {
    readable: bool,
    writable: bool,
    /// The end of the stream (or an error) was announced with it: read on to `WouldBlock`,
    /// since no further edge will come.
    drain: bool,
    /// It comes from the owed list (not an event): it is off the list now.
    owed: bool,
}

impl Readiness {
    /// What a readiness event says.
    #[inline]
    fn of(event: &mio::event::Event) -> Readiness {
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

/// What the poll watches besides connections, each with its own token ([`Source`]).
struct Sources {
    listeners: Vec<ListenerSlot>,
    /// UDP sockets (`datagram.rs`).
    datagrams: Vec<DatagramEndpoint>,
    /// SIGINT, SIGTERM and SIGHUP, when the server handles signals.
    signals: Option<Signals>,
    /// Commands from [`ServerHandle`]s, announced by the waker.
    commands: Receiver<Command>,
    /// Rooms shared with other servers through a pub/sub engine.
    backplane: Option<Backplane>,
    /// Numbers Unix-socket clients, which have no address.
    unix_serial: u64,
    /// What `tls://` listeners' connections are made with (reloaded on `SIGUSR1`).
    tls: Option<TlsConfig>,
    /// Where the TLS certificate and key were read from, to read them again.
    tls_files: (Option<std::path::PathBuf>, Option<std::path::PathBuf>),
}

impl Sources {
    /// `SIGUSR1`: the TLS certificate and key, read again; new handshakes use the new pair,
    /// connections already up keep theirs. A pair that cannot be read, or whose key is not
    /// the certificate's, is refused with one log line and the old pair kept. (SIGHUP
    /// already means "drain and stop" here, for a terminal that closes, so renewal has a
    /// signal of its own.) True if it was reloaded.
    fn reload_tls(&mut self) -> bool {
        if self.tls.is_none() {
            info!("SIGUSR1 ignored: no tls:// listener");
            return false;
        }
        let (cert, key) = &self.tls_files;
        match load_tls(cert.as_deref(), key.as_deref()) {
            Ok(config) => {
                self.tls = Some(config);
                info!("TLS certificate reloaded; new handshakes use it");
                true
            }
            Err(reason) => {
                error!("TLS certificate not reloaded, the old one stays; error={reason}");
                false
            }
        }
    }
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
    /// What each room remembers: its members' names and its last lines (`record.rs`).
    records: Records,
    limits: Limits,
    sources: Sources,
    queues: Queues,
    /// Connections not served yet, and their deadlines.
    preparing: Preparing,
    /// What all clients hold, within `--max-client-memory`.
    budget: Budget,
    /// Connections per client address, under `--max-connections-per-ip`.
    per_address: Option<AddressCounts>,
    /// The loop watched live (`--listen console=ADDR`), if a listener serves it.
    console: Option<Console>,
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
            endpoints.push(DatagramEndpoint::new(socket, addr, service, index));
        }
        let mut limits = config.limits();
        limits.max_connections = limits.max_connections.min(MAX_CONNECTIONS);
        let now = Instant::now();
        let mut services = services;
        let rooms = room::rooms_of(&mut services);
        let ws = |page| ProtocolOptions {
            ws: std::sync::Arc::new(crate::codec::ws::Options {
                origins: config.ws_origins.clone(),
                deflate: cfg!(feature = "deflate"),
                page,
            }),
        };
        let (chat, console_page) = (ws(crate::codec::ws::Page::CHAT), ws(console::PAGE));
        let mut console = None;
        for (index, service) in services.iter_mut().enumerate() {
            if service.handler.watches_the_loop() {
                service.protocols = console_page.clone();
                console.get_or_insert_with(|| Console::new(index, now));
            } else {
                service.protocols = chat.clone();
            }
        }
        let shared_rooms: Vec<(String, usize)> = rooms
            .iter()
            .enumerate()
            .filter_map(|(index, room)| room.shared_name().map(|name| (name.to_string(), index)))
            .collect();
        let engine = config.backplane.is_some() && !shared_rooms.is_empty();
        let records = Records::new(&rooms, &services, config.history, engine);
        let shared_rooms: Vec<(String, Option<usize>)> =
            shared_rooms.into_iter().map(|(name, room)| (name, records.keeps(room))).collect();
        let backplane = match &config.backplane {
            Some(url) if !shared_rooms.is_empty() => {
                // A room line is a sender's address, ": " and a message of up to max_frame.
                let max_message = limits.max_frame + 1024;
                let tokens =
                    (Source::Backplane(Role::Publisher).token(), Source::Backplane(Role::Subscriber).token());
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
            records,
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
            preparing: Preparing::default(),
            budget: Budget::new(limits.max_client_memory),
            console,
            per_address: limits.max_connections_per_ip.map(AddressCounts::new),
            scratch: Scratch { read: vec![0; READ_BUFFER_SIZE], ..Scratch::default() },
            clocks: Clocks {
                idle: config.idle_timeout.map(|timeout| TimerWheel::new(timeout, now)),
                keepalive: config.ws_ping.map(|interval| TimerWheel::new(interval, now)),
                due: Vec::new(),
                now_tick: 0,
                started: now,
                draining: None,
            },
            telemetry: Telemetry::new(
                config.stats_interval.map(|interval| Reporter::new(interval, now)),
                recording,
                metrics::SharedMetrics::inherited(config),
            ),
            files: files::Files::default(),
            limits,
        };
        Ok((reactor, handle))
    }

    /// Serves until shut down (signal or [`ServerHandle::shutdown`]) and drained. Only a
    /// failure of the poller itself ends it with an error.
    pub fn run(mut self) -> io::Result<RunSummary> {
        info!(
            "started; listeners={} max_connections={} max_frame={} max_output={} max_client_memory={}",
            self.sources.listeners.len() + self.sources.datagrams.len(),
            self.limits.max_connections,
            self.limits.max_frame,
            self.limits.max_output,
            self.limits.max_client_memory
        );
        self.claim_metrics_slot();
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        loop {
            let polled = Instant::now();
            let timeout = self.poll_timeout(polled);
            if let Err(error) = self.poll.poll(&mut events, timeout) {
                if interrupted(&error) {
                    continue;
                }
                return Err(error);
            }
            let woke = Instant::now();
            self.clocks.wake(woke);
            self.telemetry.trace.begin(&self.telemetry.stats);
            self.queues.handshakes = 0;
            let mut event_count = 0;
            for event in events.iter() {
                event_count += 1;
                self.serve_source(Source::of(event.token()), Readiness::of(event), woke);
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
            self.evict_biggest();
            self.close_queued();
            self.publish_metrics();
            let busy = woke.elapsed();
            if self.console.is_some() {
                let turn = (self.telemetry.stats.wakeups + 1, event_count, woke - polled, busy);
                self.end_console_turn(turn, woke);
            }
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

    /// Serves `source`, ready as `ready` says: the one place a token is routed, for events
    /// and owed work alike.
    fn serve_source(&mut self, source: Source, ready: Readiness, now: Instant) {
        match source {
            Source::Conn(key) => {
                trace!(
                    "event; conn={key} readable={} writable={} closed={}",
                    ready.readable, ready.writable, ready.drain
                );
                let Some(conn) = self.conns.get_mut(key) else { return };
                if ready.writable {
                    self.queues.flush(key, conn);
                }
                if !ready.readable {
                    return self.serve_conn(key, Progress::writing());
                }
                let progress = if ready.owed {
                    conn.clear_owed_read();
                    // What waited in its kept input (a file that is out) first.
                    Progress::kept_input()
                } else {
                    Progress::reading(ready.drain)
                };
                // What this turn got done, for the trace log and the console (not the
                // console's own connections: watching must not feed itself).
                let watched = match &mut self.console {
                    Some(console) if console.is_own(conn.service()) => {
                        console.own_event();
                        false
                    }
                    console => console.is_some() || self.telemetry.trace.is_on(),
                };
                let mark = watched.then(|| Mark::of(&self.telemetry.stats));
                self.serve_conn(key, progress);
                if let Some(mark) = mark {
                    self.note_served(key, mark);
                }
            }
            Source::Listener(index) => {
                if ready.owed {
                    if let Some(slot) = self.sources.listeners.get_mut(index) {
                        slot.owed = false;
                    }
                }
                self.accept_from(index);
            }
            Source::Datagram(index) => self.serve_datagrams(index, ready),
            Source::Backplane(role) => self.on_backplane(role, now),
            Source::Waker => self.run_commands(now),
            Source::Signals => self.on_signals(now),
        }
    }

    /// Connection `key`'s turn, from `progress`: the turn does the connection's work, and
    /// the loop does for it only what concerns others, until the turn is over.
    fn serve_conn(&mut self, key: usize, mut progress: Progress) {
        while let Some(turn) = self.turn(key) {
            match turn.go(&mut progress) {
                Next::Done => return,
                Next::CarryOut => self.carry_out(key),
                Next::Promote => self.promote_if_ready(key),
                Next::ReleaseRoom => self.release_room_of(key),
                Next::Publish => self.publish_metrics(),
                Next::FileDone => self.finish_file(key),
                Next::OverBudget => self.evict_biggest(),
            }
        }
    }

    /// UDP endpoint `index` is ready: send what waits, answer what came.
    fn serve_datagrams(&mut self, index: usize, ready: Readiness) {
        let Some(endpoint) = self.sources.datagrams.get_mut(index) else { return };
        if ready.writable {
            endpoint.flush(self.poll.registry(), &mut self.telemetry.stats);
        }
        if ready.readable {
            if ready.owed {
                endpoint.owed = false;
            }
            let service = &mut self.services[endpoint.service];
            let registry = self.poll.registry();
            if endpoint.receive(service, &mut self.scratch, &mut self.telemetry, &self.limits, registry) {
                self.queues.owe(Source::Datagram(index), &mut endpoint.owed);
            }
        }
    }

    /// A turn for connection `key` (if it is still there), lent what it needs.
    #[inline]
    fn turn(&mut self, key: usize) -> Option<Turn<'_>> {
        let conn = self.conns.get_mut(key)?;
        let service = &mut self.services[conn.service()];
        Some(Turn {
            key,
            room_waiting: self.rooms[service.room].lines_waiting(),
            conn,
            service,
            scratch: &mut self.scratch,
            queues: &mut self.queues,
            budget: &mut self.budget,
            telemetry: &mut self.telemetry,
            limits: &self.limits,
            clocks: &self.clocks,
            registry: self.poll.registry(),
        })
    }

    /// Serves what earlier passes cut short. A pass can owe again; that waits for the next
    /// turn (with a zero poll timeout), so new events get their turn in between.
    fn serve_owed(&mut self) {
        let mut owed = std::mem::take(&mut self.queues.owed);
        for &source in &owed {
            self.serve_source(source, Readiness::OWED, Instant::now());
        }
        owed.clear();
        if self.queues.owed.is_empty() {
            self.queues.owed = owed;
        }
    }

    /// How long `poll` may sleep: not at all if work is owed, else until the next timer.
    /// With nothing to do and no timers, it sleeps until a socket is ready: an idle server
    /// uses no CPU.
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if self.queues.has_work() || self.rooms.iter().any(Room::lines_waiting) {
            return Some(Duration::ZERO);
        }
        [
            self.clocks.idle.as_ref().and_then(TimerWheel::next_due),
            self.clocks.keepalive.as_ref().and_then(TimerWheel::next_due),
            self.telemetry.reporter.as_ref().map(Reporter::next_due),
            self.sources.listeners.iter().filter_map(|slot| slot.paused_until).min(),
            self.clocks.draining,
            self.queues.next_deadline_ms().map(|ms| self.clocks.at_ms(ms)),
            self.preparing.next_deadline_ms().map(|ms| self.clocks.at_ms(ms)),
            self.sources.backplane.as_ref().map(Backplane::next_deadline),
            self.records.next_deadline(),
            self.telemetry.raw_hint.next_due(),
            self.console.as_ref().and_then(Console::next_due),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|deadline| deadline.saturating_duration_since(now))
    }

    fn run_timers(&mut self, now: Instant) {
        if let Some(backplane) = &mut self.sources.backplane {
            backplane.on_timers(self.poll.registry(), now);
            self.hear_engine(now);
        }
        self.resume_accepting(now);
        let draining = self.clocks.draining.is_some();
        self.telemetry.raw_hint.check(now, &self.conns, &self.services, draining);
        self.expire_idle(now);
        if let Some(keepalive) = &mut self.clocks.keepalive {
            keepalive::check(keepalive, now, &mut self.conns, &mut self.scratch, &mut self.queues);
        }
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
                if self.sources.reload_tls() {
                    self.telemetry.stats.tls_reloads += 1;
                }
            } else {
                self.begin_shutdown(now);
            }
        }
    }

    /// A backplane link is ready (or was owed a turn): connect, read, deliver each line from
    /// another server to its room's local members, with the room's other lines of the turn,
    /// as output pushed by someone else (a member that cannot keep up is dropped as a slow
    /// consumer, exactly as for a line from a local sender).
    fn on_backplane(&mut self, role: Role, now: Instant) {
        let Some(mut backplane) = self.sources.backplane.take() else { return };
        let mut buffer = std::mem::take(&mut self.scratch.read);
        let (rooms, records) = (&mut self.rooms, &mut self.records);
        let owed = backplane.on_ready(role, now, &mut buffer, |shared, id, line| {
            if log::log_enabled!(target: "evloop::room", log::Level::Debug) {
                log::debug!(
                    target: "evloop::room",
                    "room line from the backplane; pid={} at_ns={} line={:?}",
                    std::process::id(),
                    crate::sys::monotonic_ns(),
                    String::from_utf8_lossy(&line[..line.len().min(80)])
                );
            }
            if let Some(room) = rooms.iter().position(|room| room.backplane == Some(shared)) {
                rooms[room].push_line(None, line);
                // Whether a line from another server is kept or a notice matters only to a
                // room kept in memory, and a room on a backplane is kept on the engine.
                records.line(room, None, Some(id), line, true);
            }
        });
        self.scratch.read = buffer;
        self.sources.backplane = Some(backplane);
        self.hear_engine(now);
        // A room that grew past its bound is released at once.
        for room in 0..self.rooms.len() {
            if self.rooms[room].is_full() {
                self.release_room(room);
            }
        }
        if owed {
            // Its budget ran out with bytes perhaps still waiting: no new edge will say so.
            let source = Source::Backplane(role);
            if !self.queues.owed.contains(&source) {
                self.queues.owed.push(source);
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
        for endpoint in &mut self.sources.datagrams {
            endpoint.flush(self.poll.registry(), &mut self.telemetry.stats);
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
            self.queues.flush(key, conn);
        }
    }

    /// Marks `key` to be removed at the end of the turn (once, whatever the callers).
    fn close_later(&mut self, key: usize, reason: CloseReason) {
        if let Some(conn) = self.conns.get_mut(key) {
            self.queues.close(key, conn, reason);
        }
    }

    /// Connection `key` was served since `mark`: into the trace log's line and the console.
    fn note_served(&mut self, key: usize, mark: Mark) {
        let (messages, bytes_in, bytes_out) = mark.since(&self.telemetry.stats);
        if self.telemetry.trace.is_on() {
            let peer = self.conns.get(key).map(|conn| conn.peer().clone());
            self.telemetry.trace.served(key, peer, mark, &self.telemetry.stats);
        }
        if let Some(console) = &mut self.console {
            console.served(console::Served { conn: key, messages, bytes_in, bytes_out });
        }
    }

    /// The console's end of a turn: the turn to its watchers (as many as may have it), and
    /// a snapshot when one is due.
    fn end_console_turn(&mut self, turn: (u64, usize, Duration, Duration), now: Instant) {
        let Some(mut console) = self.console.take() else { return };
        let behind: Vec<(usize, bool)> = console
            .watchers()
            .map(|key| (key, self.conns.get(key).is_none_or(|conn| conn.pending() > console::BEHIND)))
            .collect();
        let is_behind = |key: usize| behind.iter().any(|&(watcher, behind)| watcher == key && behind);
        let snapshot_due =
            console.end_turn(turn, now, is_behind, |key, message| self.tell_watcher(key, message));
        if snapshot_due {
            self.send_snapshot(&mut console, None, now);
        }
        self.console = Some(console);
    }

    /// A snapshot to `watcher`, or to every watcher.
    fn send_snapshot(&mut self, console: &mut Console, watcher: Option<usize>, now: Instant) {
        let stats = self.stats_snapshot();
        let view = console::View {
            conns: &self.conns,
            services: &self.services,
            rooms: &self.rooms,
            stats: &stats,
            client_memory: self.budget.held(),
        };
        let snapshot = console.snapshot(now, &view).to_string();
        let watchers: Vec<usize> = match watcher {
            Some(key) => vec![key],
            None => console.watchers().collect(),
        };
        for key in watchers {
            self.tell_watcher(key, &snapshot);
        }
    }

    /// A console message to watcher `key`, as a text frame after what it has queued; not
    /// counted among the server's messages (watching must not feed itself).
    fn tell_watcher(&mut self, key: usize, message: &str) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if !conn.accepts_messages() {
            return;
        }
        let codec = self.services[conn.service()].codec;
        conn.push_output(codec, message.as_bytes(), true, &mut self.scratch.pool);
        self.queues.flush(key, conn);
        if self.budget.count(conn) {
            self.evict_biggest();
        }
    }

    fn stats_snapshot(&self) -> Stats {
        let mut stats = Stats {
            connections_open: self.conns.len(),
            connections_preparing: self.preparing.count(),
            buffers: self.scratch.pool.stats(),
            client_memory: self.budget.held(),
            ..self.telemetry.stats.clone()
        };
        if let Some(backplane) = &self.sources.backplane {
            stats.set_backplane(backplane.counters());
        }
        stats
    }
}
