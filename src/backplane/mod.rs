//! The backplane: rooms that span worker processes and hosts, over an existing pub/sub
//! engine (Redis or NATS), never a cluster protocol of our own.
//!
//! Each server process keeps two links to the engine, whatever its number of clients: one
//! publishes the lines its own members send, one subscribes to every room it serves. A line
//! is delivered to the local members first, straight from the sender's turn, and published
//! once; every other server receives it and delivers it to its own members. Each message
//! carries the publishing process's random origin id and a per-room sequence number
//! (`envelope.rs`): a server skips its own messages, so every member gets a line exactly
//! once, and a jump in a sequence tells a receiver how many lines it missed.
//!
//! The links are `mio` sources on the reactor's own `Poll`: no thread, no runtime, and the
//! reactor never waits for the engine. When the engine is down, local delivery goes on,
//! lines that cannot be published are counted as dropped (never queued without bound), and
//! the links retry with backoff; once the subscriber is back, it subscribes again.
//!
//! - `url.rs`: `--backplane URL`.
//! - `link.rs`: one connection's life: connect, up, lost, retry, ping.
//! - `resp.rs`, `nats.rs`: the two wire protocols, sans I/O.
//! - `envelope.rs`: origin and sequence around each line.

mod envelope;
pub(crate) mod link;
pub(crate) mod nats;
pub(crate) mod resp;
mod url;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use log::warn;
use mio::{Registry, Token};

use envelope::Envelope;
use link::{Change, Link, State};
pub use url::{BackplaneUrl, BackplaneUrls};

/// The default interval of `--backplane-ping`: how often an idle link is pinged, and how long
/// a connect, a handshake or a ping may take before the link counts as dead.
pub const DEFAULT_PING: Duration = Duration::from_secs(5);

/// Publishes waiting for the engine to take them, at most: past this the engine is not
/// keeping up, and further lines are counted as dropped rather than queued without bound.
const MAX_PENDING_PUBLISH: usize = 8 * 1024 * 1024;

/// Origins (publishing processes times rooms) whose sequence is tracked for gaps. A restarted
/// process is a new origin; past this many the map starts afresh (a gap may then go
/// uncounted), so its memory stays bounded whatever happens.
const MAX_TRACKED_ORIGINS: usize = 4096;

/// Addresses learnt from NATS servers' `connect_urls`, at most, beside those configured.
const MAX_LEARNT_URLS: usize = 32;

/// Counters of the backplane, added into [`crate::Stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Lines handed to the engine.
    pub published: u64,
    /// Lines that could not be published (link down, or the engine not keeping up).
    pub publish_dropped: u64,
    /// Lines received from other servers and delivered to local members.
    pub received: u64,
    /// Lines known to be missed: jumps in a publisher's sequence.
    pub gaps: u64,
    /// Times a link came back after being lost.
    pub reconnects: u64,
    /// Links up now (0 to 2).
    pub links_up: usize,
}

/// A room served over the backplane.
#[derive(Debug)]
struct Room {
    /// The engine's channel (Redis) or subject (NATS) for it.
    channel: String,
    /// The sequence number of the last line this process published in it.
    published: u64,
}

/// Which of the two links an event is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Sends this server's lines.
    Publisher,
    /// Receives every other server's lines.
    Subscriber,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Backplane {
    /// The engine's addresses: those configured, in order, then (NATS) those its servers
    /// announced. Each link walks them on its own (see `link.rs`).
    urls: Vec<BackplaneUrl>,
    /// Which engine: NATS, or Redis.
    nats: bool,
    /// Random per process: see `envelope.rs`.
    origin: u64,
    rooms: Vec<Room>,
    publisher: Link,
    subscriber: Link,
    /// The last sequence seen per (origin, room), for gap counting.
    last_seen: HashMap<(u64, usize), u64>,
    /// See [`DEFAULT_PING`].
    ping: Duration,
    /// Longest message accepted from the engine.
    max_message: usize,
    counters: Counters,
    /// Scratch space for one envelope.
    scratch: Vec<u8>,
}

impl Backplane {
    /// A backplane for `rooms` (their names) on `url`, its links on `tokens` (publisher,
    /// subscriber). Nothing connects until the first [`on_timers`](Self::on_timers).
    pub fn new(
        urls: BackplaneUrls,
        rooms: &[String],
        tokens: (Token, Token),
        ping: Duration,
        max_message: usize,
        now: Instant,
    ) -> Backplane {
        let origin = crate::sys::random_u64();
        let nats = matches!(urls.first(), BackplaneUrl::Nats(_));
        let separator = if nats { '.' } else { ':' };
        let rooms = rooms
            .iter()
            .map(|name| Room { channel: format!("evloop{separator}room{separator}{name}"), published: 0 })
            .collect();
        Backplane {
            urls: urls.addrs().to_vec(),
            nats,
            origin,
            rooms,
            publisher: Link::new("publisher", tokens.0, now, origin, nats),
            subscriber: Link::new("subscriber", tokens.1, now, origin.rotate_left(17), nats),
            last_seen: HashMap::new(),
            ping,
            max_message,
            counters: Counters::default(),
            scratch: Vec::new(),
        }
    }

    /// The counters now.
    pub fn counters(&self) -> Counters {
        Counters {
            links_up: usize::from(self.publisher.is_up()) + usize::from(self.subscriber.is_up()),
            ..self.counters
        }
    }

    /// Publishes `line` in room `room` (after the local members got it), or counts it as
    /// dropped. It goes out at the next [`flush`](Self::flush), with the turn's other lines.
    pub fn publish(&mut self, room: usize, line: &[u8]) {
        let Some(entry) = self.rooms.get_mut(room) else { return };
        // The sequence moves on even for a dropped line: receivers then see the gap.
        entry.published += 1;
        if !self.publisher.is_up() || self.publisher.pending() > MAX_PENDING_PUBLISH {
            self.counters.publish_dropped += 1;
            return;
        }
        self.scratch.clear();
        Envelope { origin: self.origin, sequence: entry.published, line }.encode(&mut self.scratch);
        let out = self.publisher.output();
        if self.nats {
            nats::encode_pub(out, &entry.channel, &self.scratch);
        } else {
            resp::encode_command(out, &[b"PUBLISH", entry.channel.as_bytes(), &self.scratch]);
        }
        self.counters.published += 1;
    }

    /// Writes what both links have pending (the turn's publishes), one write each.
    pub fn flush(&mut self, now: Instant) {
        let _ = self.publisher.flush(now);
        let _ = self.subscriber.flush(now);
    }

    /// A readiness event on `role`'s link: finishes a connect, reads, and hands every line
    /// from another server to `deliver(room, line)`. True if reading stopped at its budget
    /// (the reactor owes it another turn).
    pub fn on_ready(
        &mut self,
        role: Role,
        now: Instant,
        buffer: &mut [u8],
        deliver: impl FnMut(usize, &[u8]),
    ) -> bool {
        if self.link(role).on_event(now) == Change::Connected {
            self.handshake(role);
        }
        let owed = match self.link(role).read(buffer, now) {
            Ok(owed) => owed,
            Err(_) => return false,
        };
        self.take_input(role, now, deliver);
        let _ = self.link(role).flush(now);
        owed
    }

    /// Timers: retries, connect and handshake timeouts, pings.
    pub fn on_timers(&mut self, registry: &Registry, now: Instant) {
        for role in [Role::Publisher, Role::Subscriber] {
            let (ping, nats) = (self.ping, self.nats);
            let link = match role {
                Role::Publisher => &mut self.publisher,
                Role::Subscriber => &mut self.subscriber,
            };
            let _ = link.check_timers(ping, now, |out| {
                if nats {
                    out.extend_from_slice(b"PING\r\n");
                } else {
                    resp::encode_command(out, &[b"PING"]);
                }
            });
            if link.connect_if_due(&self.urls, registry, now) == Change::Connected {
                self.handshake(role);
            }
        }
    }

    /// When [`on_timers`](Self::on_timers) next has something to do.
    pub fn next_deadline(&self) -> Instant {
        self.publisher.next_deadline(self.ping).min(self.subscriber.next_deadline(self.ping))
    }

    fn link(&mut self, role: Role) -> &mut Link {
        match role {
            Role::Publisher => &mut self.publisher,
            Role::Subscriber => &mut self.subscriber,
        }
    }

    /// Just connected. A link is up only once the engine has answered, so a connection the
    /// kernel accepted for a stopped engine does not count: on Redis the publisher sends
    /// `PING` (up at its `PONG`) and the subscriber subscribes (up when the last room is
    /// confirmed); NATS speaks first (`INFO`, answered in [`take_input`](Self::take_input)).
    fn handshake(&mut self, role: Role) {
        if self.nats {
            return;
        }
        match role {
            Role::Publisher => resp::encode_command(self.publisher.output(), &[b"PING"]),
            Role::Subscriber => {
                let mut command: Vec<&[u8]> = vec![b"SUBSCRIBE"];
                command.extend(self.rooms.iter().map(|room| room.channel.as_bytes()));
                resp::encode_command(self.subscriber.output(), &command);
            }
        }
    }

    fn came_up(&mut self, role: Role) {
        let link = match role {
            Role::Publisher => &self.publisher,
            Role::Subscriber => &self.subscriber,
        };
        let url = link.url(&self.urls).clone();
        if self.link(role).mark_up(&url) {
            self.counters.reconnects += 1;
        }
    }

    /// Parses what `role`'s link has read, acting on each frame.
    fn take_input(&mut self, role: Role, now: Instant, mut deliver: impl FnMut(usize, &[u8])) {
        let mut input = std::mem::take(&mut self.link(role).input);
        let mut used = 0;
        let outcome = loop {
            let rest = &input[used..];
            let step = if self.nats {
                self.take_nats(role, rest, &mut deliver)
            } else {
                self.take_resp(role, rest, &mut deliver)
            };
            match step {
                Ok(Some(consumed)) => used += consumed,
                Ok(None) => break Ok(()),
                Err(why) => break Err(why),
            }
        };
        match outcome {
            Ok(()) => {
                input.drain(..used);
                // The link may have been reset meanwhile; keep the tail only if it was not.
                let link = self.link(role);
                if link.input.is_empty() && matches!(link.state(), State::Up | State::Handshake { .. }) {
                    link.input = input;
                }
            }
            Err(why) => {
                let _ = self.link(role).reset(&why, now);
            }
        }
    }

    /// One RESP frame from the front of `input`: bytes used, `None` if incomplete.
    fn take_resp(
        &mut self,
        role: Role,
        input: &[u8],
        deliver: &mut impl FnMut(usize, &[u8]),
    ) -> Result<Option<usize>, String> {
        let (frame, used) = match resp::parse(input, self.max_message) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return Ok(None),
            Err(error) => return Err(error.to_string()),
        };
        let handshaking = matches!(self.link(role).state(), State::Handshake { .. });
        match (role, &frame) {
            (_, resp::Frame::Error(message)) => {
                return Err(format!("the engine said: {}", String::from_utf8_lossy(message)));
            }
            (Role::Subscriber, resp::Frame::Array(Some(items))) if items.len() == 3 => {
                match (items[0].bytes(), items[1].bytes(), &items[2]) {
                    (Some(b"message"), Some(channel), payload) => {
                        if let Some(payload) = payload.bytes() {
                            self.receive(channel, payload, deliver);
                        }
                    }
                    (Some(b"subscribe"), _, resp::Frame::Integer(count))
                        if handshaking && *count == self.rooms.len() as i64 =>
                    {
                        self.came_up(role);
                    }
                    _ => {}
                }
            }
            (Role::Publisher, resp::Frame::Simple(b"PONG")) if handshaking => self.came_up(role),
            // PUBLISH counts, later PONGs: proof of life, already noted by the read.
            _ => {}
        }
        Ok(Some(used))
    }

    /// One NATS operation from the front of `input`: bytes used, `None` if incomplete.
    fn take_nats(
        &mut self,
        role: Role,
        input: &[u8],
        deliver: &mut impl FnMut(usize, &[u8]),
    ) -> Result<Option<usize>, String> {
        let (op, used) = match nats::parse(input, self.max_message) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return Ok(None),
            Err(error) => return Err(error.to_string()),
        };
        match op {
            nats::ServerOp::Info(info) => {
                self.learn_urls(info);
                if !matches!(self.link(role).state(), State::Handshake { .. }) {
                    return Ok(Some(used));
                }
                let out = self.link(role).output();
                nats::encode_connect(out, "evloop");
                if role == Role::Subscriber {
                    for (sid, room) in self.rooms.iter().enumerate() {
                        nats::encode_sub(self.subscriber.output(), &room.channel, sid + 1);
                    }
                }
                // Its PONG says the server took CONNECT (and the SUBs) and we are in.
                self.link(role).output().extend_from_slice(b"PING\r\n");
            }
            nats::ServerOp::Pong if matches!(self.link(role).state(), State::Handshake { .. }) => {
                self.came_up(role)
            }
            nats::ServerOp::Ping => self.link(role).output().extend_from_slice(b"PONG\r\n"),
            nats::ServerOp::Err(message) => {
                return Err(format!("the engine said: {}", String::from_utf8_lossy(message)));
            }
            nats::ServerOp::Msg { subject, payload, .. } if role == Role::Subscriber => {
                self.receive(subject, payload, deliver);
            }
            _ => {}
        }
        Ok(Some(used))
    }

    /// Adds the cluster's addresses a NATS server announced (`connect_urls`, in every `INFO`,
    /// again when the cluster changes) to those a link may move to, up to
    /// [`MAX_LEARNT_URLS`]. An address that does not parse is skipped.
    fn learn_urls(&mut self, info: &[u8]) {
        for text in nats::connect_urls(info, MAX_LEARNT_URLS) {
            let Ok(url) = format!("nats://{text}").parse::<BackplaneUrl>() else { continue };
            if !self.urls.contains(&url) && self.urls.len() < MAX_LEARNT_URLS {
                log::info!("backplane engine address learnt; engine={url}");
                self.urls.push(url);
            }
        }
    }

    /// A message on `channel`: delivered unless it is our own, with gaps counted.
    fn receive(&mut self, channel: &[u8], payload: &[u8], deliver: &mut impl FnMut(usize, &[u8])) {
        let Some(room) = self.rooms.iter().position(|room| room.channel.as_bytes() == channel) else {
            return;
        };
        let Some(envelope) = Envelope::decode(payload) else {
            warn!(
                "backplane message is not from evloop, dropped; channel={}",
                String::from_utf8_lossy(channel)
            );
            return;
        };
        if envelope.origin == self.origin {
            return;
        }
        if self.last_seen.len() >= MAX_TRACKED_ORIGINS
            && !self.last_seen.contains_key(&(envelope.origin, room))
        {
            self.last_seen.clear();
        }
        let key = (envelope.origin, room);
        if let Some(&last) = self.last_seen.get(&key) {
            if envelope.sequence <= last {
                // Seen already, or older than what was: delivering it would repeat or
                // reorder the room (an engine that replays, two routes during a move).
                log::debug!(
                    "backplane message out of sequence, dropped; last={last} got={}",
                    envelope.sequence
                );
                return;
            }
            self.counters.gaps += envelope.sequence - (last + 1);
        }
        self.last_seen.insert(key, envelope.sequence);
        self.counters.received += 1;
        deliver(room, envelope.line);
    }
}
