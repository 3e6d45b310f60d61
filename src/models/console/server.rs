//! The console thread of a comparison model: it serves the console listener (the page, and
//! the WebSocket at `/live`) with a small mio loop of its own, beside the model, so that no
//! model learns HTTP or WebSocket and none of the model's clients ever waits on a watcher.
//! The console's own connections are never in what it shows: the model does not serve them.
//!
//! What it sends comes from its [`Source`]: a loop model's [`Feed`] (turns and snapshots the
//! loop wrote), or a blocking model's [`Clients`] (a snapshot a second, written here). A
//! watcher is sent turns at most [`TURNS_PER_WINDOW`](crate::console::TURNS_PER_WINDOW) per
//! window and none while it is behind in reading ([`BEHIND`]), and is told how many it was
//! not sent; past `--max-output` of unread output it is closed, like any slow consumer.
//!
//! Shortcut: it wakes every [`TICK`] while anyone watches (to take what the loop queued),
//! rather than being woken by the loop: a turn reaches a watcher up to 20 ms late, and the
//! loop never makes a system call for the console.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::TcpListener as StdListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use log::{debug, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::clients::Clients;
use super::feed::{Feed, Message};
use crate::codec::ws::{self, WsSession};
use crate::codec::{Event, Notice, Session, SessionEvents};
use crate::console::{BEHIND, SNAPSHOT_EVERY, Watchers};
use crate::sys::socket::{gate, write_until_full};

/// How often the thread looks for what the model queued, while anyone watches.
const TICK: Duration = Duration::from_millis(20);
/// How often it looks whether the model is stopping, while nobody watches.
const STOP_CHECK: Duration = Duration::from_millis(100);
/// The largest message a watcher may send (it has nothing to say: pongs, a close).
const MAX_FRAME: usize = 4096;
/// Listener `i` has token `LISTENERS - i`, above every slab key.
const LISTENERS: usize = usize::MAX;

/// Where the console's messages come from.
#[derive(Debug)]
pub enum Source {
    /// A loop model's turns and snapshots.
    Loop(Arc<Feed>),
    /// A blocking model's clients, for snapshots only.
    Blocking { model: String, clients: Arc<Clients> },
}

/// One connection to the console: a browser on the page, or a watcher on `/live`.
#[derive(Debug)]
struct Peer {
    stream: TcpStream,
    session: WsSession,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Done: closed once its output is written.
    closing: bool,
    /// Registered for writable too (output was left over).
    writable: bool,
}

/// See the module documentation.
pub struct ConsoleThread {
    poll: Poll,
    listeners: Vec<TcpListener>,
    peers: Slab<Peer>,
    /// Watchers that have had their first snapshot, and those waiting for it (they are sent
    /// no turn before it).
    watchers: Watchers,
    waiting: Vec<usize>,
    source: Source,
    options: Arc<ws::Options>,
    max_output: usize,
    next_snapshot: Instant,
    events: SessionEvents,
    /// What the feed held, taken (reused).
    taken: VecDeque<Message>,
    json: String,
}

impl ConsoleThread {
    /// A console serving `listeners` from `source`.
    pub fn new(
        listeners: Vec<StdListener>,
        source: Source,
        options: Arc<ws::Options>,
        max_output: usize,
    ) -> io::Result<ConsoleThread> {
        let poll = Poll::new()?;
        let mut registered = Vec::new();
        for (index, listener) in listeners.into_iter().enumerate() {
            listener.set_nonblocking(true)?;
            let mut listener = TcpListener::from_std(listener);
            poll.registry().register(&mut listener, Token(LISTENERS - index), Interest::READABLE)?;
            registered.push(listener);
        }
        let now = Instant::now();
        Ok(ConsoleThread {
            poll,
            listeners: registered,
            peers: Slab::new(),
            watchers: Watchers::new(now),
            waiting: Vec::new(),
            source,
            options,
            max_output,
            next_snapshot: now,
            events: SessionEvents::default(),
            taken: VecDeque::new(),
            json: String::new(),
        })
    }

    /// Serves until `stop` is set; then tells each watcher the server is going away.
    pub fn run(mut self, stop: &AtomicBool) -> io::Result<()> {
        let mut events = Events::with_capacity(64);
        while !stop.load(Ordering::Acquire) {
            let quiet = self.watchers.is_empty() && self.waiting.is_empty();
            match self.poll.poll(&mut events, Some(if quiet { STOP_CHECK } else { TICK })) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            }
            for event in &events {
                match LISTENERS - event.token().0 {
                    index if index < self.listeners.len() => self.accept_all(index),
                    _ => self.read(event.token().0),
                }
            }
            let now = Instant::now();
            self.send_from_source(now);
            let behind = self.behind();
            let peers = &mut self.peers;
            self.watchers.tick(now, |key| behind.contains(&key), |key, text| tell(peers, key, text));
            self.settle();
        }
        for (_, peer) in &mut self.peers {
            let mut close = Vec::new();
            if peer.session.notice(Notice::GoingAway, &mut close) {
                let _ = peer.stream.write(&close);
            }
        }
        Ok(())
    }

    /// Accepts every waiting connection of listener `index`.
    fn accept_all(&mut self, index: usize) {
        loop {
            let (mut stream, peer) = match gate(|| self.listeners[index].accept()) {
                Ok(Some(accepted)) => accepted,
                Ok(None) => return,
                Err(error) => {
                    warn!("console accept failed; error={error}");
                    return;
                }
            };
            let entry = self.peers.vacant_entry();
            let key = entry.key();
            if let Err(error) = self.poll.registry().register(&mut stream, Token(key), Interest::READABLE) {
                warn!("console register failed; error={error}");
                continue;
            }
            debug!("console connection; conn={key} peer={peer}");
            entry.insert(Peer {
                stream,
                session: WsSession::new(Arc::clone(&self.options)),
                input: Vec::new(),
                output: Vec::new(),
                closing: false,
                writable: false,
            });
        }
    }

    /// Reads what connection `key` sent, and hands it to its session: the request (the page,
    /// or the upgrade that makes it a watcher), then pongs and a close.
    fn read(&mut self, key: usize) {
        let Some(peer) = self.peers.get_mut(key) else { return };
        let mut buffer = [0; 4096];
        // Bounded: a watcher has little to say, and what it says beyond this waits for the
        // next wakeup.
        for _ in 0..16 {
            match gate(|| peer.stream.read(&mut buffer)) {
                Ok(Some(0)) | Err(_) => {
                    peer.closing = true;
                    peer.output.clear();
                    break;
                }
                Ok(Some(n)) => peer.input.extend_from_slice(&buffer[..n]),
                Ok(None) => break,
            }
        }
        self.events.clear();
        let used = peer.session.receive(&peer.input, MAX_FRAME, &mut self.events);
        peer.input.drain(..used);
        for event in self.events.events() {
            match event {
                Event::Ready => {
                    self.waiting.push(key);
                    if let Source::Loop(feed) = &self.source {
                        feed.want_snapshot();
                    }
                }
                Event::Send(range) => peer.output.extend_from_slice(self.events.bytes(range.clone())),
                Event::Close { .. } => peer.closing = true,
                // A watcher's messages mean nothing to the console.
                Event::Message { .. } => {}
            }
        }
    }

    /// Sends what the source has: the loop's queued messages, or a blocking model's
    /// snapshot when one is due (or a watcher waits for its first).
    fn send_from_source(&mut self, now: Instant) {
        match &self.source {
            Source::Loop(feed) => {
                let feed = Arc::clone(feed);
                self.watchers.missed(feed.take(&mut self.taken));
                while let Some(message) = self.taken.pop_front() {
                    match message {
                        Message::Snapshot(snapshot) => self.snapshot_to_all(&snapshot),
                        Message::Turn(turn) => {
                            let behind = self.behind();
                            let peers = &mut self.peers;
                            self.watchers.offer(
                                &turn,
                                |key| behind.contains(&key),
                                |key, text| tell(peers, key, text),
                            );
                        }
                    }
                }
            }
            Source::Blocking { model, clients } => {
                if !self.waiting.is_empty() || (!self.watchers.is_empty() && now >= self.next_snapshot) {
                    self.next_snapshot = now + SNAPSHOT_EVERY;
                    let snapshot = clients.snapshot(model, &mut self.json).to_string();
                    self.snapshot_to_all(&snapshot);
                }
            }
        }
    }

    /// A snapshot to every watcher; those waiting for their first one watch from now on.
    fn snapshot_to_all(&mut self, snapshot: &str) {
        for key in self.waiting.drain(..) {
            self.watchers.watch(key);
        }
        for key in self.watchers.keys() {
            tell(&mut self.peers, key, snapshot);
        }
    }

    /// The watchers behind in reading.
    fn behind(&self) -> Vec<usize> {
        self.watchers
            .keys()
            .filter(|&key| self.peers.get(key).is_none_or(|peer| peer.output.len() > BEHIND))
            .collect()
    }

    /// Writes what each connection has waiting, closes those done or too slow, and asks
    /// for writable only where output is left over.
    fn settle(&mut self) {
        let mut gone = Vec::new();
        for (key, peer) in &mut self.peers {
            if !peer.output.is_empty() {
                let stream = &mut peer.stream;
                match write_until_full(&peer.output, |bytes| stream.write(bytes)) {
                    Ok(written) => {
                        peer.output.drain(..written);
                    }
                    Err(_) => {
                        peer.output.clear();
                        peer.closing = true;
                    }
                }
            }
            if peer.output.len() > self.max_output {
                warn!("console watcher too slow, closing; conn={key} waiting={}", peer.output.len());
                gone.push(key);
                continue;
            }
            if peer.closing && peer.output.is_empty() {
                gone.push(key);
                continue;
            }
            let writable = !peer.output.is_empty();
            if writable != peer.writable {
                peer.writable = writable;
                let interest =
                    if writable { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
                let _ = self.poll.registry().reregister(&mut peer.stream, Token(key), interest);
            }
        }
        for key in gone {
            let mut peer = self.peers.remove(key);
            let _ = self.poll.registry().deregister(&mut peer.stream);
            self.watchers.unwatch(key);
            self.waiting.retain(|&waiting| waiting != key);
            debug!("console connection closed; conn={key}");
        }
        if let Source::Loop(feed) = &self.source {
            feed.set_watchers(self.watchers.len() + self.waiting.len());
        }
    }
}

/// A console message to watcher `key`, as one WebSocket text frame after what it has queued.
fn tell(peers: &mut Slab<Peer>, key: usize, text: &str) {
    let Some(peer) = peers.get_mut(key) else { return };
    if !peer.session.accepts_messages() {
        return;
    }
    let start = peer.output.len();
    ws::begin_frame(&mut peer.output);
    peer.output.extend_from_slice(text.as_bytes());
    ws::end_frame(&mut peer.output, start, false, peer.session.compression());
}
