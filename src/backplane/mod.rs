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
//! - `questions.rs`: what a server asks the engine about a room (names, who is here, the
//!   last lines) and the answers, for rooms whose names and history live on the engine;
//!   `redis.rs` and `jetstream.rs` (with `json.rs`) keep them on each engine, sans I/O.

mod envelope;
mod jetstream;
mod json;
pub(crate) mod link;
pub(crate) mod nats;
mod questions;
mod redis;
pub(crate) mod resp;
mod url;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use log::warn;
use mio::{Registry, Token};

use envelope::Envelope;
use link::{Change, Link, State};
pub use questions::{Answer, LineId, News, Question};
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

/// How many `--backplane-ping` intervals a name lives on the engine unrefreshed: its server
/// refreshes it every interval, so a live server's names never expire, and a dead one's are
/// gone within this many intervals (plus one, until a live server's refresh finds them).
const NAME_LIFE_INTERVALS: u32 = 3;

/// A room served over the backplane.
#[derive(Debug)]
struct Room {
    /// The engine's channel (Redis) or subject (NATS) for it.
    channel: String,
    /// The sequence number of the last line this process published in it.
    published: u64,
    /// The lines it keeps on the engine for newcomers (0: none, and its lines are only
    /// published).
    history: usize,
    /// Whether its members have names on the engine (a chat room).
    chat: bool,
    /// Its keys on Redis (names, history).
    keys: redis::Keys,
    /// Its subjects on NATS (names, history, heartbeats).
    subjects: jetstream::RoomSubjects,
    /// The names this process's members hold in it, refreshed on the engine every interval
    /// (on NATS, each with the sequence of its message).
    ours: HashMap<String, u64>,
    /// Names being left for another (a claim with an old name, by its question's number):
    /// not refreshed until the claim is answered. A refresh sent while the claim is on its
    /// way would put the old name back after the claim freed it (Redis: the refresh adopts
    /// a free name; NATS: it makes a new message the release does not delete), and `/who`
    /// would list it for a while.
    renaming: HashMap<u64, String>,
}

impl Room {
    /// Whether `name` is refreshed: ours, and not being left for another.
    fn refreshes(&self, name: &str) -> bool {
        !self.renaming.values().any(|old| old == name)
    }

    /// This room, the `index`th, as the names on NATS need it (`jetstream.rs`).
    fn view(&mut self, index: usize) -> jetstream::Room<'_> {
        jetstream::Room {
            index,
            subjects: &self.subjects,
            history: self.history,
            ours: &mut self.ours,
            renaming: &self.renaming,
        }
    }
}

/// What a command sent on the publisher link awaits (Redis answers a connection's commands
/// in order, so the replies are matched to them by position).
#[derive(Debug)]
enum Awaited {
    /// Nothing the server acts on (a publish's count, a script loaded, a ping's answer).
    Nothing,
    /// The handshake's `PONG`: the link is up.
    Up,
    /// The answer to question `ask` about `room`.
    Answer { ask: u64, room: usize, what: Asked },
    /// A refresh of this process's names in `room` (and the names it found expired).
    Refresh { room: usize },
}

/// What a question asked, for reading its answer.
#[derive(Debug)]
enum Asked {
    /// A claim, freeing `old` if it succeeds.
    Claim {
        old: Option<String>,
    },
    Who,
    History,
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
    /// What each command on the publisher link awaits, in order, since its last loss.
    awaited: VecDeque<Awaited>,
    /// The publisher's losses when `awaited` was started: a loss since fails them all.
    awaited_since: u64,
    /// The number of the next question.
    next_ask: u64,
    /// Answers and expired names not handed to the reactor yet.
    news: Vec<News>,
    /// When this process's names are next refreshed on the engine.
    refresh_at: Instant,
    /// Names and history on NATS.
    jetstream: jetstream::JetStream,
}

impl Backplane {
    /// A backplane for `rooms` (their names) on `url`, its links on `tokens` (publisher,
    /// subscriber). Nothing connects until the first [`on_timers`](Self::on_timers).
    ///
    /// Each room is a name and, for a room whose members have names and which keeps lines
    /// for newcomers (chat), how many lines it keeps on the engine.
    pub fn new(
        urls: BackplaneUrls,
        rooms: &[(String, Option<usize>)],
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
            .map(|(name, history)| Room {
                channel: format!("evloop{separator}room{separator}{name}"),
                published: 0,
                history: history.unwrap_or(0),
                chat: history.is_some(),
                keys: redis::Keys::of(name),
                subjects: jetstream::RoomSubjects::of(name),
                ours: HashMap::new(),
                renaming: HashMap::new(),
            })
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
            awaited: VecDeque::new(),
            awaited_since: 0,
            next_ask: 0,
            news: Vec::new(),
            refresh_at: now,
            jetstream: jetstream::JetStream::new(origin, now),
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
    /// dropped; `kept`: a line the room keeps for newcomers, stored on the engine with it (a
    /// notice is not). It goes out at the next [`flush`](Self::flush), with the turn's other
    /// lines. Returns the line's identity.
    pub fn publish(&mut self, room: usize, line: &[u8], kept: bool) -> LineId {
        let Some(entry) = self.rooms.get_mut(room) else {
            return LineId { origin: self.origin, sequence: 0 };
        };
        // The sequence moves on even for a dropped line: receivers then see the gap.
        entry.published += 1;
        let id = LineId { origin: self.origin, sequence: entry.published };
        if !self.publisher.is_up() || self.publisher.pending() > MAX_PENDING_PUBLISH {
            self.counters.publish_dropped += 1;
            return id;
        }
        self.scratch.clear();
        Envelope { origin: self.origin, sequence: entry.published, line }.encode(&mut self.scratch);
        let out = self.publisher.output();
        if self.nats {
            // A line kept for newcomers goes where the stream stores it; a notice does not.
            let subject = if kept && entry.history > 0 { &entry.subjects.history } else { &entry.channel };
            nats::encode_pub(out, subject, &self.scratch);
        } else {
            if kept && entry.history > 0 {
                redis::encode_line(out, &entry.keys, &entry.channel, &self.scratch, entry.history);
            } else {
                resp::encode_command(out, &[b"PUBLISH", entry.channel.as_bytes(), &self.scratch]);
            }
            self.awaited.push_back(Awaited::Nothing);
        }
        self.counters.published += 1;
        id
    }

    /// Asks the engine `question` about room `room`: the question's number, which its answer
    /// comes back with ([`take_news`](Self::take_news)), or `None` if it cannot be asked now
    /// (the link is down, or the engine keeps no names and lines).
    pub fn ask(&mut self, room: usize, question: Question<'_>) -> Option<u64> {
        if !self.publisher.is_up() || room >= self.rooms.len() {
            return None;
        }
        let asked = self.ask_engine(room, question);
        if let (Some(ask), Question::Claim { old: Some(old), .. }) = (asked, question) {
            self.rooms[room].renaming.insert(ask, old.to_string());
        }
        asked
    }

    /// [`ask`](Self::ask), on the engine at hand.
    fn ask_engine(&mut self, room: usize, question: Question<'_>) -> Option<u64> {
        if self.nats {
            self.next_ask += 1;
            let view = self.rooms[room].view(room);
            let out = self.publisher.output();
            return self.jetstream.ask(out, view, question, self.next_ask, Instant::now());
        }
        self.settle_awaited();
        let (entry, life) = (&self.rooms[room], self.name_life_ms());
        let out = self.publisher.output();
        let what = match question {
            Question::Claim { wanted, old } => {
                redis::encode_claim(out, &entry.keys, (wanted, old), self.origin, life);
                Asked::Claim { old: old.map(String::from) }
            }
            Question::Who => {
                redis::encode_who(out, &entry.keys);
                Asked::Who
            }
            Question::History => {
                redis::encode_history(out, &entry.keys, entry.history);
                Asked::History
            }
        };
        self.next_ask += 1;
        self.awaited.push_back(Awaited::Answer { ask: self.next_ask, room, what });
        Some(self.next_ask)
    }

    /// A member of this process left room `room`: its name `name` is free on the engine.
    pub fn release(&mut self, room: usize, name: &str) {
        let Some(entry) = self.rooms.get_mut(room) else { return };
        if self.nats && self.publisher.is_up() {
            let mut view = entry.view(room);
            let out = self.publisher.output();
            self.jetstream.release(out, view.reborrow(), name, Instant::now());
            // The other servers hear at once that it left here (see `jetstream.rs`).
            self.jetstream.beat(out, &view);
            return;
        }
        entry.ours.remove(name);
        if self.nats || !self.publisher.is_up() {
            return;
        }
        self.settle_awaited();
        redis::encode_release(self.publisher.output(), &self.rooms[room].keys, self.origin, name);
        self.awaited.push_back(Awaited::Nothing);
    }

    /// A member of this process took `name` in room `room` while the engine was out of
    /// reach (instead of `old`): the engine hears of it at the next refresh.
    pub fn adopt(&mut self, room: usize, name: &str, old: Option<&str>) {
        let Some(entry) = self.rooms.get_mut(room) else { return };
        if let Some(old) = old {
            entry.ours.remove(old);
        }
        entry.ours.insert(name.to_string(), 0);
    }

    /// How far this server has got in `origin`'s lines of room `room`: the sequence of the
    /// last one delivered here (its own: the last published). A newcomer's history read up
    /// to a line is caught up with once the live lines have reached it too.
    pub fn reached(&self, room: usize, origin: u64) -> u64 {
        if origin == self.origin {
            return self.rooms.get(room).map_or(0, |room| room.published);
        }
        self.last_seen.get(&(origin, room)).copied().unwrap_or(0)
    }

    /// Answers and expired names that came since the last call, in order.
    pub fn take_news(&mut self) -> Vec<News> {
        self.settle_awaited();
        for news in &self.news {
            if let News::Answer { ask, .. } = news {
                for room in &mut self.rooms {
                    room.renaming.remove(ask);
                }
            }
        }
        std::mem::take(&mut self.news)
    }

    /// How long a name lives on the engine unrefreshed, in ms.
    fn name_life_ms(&self) -> u64 {
        (self.ping * NAME_LIFE_INTERVALS).as_millis() as u64
    }

    /// If the publisher link was lost since the commands awaiting replies were sent, their
    /// replies are not coming: each question is answered [`Answer::Failed`].
    fn settle_awaited(&mut self) {
        if self.publisher.losses() == self.awaited_since {
            return;
        }
        self.awaited_since = self.publisher.losses();
        for awaited in self.awaited.drain(..) {
            if let Awaited::Answer { ask, .. } = awaited {
                self.news.push(News::Answer { ask, answer: Answer::Failed });
            }
        }
        self.jetstream.lost(&mut self.news);
    }

    /// Refreshes this process's names on the engine, every `--backplane-ping`.
    fn refresh_names(&mut self, now: Instant) {
        if now < self.refresh_at || self.nats || !self.publisher.is_up() {
            return;
        }
        self.refresh_at = now + self.ping;
        self.settle_awaited();
        let life = self.name_life_ms();
        for (index, room) in self.rooms.iter().enumerate().filter(|(_, room)| !room.ours.is_empty()) {
            let names = room.ours.keys().filter(|name| room.refreshes(name));
            redis::encode_refresh(self.publisher.output(), &room.keys, self.origin, life, names);
            self.awaited.push_back(Awaited::Refresh { room: index });
        }
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
        deliver: impl FnMut(usize, LineId, &[u8]),
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

    /// Timers: retries, connect and handshake timeouts, pings, the refresh of this
    /// process's names.
    pub fn on_timers(&mut self, registry: &Registry, now: Instant) {
        for role in [Role::Publisher, Role::Subscriber] {
            let (ping, nats) = (self.ping, self.nats);
            let link = match role {
                Role::Publisher => &mut self.publisher,
                Role::Subscriber => &mut self.subscriber,
            };
            let mut pinged = false;
            let losses = link.losses();
            let _ = link.check_timers(ping, now, |out| {
                pinged = true;
                if nats {
                    out.extend_from_slice(b"PING\r\n");
                } else {
                    resp::encode_command(out, &[b"PING"]);
                }
            });
            let connected = link.connect_if_due(&self.urls, registry, now) == Change::Connected;
            if pinged && role == Role::Publisher && !nats && losses == self.awaited_since {
                self.awaited.push_back(Awaited::Nothing);
            }
            if connected {
                self.handshake(role);
            }
        }
        self.refresh_names(now);
        if self.nats && self.publisher.is_up() {
            let times = (self.ping, self.ping * NAME_LIFE_INTERVALS, self.subscriber.is_up());
            let mut views = views(&mut self.rooms);
            let out = self.publisher.output();
            self.jetstream.on_timers(out, &mut views, times, &mut self.news, now);
        }
        let _ = self.publisher.flush(now);
    }

    /// When [`on_timers`](Self::on_timers) next has something to do.
    pub fn next_deadline(&self) -> Instant {
        let links = self.publisher.next_deadline(self.ping).min(self.subscriber.next_deadline(self.ping));
        if !self.publisher.is_up() {
            return links;
        }
        if self.nats && self.rooms.iter().any(|room| room.chat) {
            return links.min(self.jetstream.next_deadline(self.ping));
        }
        match self.rooms.iter().any(|room| !room.ours.is_empty()) {
            true => links.min(self.refresh_at),
            false => links,
        }
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
            Role::Publisher => {
                // Nothing awaited from before this connection is coming.
                self.settle_awaited();
                redis::load_scripts(self.publisher.output());
                resp::encode_command(self.publisher.output(), &[b"PING"]);
                self.awaited.extend((0..redis::SCRIPT_COUNT).map(|_| Awaited::Nothing));
                self.awaited.push_back(Awaited::Up);
            }
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
        if role == Role::Publisher {
            // Names taken while the engine was away, or refreshed before it was lost: now.
            self.refresh_at = Instant::now();
            self.jetstream.beat_now(Instant::now());
        }
        // Either link back: the others get a life from now to be heard (the subscriber could
        // not hear them; the publisher, whose timers judge them, was not running them).
        self.jetstream.relisten(Instant::now());
    }

    /// Parses what `role`'s link has read, acting on each frame.
    fn take_input(&mut self, role: Role, now: Instant, mut deliver: impl FnMut(usize, LineId, &[u8])) {
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
        deliver: &mut impl FnMut(usize, LineId, &[u8]),
    ) -> Result<Option<usize>, String> {
        let (frame, used) = match resp::parse(input, self.max_message) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return Ok(None),
            Err(error) => return Err(error.to_string()),
        };
        let handshaking = matches!(self.link(role).state(), State::Handshake { .. });
        match (role, &frame) {
            (Role::Publisher, _) => self.reply(&frame)?,
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
            // Later PONGs: proof of life, already noted by the read.
            _ => {}
        }
        Ok(Some(used))
    }

    /// A reply on the publisher link, to the command it answers (the first awaiting one).
    fn reply(&mut self, frame: &resp::Frame<'_>) -> Result<(), String> {
        self.settle_awaited();
        let awaited = self.awaited.pop_front().unwrap_or(Awaited::Nothing);
        if let resp::Frame::Error(message) = frame {
            let message = String::from_utf8_lossy(message);
            if let Awaited::Answer { ask, .. } = awaited {
                warn!("backplane question refused; error=\"{message}\"");
                self.news.push(News::Answer { ask, answer: Answer::Failed });
                // A script the engine forgot (SCRIPT FLUSH): loaded again on a new connection.
                if !message.starts_with("NOSCRIPT") {
                    return Ok(());
                }
            }
            return Err(format!("the engine said: {message}"));
        }
        let malformed = || "a reply that is not what was asked for".to_string();
        match awaited {
            Awaited::Nothing => {}
            Awaited::Up => self.came_up(Role::Publisher),
            Awaited::Refresh { room } => {
                let gone = redis::expired(frame).ok_or_else(malformed)?;
                self.expired(room, gone);
            }
            Awaited::Answer { ask, room, what } => {
                let answer = match what {
                    Asked::Claim { old } => {
                        let (name, taken, gone) = redis::claimed(frame).ok_or_else(malformed)?;
                        self.expired(room, gone);
                        if !taken {
                            let ours = &mut self.rooms[room].ours;
                            if let Some(old) = old {
                                ours.remove(&old);
                            }
                            ours.insert(name.clone(), 0);
                        }
                        Answer::Claimed { name, taken }
                    }
                    Asked::Who => {
                        let (names, gone) = redis::present(frame).ok_or_else(malformed)?;
                        self.expired(room, gone);
                        Answer::Present(names)
                    }
                    Asked::History => Answer::History(redis::history(frame).ok_or_else(malformed)?),
                };
                self.news.push(News::Answer { ask, answer });
            }
        }
        Ok(())
    }

    /// Names this process pruned as expired in `room`: their servers are gone, and this one
    /// tells the room (a name of its own among them was only late: it takes it back at its
    /// next refresh, and says nothing).
    fn expired(&mut self, room: usize, mut gone: Vec<String>) {
        let ours = &self.rooms[room].ours;
        gone.retain(|name| !ours.contains_key(name));
        if !gone.is_empty() {
            log::info!(
                "names expired on the engine; room={} names={}",
                self.rooms[room].channel,
                gone.join(",")
            );
            self.news.push(News::Gone { room, names: gone, tell_others: true });
        }
    }

    /// One NATS operation from the front of `input`: bytes used, `None` if incomplete.
    fn take_nats(
        &mut self,
        role: Role,
        input: &[u8],
        deliver: &mut impl FnMut(usize, LineId, &[u8]),
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
                match role {
                    Role::Publisher => {
                        let history = self.rooms.iter().map(|room| room.history).max().unwrap_or(0);
                        let names = self.rooms.iter().any(|room| room.chat);
                        let life = self.ping * NAME_LIFE_INTERVALS;
                        // What waited on the link lost is answered first (`start` forgets it).
                        self.settle_awaited();
                        let out = self.publisher.output();
                        self.jetstream.start(out, history, names, life, Instant::now());
                    }
                    Role::Subscriber => {
                        let out = self.subscriber.output();
                        for (index, room) in self.rooms.iter().enumerate() {
                            nats::encode_sub(out, &room.channel, format_args!("r{index}"));
                            if room.chat && room.history > 0 {
                                nats::encode_sub(out, &room.subjects.history, format_args!("k{index}"));
                            }
                            if room.chat {
                                nats::encode_sub(out, &room.subjects.presence, format_args!("p{index}"));
                            }
                        }
                        self.jetstream.subscribe(out);
                    }
                }
                // Its PONG says the server took CONNECT (and the SUBs) and we are in.
                self.link(role).output().extend_from_slice(b"PING\r\n");
            }
            // The publisher is up once the streams it asked for are answered too.
            nats::ServerOp::Pong
                if matches!(self.link(role).state(), State::Handshake { .. })
                    && (role == Role::Subscriber || self.jetstream.ponged()) =>
            {
                self.came_up(role)
            }
            nats::ServerOp::Ping => self.link(role).output().extend_from_slice(b"PONG\r\n"),
            nats::ServerOp::Err(message) => {
                return Err(format!("the engine said: {}", String::from_utf8_lossy(message)));
            }
            nats::ServerOp::Msg { subject, status, payload, .. } if role == Role::Publisher => {
                if let Some(number) = self.jetstream.answer_number(subject) {
                    let mut views = views(&mut self.rooms);
                    let out = self.publisher.output();
                    let request = (number, status, payload);
                    if self.jetstream.answered(out, &mut views, request, &mut self.news) {
                        self.came_up(Role::Publisher);
                    }
                }
            }
            nats::ServerOp::Msg { sid, reply, payload, .. } => {
                let room =
                    std::str::from_utf8(&sid[1.min(sid.len())..]).ok().and_then(|index| index.parse().ok());
                match (sid.first(), room) {
                    (Some(b'r' | b'k'), Some(room)) => self.receive_in(room, payload, deliver),
                    (Some(b'p'), Some(room)) => self.jetstream.heard(room, payload, Instant::now()),
                    _ if sid == jetstream::PUSHED_SID.as_bytes() => {
                        let out = self.publisher.output();
                        let now = Instant::now();
                        self.jetstream.pushed(out, reply.unwrap_or_default(), payload, &mut self.news, now);
                    }
                    _ => {}
                }
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
    fn receive(&mut self, channel: &[u8], payload: &[u8], deliver: &mut impl FnMut(usize, LineId, &[u8])) {
        if let Some(room) = self.rooms.iter().position(|room| room.channel.as_bytes() == channel) {
            self.receive_in(room, payload, deliver);
        }
    }

    /// A message in room `room`: delivered unless it is our own, with gaps counted.
    fn receive_in(&mut self, room: usize, payload: &[u8], deliver: &mut impl FnMut(usize, LineId, &[u8])) {
        if room >= self.rooms.len() {
            return;
        }
        let Some(envelope) = Envelope::decode(payload) else {
            warn!("backplane message is not from evloop, dropped; room={}", self.rooms[room].channel);
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
        deliver(room, LineId { origin: envelope.origin, sequence: envelope.sequence }, envelope.line);
    }
}

/// The rooms as the names on NATS need them (`jetstream.rs`).
fn views(rooms: &mut [Room]) -> Vec<jetstream::Room<'_>> {
    rooms.iter_mut().enumerate().map(|(index, room)| room.view(index)).collect()
}
