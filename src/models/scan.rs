//! The `select` and `poll` models: one thread and non-blocking sockets, as in the classic
//! course's `select.select` loop. Every turn rebuilds the whole interest set (each listener,
//! each connection), hands it to the kernel, and scans every entry of the answer for the few
//! that are ready. Same handlers and codecs as the reactor; what differs is that this
//! per-turn work grows with every connection, busy or idle, where epoll's does not.
//!
//! `select` cannot watch a descriptor at or past `FD_SETSIZE` (1024): writing its bit would
//! corrupt memory, so a connection that gets such a descriptor is turned away with
//! `ERR server full` (logged, once a second at most), and the others are served on.
//!
//! `--trace-file` records the same timeline as the reactor's: a track per connection, each
//! wakeup an instant on the loop's track with the number of descriptors found ready. With a
//! console listener, each turn that served a client is told to the console as the
//! reactor's are (`console/tap.rs`): the clients served, in the order served.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use slab::Slab;

use super::BlockingService;
use super::console::tap::LoopTap;
use crate::codec::{Codec, Decoder, FrameError};
use crate::config::Limits;
use crate::console::{Counters, Row, Served};
use crate::handlers::serve::{self, Carrier, Flow, Serving};
use crate::handlers::{ConnId, Outbox, Peer};
use crate::log_throttle::LogThrottle;
use crate::stats::{RunSummary, Stats};
use crate::sys::address::PeerAddr;
use crate::sys::scan::{self, FD_SETSIZE, Watch};
use crate::sys::socket::{gate, interrupted, write_until_full};
use crate::timeline::{Recording, Timeline};

/// How long one wait may last, so a stop request is seen.
const WAIT: Duration = Duration::from_millis(100);
/// The read buffer: one read per ready connection per turn.
const READ_BUFFER: usize = 64 * 1024;

/// Which readiness call scans the set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan {
    /// `select(2)`: bitmaps, at most `FD_SETSIZE` descriptors.
    Select,
    /// `poll(2)`: an array, any number of descriptors.
    Poll,
}

/// One client.
struct ScanConn {
    stream: TcpStream,
    peer: PeerAddr,
    service: usize,
    decoder: Decoder,
    /// Undecoded input.
    input: Vec<u8>,
    /// Output not written yet.
    output: Vec<u8>,
    /// Still reading: false after its end of stream or a handler's close.
    reading: bool,
}

/// Serves `services` with `kind` until SIGINT, SIGTERM or SIGHUP.
pub fn run(
    kind: Scan,
    services: Vec<BlockingService>,
    config: &Limits,
    console: Option<LoopTap>,
) -> io::Result<RunSummary> {
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM, SIGHUP] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    let mut listeners: Vec<(usize, TcpListener)> = Vec::new();
    let mut handlers = Vec::new();
    let mut codecs = Vec::new();
    let mut names = Vec::new();
    for (index, service) in services.into_iter().enumerate() {
        for (listener, _) in service.listeners {
            listener.set_nonblocking(true)?;
            listeners.push((index, listener));
        }
        handlers.push(service.handler);
        codecs.push(service.codec);
        names.push(service.name);
    }
    info!("started; model={kind:?} listeners={}", listeners.len());
    let mut telemetry = Telemetry {
        stats: Stats::default(),
        recording: config
            .trace_file
            .clone()
            .map(|path| Recording::new(Timeline::new(path, config.trace_limit))),
        full_log: LogThrottle::new(Duration::from_secs(1)),
        console,
    };
    let mut conns: Slab<ScanConn> = Slab::new();
    let mut buffer = vec![0; READ_BUFFER];
    let mut outbox = Outbox::default();
    let mut watches: Vec<Watch> = Vec::new();
    let mut keys: Vec<usize> = Vec::new();
    let mut pollfds = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        // The whole interest set, rebuilt every turn: this is the cost the model shows.
        watches.clear();
        keys.clear();
        for (_, listener) in &listeners {
            watches.push(Watch::new(listener.as_raw_fd(), true, false));
        }
        for (key, conn) in &conns {
            let read = conn.reading && conn.output.len() <= config.max_output;
            watches.push(Watch::new(conn.stream.as_raw_fd(), read, !conn.output.is_empty()));
            keys.push(key);
        }
        let polled = Instant::now();
        let waited = match kind {
            Scan::Select => scan::select(&mut watches, WAIT),
            Scan::Poll => scan::poll(&mut watches, &mut pollfds, WAIT),
        };
        match waited {
            Ok(_) => {}
            Err(error) if interrupted(&error) => continue,
            Err(error) => return Err(error),
        }
        let woke = Instant::now();
        telemetry.stats.wakeups += 1;
        let ready = if telemetry.recording.is_some() || telemetry.console.is_some() {
            watches.iter().filter(|watch| watch.readable || watch.writable).count()
        } else {
            0
        };
        if let Some(recording) = &mut telemetry.recording {
            recording.wakeup(woke, ready);
        }
        for (index, (service, listener)) in listeners.iter().enumerate() {
            if watches[index].readable {
                accept_all(kind, listener, *service, codecs[*service], &mut conns, config, &mut telemetry);
            }
        }
        // Scan every connection's answer: ready or not, each is looked at.
        for (position, &key) in keys.iter().enumerate() {
            let watch = watches[listeners.len() + position];
            if watch.readable {
                let before = telemetry.mark();
                read_and_handle(
                    key,
                    &mut conns,
                    &mut handlers,
                    &codecs,
                    &mut buffer,
                    &mut outbox,
                    config,
                    &mut telemetry,
                );
                telemetry.served_since(key, before);
            }
        }
        let mut finished = Vec::new();
        for (key, conn) in &mut conns {
            if !conn.output.is_empty() {
                match write_out(conn, &mut telemetry.stats) {
                    Ok(written) => telemetry.wrote(key, written),
                    Err(error) => {
                        debug!("closed on write error; conn={key} error={error}");
                        conn.reading = false;
                        conn.output.clear();
                    }
                }
            }
            if !conn.reading && conn.output.is_empty() {
                finished.push(key);
            }
        }
        for key in finished {
            let conn = conns.remove(key);
            let _ = conn.stream.shutdown(Shutdown::Both);
            telemetry.closed(key);
        }
        if telemetry.console.is_some() {
            let view = View { conns: &conns, names: &names, codecs: &codecs, handlers: &handlers };
            telemetry.end_turn((ready, woke - polled, woke), &view);
        }
    }
    info!("stopped; model={kind:?}");
    let Telemetry { mut stats, recording, .. } = telemetry;
    if let Some(recording) = recording {
        recording.finish();
    }
    stats.connections_open = conns.len();
    Ok(RunSummary::new(started.elapsed(), stats, conns.len() as u64))
}

/// What the loop counts, records and logs.
struct Telemetry {
    stats: Stats,
    /// `--trace-file`: the timeline being recorded.
    recording: Option<Recording>,
    /// The turned-away log: once a second at most (a connect storm turns away thousands).
    full_log: LogThrottle,
    /// `--listen console=ADDR`: the turns and snapshots for the console thread.
    console: Option<LoopTap>,
}

impl Telemetry {
    /// Where the counters stand before a connection's read (messages in, bytes in), for
    /// what the console is told it got done.
    fn mark(&self) -> (u64, u64) {
        (self.stats.messages_in, self.stats.bytes_in)
    }

    /// Connection `key` was served since `before`: for the console's turn.
    fn served_since(&mut self, key: usize, (messages_in, bytes_in): (u64, u64)) {
        if let Some(console) = &mut self.console {
            let (messages, bytes_in) = (self.stats.messages_in - messages_in, self.stats.bytes_in - bytes_in);
            console.served(Served { conn: key, messages, bytes_in, bytes_out: 0 });
        }
    }

    /// `written` bytes went to connection `key` in this turn.
    fn wrote(&mut self, key: usize, written: usize) {
        if let Some(console) = &mut self.console {
            console.wrote(key, written as u64);
        }
    }

    /// Connection `key` was closed.
    fn closed(&mut self, key: usize) {
        self.stats.connections_closed += 1;
        if let Some(recording) = &mut self.recording {
            recording.closed(key);
        }
        if let Some(console) = &mut self.console {
            console.reset(key);
        }
    }

    /// The console's end of a turn (`ready` descriptors, after `waited` in the scan, woken
    /// at `woke`): its message, and a snapshot of `view` when one is wanted.
    fn end_turn(&mut self, (ready, waited, woke): (usize, Duration, Instant), view: &View<'_>) {
        let Some(console) = &mut self.console else { return };
        let now = Instant::now();
        if console.end_turn((self.stats.wakeups, ready, waited, now - woke), now) {
            console.snapshot(now, &counters(&self.stats), |writer, console| view.write(writer, console));
        }
    }
}

/// What a console snapshot of the loop is made from.
struct View<'a> {
    conns: &'a Slab<ScanConn>,
    names: &'a [String],
    codecs: &'a [Codec],
    handlers: &'a [Box<dyn crate::handlers::Handler>],
}

impl View<'_> {
    /// The connections, and each room's members (a room is a service whose handler has
    /// one: all of that service's connections, named after its handler).
    fn write(&self, writer: &mut crate::console::SnapshotWriter<'_>, console: &LoopTap) {
        for (key, conn) in self.conns {
            writer.connection(&Row {
                conn: key,
                peer: &conn.peer,
                handler: &self.names[conn.service],
                codec: &self.codecs[conn.service],
                transport: "plain",
                state: if conn.reading { "ready" } else { "stopping" },
                totals: console.totals(key),
                waiting: conn.output.len(),
            });
        }
        for (service, handler) in self.handlers.iter().enumerate() {
            if handler.has_room() {
                let members = self.conns.iter().filter(|(_, conn)| conn.service == service).count();
                writer.room(&self.names[service], members);
            }
        }
    }
}

/// The counters a console snapshot ends with (the models have no memory budget).
fn counters(stats: &Stats) -> Counters {
    Counters { messages_in: stats.messages_in, messages_out: stats.messages_out, ..Counters::default() }
}

/// Accepts what the listener's backlog holds. Over `select`, a descriptor at or past
/// FD_SETSIZE cannot be watched: that client is told the server is full.
fn accept_all(
    kind: Scan,
    listener: &TcpListener,
    service: usize,
    codec: Codec,
    conns: &mut Slab<ScanConn>,
    config: &Limits,
    telemetry: &mut Telemetry,
) {
    loop {
        let (stream, peer) = match gate(|| listener.accept()) {
            Ok(Some(accepted)) => accepted,
            Ok(None) => return,
            Err(error) => {
                warn!("accept failed; error={error}");
                return;
            }
        };
        let unwatchable = kind == Scan::Select && stream.as_raw_fd() as usize >= FD_SETSIZE;
        if unwatchable || conns.len() >= config.max_connections {
            telemetry.stats.connections_rejected += 1;
            if let Some(held_back) = telemetry.full_log.allow(Instant::now()) {
                let why = if unwatchable {
                    format!("descriptor {} at or past select's FD_SETSIZE {FD_SETSIZE}", stream.as_raw_fd())
                } else {
                    format!("max_connections={}", config.max_connections)
                };
                warn!("server full, turning away; peer={peer} {why} repeats={held_back}");
            }
            super::accept::turn_away(stream, codec);
            continue;
        }
        if stream.set_nonblocking(true).and_then(|()| stream.set_nodelay(true)).is_err() {
            continue;
        }
        telemetry.stats.connections_accepted += 1;
        let key = conns.insert(ScanConn {
            stream,
            peer: PeerAddr::Tcp(peer),
            service,
            decoder: codec.decoder(),
            input: Vec::new(),
            output: Vec::new(),
            reading: true,
        });
        if let Some(recording) = &mut telemetry.recording {
            recording.opened(key, &peer);
        }
        if let Some(console) = &mut telemetry.console {
            console.reset(key);
        }
    }
}

/// One read from a ready connection; its complete messages handled, their intents carried
/// out (replies, the room, close).
#[allow(clippy::too_many_arguments)]
fn read_and_handle(
    key: usize,
    conns: &mut Slab<ScanConn>,
    handlers: &mut [Box<dyn crate::handlers::Handler>],
    codecs: &[Codec],
    buffer: &mut [u8],
    outbox: &mut Outbox,
    config: &Limits,
    telemetry: &mut Telemetry,
) {
    let Some(conn) = conns.get_mut(key) else { return };
    let at_end = match gate(|| conn.stream.read(buffer)) {
        Ok(Some(0)) => true,
        Ok(Some(n)) => {
            telemetry.stats.bytes_in += n as u64;
            conn.input.extend_from_slice(&buffer[..n]);
            false
        }
        Ok(None) => return,
        Err(_) => true,
    };
    let (service, mut decoder) = (conn.service, conn.decoder);
    let input = std::mem::take(&mut conn.input);
    let peer = conn.peer.clone();
    if at_end {
        conn.reading = false;
    }
    // The serve step over the read's messages, replies framed into the outbox; then what
    // they asked of others, carried out.
    let mut frames = decoder.frames(&input, config.max_frame);
    if at_end {
        frames = frames.to_the_end();
    }
    outbox.frame_replies(Some(codecs[service].into()));
    let mut counts = Counts { key, telemetry, limits: config };
    let flow = serve::serve(
        handlers[service].as_mut(),
        Peer { id: ConnId(key), addr: &peer },
        &mut frames,
        outbox,
        &mut counts,
    );
    let used = input.len() - frames.rest().len();
    outbox.frame_replies(None);
    let conn = &mut conns[key];
    conn.decoder = decoder;
    conn.input = input[used..].to_vec();
    telemetry.stats.messages_out += outbox.move_replies_to(&mut conn.output);
    if flow == Flow::Stop {
        conn.reading = false;
    }
    let stats = &mut telemetry.stats;
    serve::carry_out(outbox, ConnId(key), &mut ScanCarrier { conns, key, service, codecs, stats });
    outbox.clear();
}

/// What the serve step counts and records in the scanning models.
struct Counts<'a> {
    key: usize,
    telemetry: &'a mut Telemetry,
    limits: &'a Limits,
}

impl Serving for Counts<'_> {
    fn work(&self) -> Duration {
        self.limits.work_per_message
    }

    fn received(&mut self) {
        self.telemetry.stats.messages_in += 1;
    }

    fn refused(&mut self, _error: &FrameError) {
        self.telemetry.stats.frame_errors += 1;
    }

    fn timing(&self) -> bool {
        self.telemetry.recording.is_some()
    }

    fn handled(&mut self, started: Instant, length: usize) {
        if let Some(recording) = &mut self.telemetry.recording {
            recording.message(self.key, started, length);
        }
    }
}

/// What a handler's intents mean in the scanning models: output appended to connections,
/// written when the scan finds them writable.
struct ScanCarrier<'a> {
    conns: &'a mut Slab<ScanConn>,
    key: usize,
    service: usize,
    codecs: &'a [Codec],
    stats: &'a mut Stats,
}

impl Carrier for ScanCarrier<'_> {
    fn reply(&mut self, payload: &[u8]) {
        deliver(self.conns, self.key, payload, self.codecs, self.stats);
    }

    fn send_to(&mut self, ConnId(to): ConnId, payload: &[u8]) {
        deliver(self.conns, to, payload, self.codecs, self.stats);
    }

    fn send_to_room(&mut self, ConnId(except): ConnId, payload: &[u8]) {
        let service = self.service;
        let room: Vec<usize> = self
            .conns
            .iter()
            .filter(|(other, conn)| *other != except && conn.service == service)
            .map(|(other, _)| other)
            .collect();
        for other in room {
            deliver(self.conns, other, payload, self.codecs, self.stats);
        }
    }

    fn close(&mut self) {
        self.conns[self.key].reading = false;
    }
}

fn deliver(conns: &mut Slab<ScanConn>, key: usize, payload: &[u8], codecs: &[Codec], stats: &mut Stats) {
    if let Some(conn) = conns.get_mut(key) {
        codecs[conn.service].encode(payload, &mut conn.output);
        stats.messages_out += 1;
    }
}

/// Writes what the socket takes of a connection's output; returns how many bytes it took.
fn write_out(conn: &mut ScanConn, stats: &mut Stats) -> io::Result<usize> {
    let stream = &mut conn.stream;
    let written = write_until_full(&conn.output, |bytes| stream.write(bytes))?;
    stats.bytes_out += written as u64;
    conn.output.drain(..written);
    Ok(written)
}
