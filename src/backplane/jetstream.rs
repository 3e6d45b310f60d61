//! Names and history on NATS, sans I/O: JetStream's API (requests on `$JS.API.*` subjects
//! with JSON bodies, answered on an inbox of ours) for rooms whose names and lines live on the
//! engine, and heartbeats for who is alive. Needs a NATS server with JetStream (`-js`, 2.2 or
//! later); without it (the streams cannot be made) names and history are each server's own,
//! as while the engine is out of reach.
//!
//! - **History**: the stream `EVLOOP_HISTORY` takes `evloop.history.>`, at most N messages
//!   per subject (`max_msgs_per_subject`, `--history`). A room's lines (not its notices, which
//!   go on `evloop.room.R`) are published once, with core NATS, on `evloop.history.R`: the
//!   stream stores the very message the subscribers get, so what is stored and what is
//!   delivered cannot diverge in order (each publisher's lines in its order; no order across
//!   publishers, as for the live lines). A newcomer's history is read with an ephemeral push
//!   consumer (deliver all, no acks) on the room's subject: the answer to its creation says
//!   how many stored lines it pushes, each carries its envelope (origin and sequence), and
//!   the consumer is deleted once they have come. They are pushed to the subscriber link's
//!   inbox: the publisher link, with echo off, would not be given back its own lines.
//! - **Names**: the stream `EVLOOP_NAMES` takes `evloop.names.>`, one message per subject
//!   (`evloop.names.R.NAME`, holding its process's origin), each living a name's life
//!   (`max_age`: three `--backplane-ping` intervals). A claim is a publish expecting the
//!   subject to be empty (`Nats-Expected-Last-Subject-Sequence: 0`): create if absent,
//!   atomically on the engine. Its server publishes it again every interval expecting its own
//!   sequence (a refresh), and deletes its message when the member leaves. A refresh that
//!   finds the message gone (the engine restarted: the stream is in its memory) claims the
//!   name again as new; only if someone took it meanwhile is it lost. `/who` lists the
//!   stream's subjects under the room (`STREAM.INFO` with a subjects filter).
//! - **Guest numbers**: the sequence JetStream gives a publish to `EVLOOP_GUESTS`.
//! - **Who left without a word**: every interval, and at once when one of its members
//!   claims a name or leaves, each server publishes its members' names in each chat room on
//!   `evloop.presence.R` (a heartbeat). A server not heard of for a name's life (three
//!   intervals) is gone, and every server tells its own members that the members named in its
//!   last heartbeat left: at most four intervals after it died (its last heartbeat at most
//!   one interval before, then a life, then up to an interval until the next timer), 20 s by
//!   default. The heartbeat on a claim is what makes a name claimed just before its server
//!   died known. While a server's subscriber link is down it hears no one and finds no one
//!   gone; when either link is back, each server it knew gets a life from then to be heard
//!   again; and timers that ran late (this process stalled) judge no one until they have
//!   run once more, after the input that waited meanwhile has been read.

use std::collections::HashMap;
#[cfg(test)]
use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::envelope::Envelope;
use super::json;
use super::link::LAST_RETRY;
use super::nats;
use super::questions::{Answer, LineId, News, Question};

const HISTORY: &str = "EVLOOP_HISTORY";
const NAMES: &str = "EVLOOP_NAMES";
const GUESTS: &str = "EVLOOP_GUESTS";

/// JetStream's error code for a publish whose expected last sequence does not hold: the
/// name is someone's.
const WRONG_LAST_SEQUENCE: u64 = 10071;
/// JetStream's error code for a stream made already, with another configuration (another
/// server's `--history` or `--backplane-ping`): the one there is used.
const STREAM_IN_USE: u64 = 10058;

/// The sid of the subscriber link's inbox, where history is pushed.
pub const PUSHED_SID: &str = "h";

/// A room as the names and lines on NATS need it.
#[derive(Debug)]
pub struct RoomSubjects {
    /// `evloop.history.R`: its lines, stored.
    pub history: String,
    /// `evloop.names.R`: the prefix of its names' subjects.
    names: String,
    /// `evloop.guests.R`.
    guests: String,
    /// `evloop.presence.R`: its servers' heartbeats.
    pub presence: String,
}

impl RoomSubjects {
    /// The subjects of room `name`.
    pub fn of(name: &str) -> RoomSubjects {
        RoomSubjects {
            history: format!("evloop.history.{name}"),
            names: format!("evloop.names.{name}"),
            guests: format!("evloop.guests.{name}"),
            presence: format!("evloop.presence.{name}"),
        }
    }
}

/// What this process knows of a room, for its names on NATS.
#[derive(Debug)]
pub struct Room<'r> {
    /// Its index.
    pub index: usize,
    /// Its subjects.
    pub subjects: &'r RoomSubjects,
    /// The lines it keeps.
    pub history: usize,
    /// This process's members' names in it, each with the sequence of its message.
    pub ours: &'r mut HashMap<String, u64>,
    /// Names being left for another, by the number of the claim that leaves them: not
    /// refreshed meanwhile (see `Room::renaming` in `mod.rs`).
    pub renaming: &'r HashMap<u64, String>,
}

/// A request waiting for its answer.
#[derive(Debug)]
enum Waiting {
    /// A stream made when the link connected.
    Stream(&'static str),
    /// A guest number, for question `ask`.
    Guest { ask: u64, room: usize, old: Option<String> },
    /// A name claimed, for question `ask`.
    Claim { ask: u64, room: usize, name: String, old: Option<String>, guest: bool },
    /// The room's names.
    Who { ask: u64, room: usize },
    /// A history consumer made.
    History { ask: u64, room: usize, keep: usize },
    /// One of this process's names published again (`again`: as new, its message having
    /// gone from the engine).
    Refresh { room: usize, name: String, again: bool },
    /// A name's message deleted (`name`, left). For a rename, `then` is the question that
    /// claimed the new name, and that name: it is answered once the old one is deleted, as
    /// JetStream's API may serve a later request first (a `/who` asked after the rename
    /// listed the old name as well, on a loaded machine).
    Deleted { name: String, then: Option<(u64, String)> },
    /// An answer nothing depends on (a consumer deleted).
    Nothing,
}

/// A newcomer's history being pushed, by its consumer's name.
#[derive(Debug, Default)]
struct Read {
    /// The question, once the consumer's creation is answered (its lines may come first).
    ask: Option<(u64, usize, usize)>,
    /// How many lines it pushes.
    expected: Option<u64>,
    lines: Vec<(LineId, Vec<u8>)>,
    /// Answered: later pushes (new lines, before the consumer is deleted) are dropped.
    done: bool,
    started: Option<Instant>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct JetStream {
    /// This process, as its names' messages and heartbeats name it.
    origin: u64,
    /// `_INBOX.evloop.<origin>`: answers come to `<inbox>.<n>` (publisher link), history to
    /// `<inbox>.h` (subscriber link).
    inbox: String,
    next: u64,
    waiting: HashMap<u64, (Waiting, Instant)>,
    reads: HashMap<String, Read>,
    /// Streams asked for and not answered yet; the link is up once they are.
    streams: usize,
    /// The handshake's `PONG` came (the link is up once the streams are answered too).
    pong: bool,
    /// Whether JetStream answered: without it, nothing is asked.
    available: bool,
    /// The last heartbeat of each other process, per room: its names, and when.
    heard: HashMap<(usize, u64), (Vec<String>, Instant)>,
    /// When the next heartbeat and refresh go out.
    beat_at: Instant,
    /// When the timers last ran: they run at least every interval, so a longer gap says this
    /// process was stalled (starved of CPU, stopped), and the heartbeats that came meanwhile
    /// may still be unread.
    timers_ran: Option<Instant>,
}

impl JetStream {
    /// For process `origin`.
    pub fn new(origin: u64, now: Instant) -> JetStream {
        JetStream {
            origin,
            inbox: format!("_INBOX.evloop.{origin:016x}"),
            next: 0,
            waiting: HashMap::new(),
            reads: HashMap::new(),
            streams: 0,
            pong: false,
            available: false,
            heard: HashMap::new(),
            beat_at: now,
            timers_ran: None,
        }
    }

    /// The publisher link connected (after `CONNECT`): subscribes to its inbox and makes the
    /// streams the rooms need (if another server made them already, with its own settings,
    /// those are used). Whatever was waiting on the link before is not coming.
    pub fn start(&mut self, out: &mut Vec<u8>, history: usize, names: bool, life: Duration, now: Instant) {
        self.waiting.clear();
        self.reads.clear();
        (self.streams, self.pong, self.available) = (0, false, false);
        nats::encode_sub(out, &format!("{}.*", self.inbox), "a");
        let life_ns = life.as_nanos();
        let mut streams: Vec<(&'static str, String)> = Vec::new();
        if history > 0 {
            streams.push((
                HISTORY,
                format!(
                    r#"{{"name":"{HISTORY}","subjects":["evloop.history.>"],"max_msgs_per_subject":{history},"storage":"file","discard":"old"}}"#
                ),
            ));
        }
        if names {
            streams.push((
                NAMES,
                format!(
                    r#"{{"name":"{NAMES}","subjects":["evloop.names.>"],"max_msgs_per_subject":1,"max_age":{life_ns},"storage":"memory","discard":"old"}}"#
                ),
            ));
            streams.push((
                GUESTS,
                format!(
                    r#"{{"name":"{GUESTS}","subjects":["evloop.guests.>"],"max_msgs_per_subject":1,"storage":"memory","discard":"old"}}"#
                ),
            ));
        }
        for (name, config) in streams {
            self.request(
                out,
                &format!("$JS.API.STREAM.CREATE.{name}"),
                config.as_bytes(),
                Waiting::Stream(name),
                now,
            );
            self.streams += 1;
        }
    }

    /// The publisher link was lost: the answers it awaited are not coming. Each question is
    /// answered [`Answer::Failed`] (its asker falls back on what its server knows; left
    /// unanswered, it would wait for ever, its later lines with it), and history reads are
    /// forgotten.
    pub fn lost(&mut self, news: &mut Vec<News>) {
        for (_, (waiting, _)) in self.waiting.drain() {
            match waiting {
                Waiting::Guest { ask, .. }
                | Waiting::Claim { ask, .. }
                | Waiting::Who { ask, .. }
                | Waiting::History { ask, .. } => news.push(News::Answer { ask, answer: Answer::Failed }),
                // The new name is held: only the old one's deletion is unconfirmed.
                Waiting::Deleted { then: Some((ask, name)), .. } => {
                    news.push(News::Answer { ask, answer: Answer::Claimed { name, taken: false } })
                }
                Waiting::Stream(_) | Waiting::Refresh { .. } | Waiting::Deleted { .. } | Waiting::Nothing => {
                }
            }
        }
        for (_, read) in self.reads.drain() {
            if let (Some((ask, _, _)), false) = (read.ask, read.done) {
                news.push(News::Answer { ask, answer: Answer::Failed });
            }
        }
    }

    /// The subscriber link connected: subscribes to the inbox history is pushed to.
    pub fn subscribe(&self, out: &mut Vec<u8>) {
        nats::encode_sub(out, &format!("{}.h", self.inbox), PUSHED_SID);
    }

    /// The publisher's handshake `PONG`: true if the link is up now (its streams answered).
    pub fn ponged(&mut self) -> bool {
        self.pong = true;
        self.streams == 0
    }

    /// Whether a subject is an answer to one of our requests: its number.
    pub fn answer_number(&self, subject: &[u8]) -> Option<u64> {
        let rest = subject.strip_prefix(self.inbox.as_bytes())?.strip_prefix(b".")?;
        std::str::from_utf8(rest).ok()?.parse().ok()
    }

    /// Sends a request; its answer comes to `<inbox>.<n>`.
    fn request(
        &mut self,
        out: &mut Vec<u8>,
        subject: &str,
        body: &[u8],
        waiting: Waiting,
        now: Instant,
    ) -> u64 {
        self.next += 1;
        nats::encode_request(out, subject, &format!("{}.{}", self.inbox, self.next), body);
        self.waiting.insert(self.next, (waiting, now));
        self.next
    }

    /// Publishes `name` in `room` expecting its subject's last sequence to be `expected` (0:
    /// empty), held by this process.
    fn publish_name(
        &mut self,
        out: &mut Vec<u8>,
        (room, name, expected): (&Room<'_>, &str, u64),
        waiting: Waiting,
        now: Instant,
    ) {
        self.next += 1;
        let reply = format!("{}.{}", self.inbox, self.next);
        let expected = expected.to_string();
        let headers = [("Nats-Expected-Last-Subject-Sequence", expected.as_str())];
        let payload = format!("{:016x}", self.origin);
        nats::encode_hrequest(
            out,
            &format!("{}.{name}", room.subjects.names),
            &reply,
            &headers,
            payload.as_bytes(),
        );
        self.waiting.insert(self.next, (waiting, now));
    }

    /// Asks `question` about `room`: the question's number, or `None` if JetStream is not
    /// there.
    pub fn ask(
        &mut self,
        out: &mut Vec<u8>,
        room: Room<'_>,
        question: Question<'_>,
        ask: u64,
        now: Instant,
    ) -> Option<u64> {
        if !self.available {
            return None;
        }
        let index = room.index;
        match question {
            Question::Claim { wanted: Some(name), old } => {
                let waiting = Waiting::Claim {
                    ask,
                    room: index,
                    name: name.to_string(),
                    old: old.map(String::from),
                    guest: false,
                };
                self.publish_name(out, (&room, name, 0), waiting, now);
            }
            Question::Claim { wanted: None, old } => {
                let waiting = Waiting::Guest { ask, room: index, old: old.map(String::from) };
                self.request(out, &room.subjects.guests, b"", waiting, now);
            }
            Question::Who => {
                let body = format!(r#"{{"subjects_filter":"{}.*"}}"#, room.subjects.names);
                self.request(
                    out,
                    &format!("$JS.API.STREAM.INFO.{NAMES}"),
                    body.as_bytes(),
                    Waiting::Who { ask, room: index },
                    now,
                );
            }
            Question::History => {
                let mut body = String::new();
                let _ = write!(
                    body,
                    r#"{{"stream_name":"{HISTORY}","config":{{"deliver_subject":"{}.h","deliver_policy":"all","ack_policy":"none","filter_subject":"{}","replay_policy":"instant","mem_storage":true,"inactive_threshold":{}}}}}"#,
                    self.inbox,
                    room.subjects.history,
                    Duration::from_secs(30).as_nanos()
                );
                let waiting = Waiting::History { ask, room: index, keep: room.history };
                self.request(
                    out,
                    &format!("$JS.API.CONSUMER.CREATE.{HISTORY}"),
                    body.as_bytes(),
                    waiting,
                    now,
                );
            }
        }
        Some(ask)
    }

    /// A member of this process left `room`: its name's message is deleted (if it holds one).
    pub fn release(&mut self, out: &mut Vec<u8>, room: Room<'_>, name: &str, now: Instant) {
        let _ = self.release_then(out, room, name, None, now);
    }

    /// [`release`](Self::release), then (for a rename) question `then.0` answered with the
    /// new name `then.1` once the old one is deleted. Gives `then` back if nothing is to be
    /// deleted (its answer is now).
    fn release_then(
        &mut self,
        out: &mut Vec<u8>,
        room: Room<'_>,
        name: &str,
        then: Option<(u64, String)>,
        now: Instant,
    ) -> Option<(u64, String)> {
        let Some(sequence) = room.ours.remove(name) else { return then };
        if !self.available || sequence == 0 {
            return then;
        }
        self.delete_name(out, sequence, Waiting::Deleted { name: name.to_string(), then }, now);
        None
    }

    /// Deletes the names' message `sequence`.
    fn delete_name(&mut self, out: &mut Vec<u8>, sequence: u64, waiting: Waiting, now: Instant) {
        let body = format!(r#"{{"seq":{sequence}}}"#);
        self.request(out, &format!("$JS.API.STREAM.MSG.DELETE.{NAMES}"), body.as_bytes(), waiting, now);
    }

    /// The answer to request `number` (on the publisher link): what it says for the
    /// question it served, into `news`; further requests it calls for, into `out`. True if
    /// the link is up now (the last of its streams answered after its `PONG`).
    pub fn answered(
        &mut self,
        out: &mut Vec<u8>,
        rooms: &mut [Room<'_>],
        (number, status, body): (u64, Option<u16>, &[u8]),
        news: &mut Vec<News>,
    ) -> bool {
        let Some((waiting, _)) = self.waiting.remove(&number) else { return false };
        let now = Instant::now();
        let no_one = status == Some(503);
        let error = json::get(body, &["error", "err_code"]).and_then(json::number);
        let refused = no_one || json::get(body, &["error"]).is_some();
        match waiting {
            Waiting::Stream(name) => {
                match (no_one, error) {
                    (true, _) => {}
                    (false, None) | (false, Some(STREAM_IN_USE)) => self.available = true,
                    (false, Some(_)) => warn!(
                        "backplane stream not made; stream={name} answer={}",
                        String::from_utf8_lossy(body)
                    ),
                }
                if no_one && self.streams == 1 && !self.available {
                    warn!(
                        "the NATS engine has no JetStream (nats-server -js): chat names and history are each server's own"
                    );
                }
                self.streams -= 1;
                return self.streams == 0 && self.pong;
            }
            Waiting::Guest { ask, room, old } => match json::get(body, &["seq"]).and_then(json::number) {
                Some(number) if !refused => {
                    let name = format!("guest-{number}");
                    let waiting = Waiting::Claim { ask, room, name: name.clone(), old, guest: true };
                    self.publish_name(out, (&rooms[room], &name, 0), waiting, now);
                }
                _ => news.push(News::Answer { ask, answer: Answer::Failed }),
            },
            Waiting::Claim { ask, room, name, old, guest } => {
                let answer = match (json::get(body, &["seq"]).and_then(json::number), error) {
                    (_, Some(WRONG_LAST_SEQUENCE)) if guest => {
                        // Someone took that guest name by hand: the next number.
                        let waiting = Waiting::Guest { ask, room, old };
                        self.request(out, &rooms[room].subjects.guests, b"", waiting, now);
                        return false;
                    }
                    (_, Some(WRONG_LAST_SEQUENCE)) => Answer::Claimed { name, taken: true },
                    (Some(sequence), None) if !no_one => {
                        let then = match old {
                            Some(old) => {
                                let then = Some((ask, name.clone()));
                                self.release_then(out, rooms[room].reborrow(), &old, then, now)
                            }
                            None => Some((ask, name.clone())),
                        };
                        rooms[room].ours.insert(name.clone(), sequence);
                        // The others know at once it is here (were this server to die now).
                        self.beat(out, &rooms[room]);
                        if then.is_none() {
                            // Answered once the old name is deleted (`Waiting::Deleted`).
                            return false;
                        }
                        Answer::Claimed { name, taken: false }
                    }
                    _ => Answer::Failed,
                };
                news.push(News::Answer { ask, answer });
            }
            Waiting::Who { ask, room } => {
                let answer = match json::get(body, &["state"]) {
                    Some(state) if !refused => {
                        let prefix = format!("{}.", rooms[room].subjects.names);
                        let subjects = json::get(state, &["subjects"]).map(json::members).unwrap_or_default();
                        let mut names: Vec<String> = subjects
                            .into_iter()
                            .filter_map(|(subject, _)| subject.strip_prefix(&prefix).map(String::from))
                            .collect();
                        names.sort_unstable();
                        Answer::Present(names)
                    }
                    _ => Answer::Failed,
                };
                news.push(News::Answer { ask, answer });
            }
            Waiting::History { ask, room, keep } => {
                let consumer = json::get(body, &["name"]).and_then(json::string);
                let pending = json::get(body, &["num_pending"]).and_then(json::number);
                match (consumer, pending, refused) {
                    (Some(consumer), Some(pending), false) => {
                        let read = self.reads.entry(consumer.clone()).or_default();
                        read.ask = Some((ask, room, keep));
                        read.expected = Some(pending);
                        read.started.get_or_insert(now);
                        self.finish_read(out, &consumer, news, now);
                    }
                    _ => news.push(News::Answer { ask, answer: Answer::Failed }),
                }
            }
            Waiting::Refresh { room, name, again } => {
                match (json::get(body, &["seq"]).and_then(json::number), error) {
                    (Some(sequence), None) if !no_one => match rooms[room].ours.get_mut(&name) {
                        Some(ours) => *ours = sequence,
                        // Its member left while the refresh was on its way: the message it
                        // made goes too, or the name would stay taken for a life.
                        None => self.delete_name(out, sequence, Waiting::Deleted { name, then: None }, now),
                    },
                    _ if no_one => {}
                    (_, Some(WRONG_LAST_SEQUENCE)) if !again && rooms[room].ours.contains_key(&name) => {
                        // Its message is gone: the engine restarted (names are kept in its
                        // memory) or it expired while this server was away. Claimed again,
                        // as new; if someone took it meanwhile, that fails below.
                        let waiting = Waiting::Refresh { room, name: name.clone(), again: true };
                        self.publish_name(out, (&rooms[room], &name, 0), waiting, now);
                    }
                    _ => {
                        // Taken by another while this server was away: the member keeps the
                        // name here, but it is no longer unique.
                        warn!(
                            "a member's name was lost on the engine; name={name} answer={}",
                            String::from_utf8_lossy(body)
                        );
                        rooms[room].ours.remove(&name);
                    }
                }
            }
            Waiting::Deleted { name, then } => {
                if refused && !no_one {
                    // Not there (expired, or the engine restarted): nothing to free.
                    debug!(
                        "a name's message was not deleted; name={name} answer={}",
                        String::from_utf8_lossy(body)
                    );
                }
                if let Some((ask, name)) = then {
                    news.push(News::Answer { ask, answer: Answer::Claimed { name, taken: false } });
                }
            }
            Waiting::Nothing => {}
        }
        false
    }

    /// A history line pushed to the subscriber link's inbox (`reply`: its `$JS.ACK...`
    /// subject, which names the consumer).
    pub fn pushed(
        &mut self,
        out: &mut Vec<u8>,
        reply: &[u8],
        payload: &[u8],
        news: &mut Vec<News>,
        now: Instant,
    ) {
        // $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>
        let Some(consumer) = reply.split(|&byte| byte == b'.').nth(3) else { return };
        let consumer = String::from_utf8_lossy(consumer).into_owned();
        let read = self.reads.entry(consumer.clone()).or_default();
        read.started.get_or_insert(now);
        if read.done {
            return;
        }
        if let Some(envelope) = Envelope::decode(payload) {
            let id = LineId { origin: envelope.origin, sequence: envelope.sequence };
            read.lines.push((id, envelope.line.to_vec()));
        }
        self.finish_read(out, &consumer, news, now);
    }

    /// A history read whose lines have all come is answered, and its consumer deleted.
    fn finish_read(&mut self, out: &mut Vec<u8>, consumer: &str, news: &mut Vec<News>, now: Instant) {
        let Some(read) = self.reads.get_mut(consumer) else { return };
        let (Some((ask, _, keep)), Some(expected)) = (read.ask, read.expected) else { return };
        if (read.lines.len() as u64) < expected || read.done {
            return;
        }
        read.done = true;
        let mut lines = std::mem::take(&mut read.lines);
        lines.truncate(expected as usize);
        // A stream made by a server keeping more lines than this one: the last `keep`.
        let skip = lines.len().saturating_sub(keep);
        lines.drain(..skip);
        news.push(News::Answer { ask, answer: Answer::History(lines) });
        self.request(
            out,
            &format!("$JS.API.CONSUMER.DELETE.{HISTORY}.{consumer}"),
            b"",
            Waiting::Nothing,
            now,
        );
    }

    /// Timers, every interval: this process's names published again (refreshed), its
    /// heartbeat in each chat room, requests unanswered for an interval failed, history reads
    /// forgotten, and other processes not heard of for a name's life found gone (only while
    /// this process can hear them: `listening`, its subscriber link up).
    pub fn on_timers(
        &mut self,
        out: &mut Vec<u8>,
        rooms: &mut [Room<'_>],
        (interval, life, listening): (Duration, Duration, bool),
        news: &mut Vec<News>,
        now: Instant,
    ) {
        let overdue: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, (_, sent))| now >= *sent + interval)
            .map(|(number, _)| *number)
            .collect();
        for number in overdue {
            if let Some((waiting, _)) = self.waiting.remove(&number) {
                match waiting {
                    Waiting::Guest { ask, .. }
                    | Waiting::Claim { ask, .. }
                    | Waiting::Who { ask, .. }
                    | Waiting::History { ask, .. } => news.push(News::Answer { ask, answer: Answer::Failed }),
                    Waiting::Stream(_) => {
                        self.streams = self.streams.saturating_sub(1);
                    }
                    Waiting::Deleted { then: Some((ask, name)), .. } => {
                        news.push(News::Answer { ask, answer: Answer::Claimed { name, taken: false } })
                    }
                    Waiting::Refresh { .. } | Waiting::Deleted { .. } | Waiting::Nothing => {}
                }
            }
        }
        // A read whose lines never all came: answered with what came (none if its creation
        // was not answered: the question failed above).
        let stale: Vec<String> = self
            .reads
            .iter()
            .filter(|(_, read)| read.started.is_some_and(|started| now >= started + interval))
            .map(|(consumer, _)| consumer.clone())
            .collect();
        for consumer in stale {
            if let Some(read) = self.reads.remove(&consumer) {
                if let (Some((ask, _, _)), false) = (read.ask, read.done) {
                    news.push(News::Answer { ask, answer: Answer::History(read.lines) });
                }
            }
        }
        // After a stall, the others are judged at the next run, once what they sent meanwhile
        // has been read (a process starved for a second would otherwise find every other
        // server silent for a life at 0.3 s intervals: seen on a loaded 2-core machine).
        let stalled = self.timers_ran.is_some_and(|ran| now > ran + interval + interval / 2);
        self.timers_ran = Some(now);
        let gone: Vec<(usize, u64)> = match listening && !stalled {
            true => self
                .heard
                .iter()
                .filter(|(_, (_, heard))| now >= *heard + life)
                .map(|(key, _)| *key)
                .collect(),
            false => Vec::new(),
        };
        for key in gone {
            if let Some((names, _)) = self.heard.remove(&key) {
                if !names.is_empty() {
                    info!(
                        "a server stopped answering; its members left; room={} names={}",
                        key.0,
                        names.join(",")
                    );
                    news.push(News::Gone { room: key.0, names, tell_others: false });
                }
            }
        }
        if now < self.beat_at {
            return;
        }
        self.beat_at = now + interval;
        for room in rooms.iter_mut() {
            self.beat(out, room);
            if !self.available {
                continue;
            }
            let names: Vec<(String, u64)> = room
                .ours
                .iter()
                .filter(|(name, _)| !room.renaming.values().any(|old| old == *name))
                .map(|(name, seq)| (name.clone(), *seq))
                .collect();
            for (name, sequence) in names {
                let waiting = Waiting::Refresh { room: room.index, name: name.clone(), again: false };
                self.publish_name(out, (room, &name, sequence), waiting, now);
            }
        }
    }

    /// This process's heartbeat in `room`: its origin and its members' names there.
    pub fn beat(&self, out: &mut Vec<u8>, room: &Room<'_>) {
        let mut payload = format!("{:016x}", self.origin);
        for name in room.ours.keys() {
            payload.push(' ');
            payload.push_str(name);
        }
        nats::encode_pub(out, &room.subjects.presence, payload.as_bytes());
    }

    /// Another process's heartbeat in room `room`.
    pub fn heard(&mut self, room: usize, payload: &[u8], now: Instant) {
        let text = String::from_utf8_lossy(payload);
        let mut words = text.split(' ');
        let Some(origin) = words.next().and_then(|word| u64::from_str_radix(word, 16).ok()) else { return };
        if origin == self.origin {
            return;
        }
        let names: Vec<String> = words.filter(|word| !word.is_empty()).map(String::from).collect();
        self.heard.insert((room, origin), (names, now));
    }

    /// The publisher link came up: the heartbeat and refresh go out at once.
    pub fn beat_now(&mut self, now: Instant) {
        self.beat_at = now;
    }

    /// A link came up (again): every process heard of before is given a name's life from now
    /// to be heard again, and the longest retry delay more (an engine back for everyone is
    /// found by each server on its own backoff, up to that much later than by this one).
    /// Their silence while this server could not hear them, or while the engine was away for
    /// them too, says nothing; without this, a server back after an outage longer than a life
    /// would tell its members that every other server's members left, though none did.
    pub fn relisten(&mut self, now: Instant) {
        for (_, heard) in self.heard.values_mut() {
            *heard = now + LAST_RETRY;
        }
    }

    /// When [`on_timers`](Self::on_timers) next has something to do.
    pub fn next_deadline(&self, interval: Duration) -> Instant {
        let oldest = self.waiting.values().map(|(_, sent)| *sent + interval).min();
        oldest.map_or(self.beat_at, |oldest| oldest.min(self.beat_at))
    }

    /// Names of processes other than this one that are known to be alive (for tests).
    #[cfg(test)]
    fn alive(&self) -> HashSet<u64> {
        self.heard.keys().map(|(_, origin)| *origin).collect()
    }
}

impl Room<'_> {
    /// The same room, borrowed again (to lend it to a call and use it after).
    pub fn reborrow(&mut self) -> Room<'_> {
        Room {
            index: self.index,
            subjects: self.subjects,
            history: self.history,
            ours: self.ours,
            renaming: self.renaming,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room<'r>(subjects: &'r RoomSubjects, ours: &'r mut HashMap<String, u64>) -> Room<'r> {
        static NONE: std::sync::LazyLock<HashMap<u64, String>> = std::sync::LazyLock::new(HashMap::new);
        Room { index: 0, subjects, history: 3, ours, renaming: &NONE }
    }

    /// A named claim is one conditional publish; a guest claim asks for a number first; the
    /// answers read as the engine gives them.
    #[test]
    fn claims_are_conditional_publishes() {
        let now = Instant::now();
        let (subjects, mut ours) = (RoomSubjects::of("lobby"), HashMap::new());
        let mut js = JetStream::new(7, now);
        let mut out = Vec::new();
        js.start(&mut out, 3, true, Duration::from_secs(15), now);
        let text = String::from_utf8_lossy(&out).into_owned();
        assert!(
            text.contains("$JS.API.STREAM.CREATE.EVLOOP_NAMES") && text.contains("\"max_age\":15000000000")
        );
        let mut news = Vec::new();
        for number in 1..=3 {
            let mut rooms = [room(&subjects, &mut ours)];
            let up = js.answered(&mut out, &mut rooms, (number, None, br#"{"did_create":true}"#), &mut news);
            assert!(!up, "not before its PONG");
        }
        assert!(js.ponged(), "up: PONG and streams");
        out.clear();
        let ask = js.ask(
            &mut out,
            room(&subjects, &mut ours),
            Question::Claim { wanted: Some("ann"), old: None },
            1,
            now,
        );
        assert_eq!(ask, Some(1));
        let text = String::from_utf8_lossy(&out).into_owned();
        assert!(text.starts_with("HPUB evloop.names.lobby.ann _INBOX.evloop.0000000000000007.4 "), "{text}");
        assert!(text.contains("Nats-Expected-Last-Subject-Sequence: 0\r\n"));
        let mut rooms = [room(&subjects, &mut ours)];
        js.answered(&mut out, &mut rooms, (4, None, br#"{"stream":"EVLOOP_NAMES", "seq":9}"#), &mut news);
        assert_eq!(
            news,
            [News::Answer { ask: 1, answer: Answer::Claimed { name: "ann".into(), taken: false } }]
        );
        assert_eq!(ours.get("ann"), Some(&9));
        news.clear();
        js.ask(
            &mut out,
            room(&subjects, &mut ours),
            Question::Claim { wanted: None, old: Some("ann") },
            2,
            now,
        );
        let mut rooms = [room(&subjects, &mut ours)];
        js.answered(&mut out, &mut rooms, (5, None, br#"{"stream":"EVLOOP_GUESTS","seq":3}"#), &mut news);
        let refused = br#"{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 2"}}"#;
        js.answered(&mut out, &mut rooms, (6, None, refused), &mut news);
        assert!(news.is_empty(), "guest-3 taken by hand: another number");
        js.answered(&mut out, &mut rooms, (7, None, br#"{"stream":"EVLOOP_GUESTS","seq":4}"#), &mut news);
        js.answered(&mut out, &mut rooms, (8, None, br#"{"seq":12}"#), &mut news);
        assert!(news.is_empty(), "a rename is answered once the old name is deleted");
        assert!(
            String::from_utf8_lossy(&out)
                .contains("MSG.DELETE.EVLOOP_NAMES _INBOX.evloop.0000000000000007.9 9\r\n{\"seq\":9}"),
            "ann's message deleted"
        );
        js.answered(&mut out, &mut rooms, (9, None, br#"{"success":true}"#), &mut news);
        assert_eq!(
            news,
            [News::Answer { ask: 2, answer: Answer::Claimed { name: "guest-4".into(), taken: false } }]
        );
        assert_eq!(ours.keys().collect::<Vec<_>>(), ["guest-4"]);
    }

    /// A history read: the lines pushed (before or after the consumer's creation is
    /// answered) are the answer once all have come; then the consumer goes.
    #[test]
    fn history_is_pushed_then_answered() {
        let now = Instant::now();
        let (subjects, mut ours) = (RoomSubjects::of("lobby"), HashMap::new());
        let mut js = JetStream { available: true, ..JetStream::new(7, now) };
        let mut out = Vec::new();
        js.ask(&mut out, room(&subjects, &mut ours), Question::History, 5, now);
        let mut news = Vec::new();
        let line = |sequence: u64| {
            let mut bytes = Vec::new();
            Envelope { origin: 3, sequence, line: format!("l{sequence}").as_bytes() }.encode(&mut bytes);
            bytes
        };
        js.pushed(&mut out, b"$JS.ACK.EVLOOP_HISTORY.abc.1.1.1.0.1", &line(1), &mut news, now);
        let created = br#"{"type":"x","name":"abc","num_pending":2,"delivered":{"stream_seq":0}}"#;
        js.answered(&mut out, &mut [room(&subjects, &mut ours)], (1, None, created), &mut news);
        assert!(news.is_empty());
        js.pushed(&mut out, b"$JS.ACK.EVLOOP_HISTORY.abc.1.2.2.0.0", &line(2), &mut news, now);
        js.pushed(&mut out, b"$JS.ACK.EVLOOP_HISTORY.abc.1.3.3.0.0", &line(3), &mut news, now);
        let lines = vec![
            (LineId { origin: 3, sequence: 1 }, b"l1".to_vec()),
            (LineId { origin: 3, sequence: 2 }, b"l2".to_vec()),
        ];
        assert_eq!(
            news,
            [News::Answer { ask: 5, answer: Answer::History(lines) }],
            "the two it said, not the third"
        );
        assert!(String::from_utf8_lossy(&out).contains("$JS.API.CONSUMER.DELETE.EVLOOP_HISTORY.abc"));
    }

    /// Heartbeats: a process not heard of for a name's life is gone, with its names.
    #[test]
    fn a_silent_server_is_gone() {
        let now = Instant::now();
        let (subjects, mut ours) = (RoomSubjects::of("lobby"), HashMap::new());
        let mut js = JetStream::new(7, now);
        js.heard(0, b"0000000000000009 ann bob", now);
        js.heard(0, b"0000000000000007 me", now);
        assert_eq!(js.alive(), HashSet::from([9]), "its own heartbeat is not another's");
        let (mut out, mut news) = (Vec::new(), Vec::new());
        let times = (Duration::from_secs(1), Duration::from_secs(3), true);
        js.on_timers(
            &mut out,
            &mut [room(&subjects, &mut ours)],
            times,
            &mut news,
            now + Duration::from_secs(2),
        );
        assert!(news.is_empty());
        assert!(
            String::from_utf8_lossy(&out).starts_with("PUB evloop.presence.lobby 16\r\n0000000000000007\r\n")
        );
        js.on_timers(
            &mut out,
            &mut [room(&subjects, &mut ours)],
            times,
            &mut news,
            now + Duration::from_secs(3),
        );
        assert_eq!(
            news,
            [News::Gone { room: 0, names: vec!["ann".into(), "bob".into()], tell_others: false }]
        );
    }

    /// A refresh refused because the name's message is gone (the engine restarted) claims
    /// the name again, as new; refused again (taken meanwhile), the name is lost; a refresh
    /// answered after its member left deletes the message it made.
    #[test]
    fn a_name_gone_from_the_engine_is_claimed_again() {
        let now = Instant::now();
        let subjects = RoomSubjects::of("lobby");
        let mut ours = HashMap::from([("ann".to_string(), 9)]);
        let mut js = JetStream { available: true, ..JetStream::new(7, now) };
        let (mut out, mut news) = (Vec::new(), Vec::new());
        let times = (Duration::from_secs(1), Duration::from_secs(3), true);
        let second = Duration::from_secs(1);
        let expects = |out: &[u8], number: u64, sequence: u64| {
            let text = String::from_utf8_lossy(out);
            text.contains(&format!("HPUB evloop.names.lobby.ann _INBOX.evloop.0000000000000007.{number} "))
                && text.contains(&format!("Nats-Expected-Last-Subject-Sequence: {sequence}\r\n"))
        };
        js.on_timers(&mut out, &mut [room(&subjects, &mut ours)], times, &mut news, now);
        assert!(expects(&out, 1, 9), "refreshed: {}", String::from_utf8_lossy(&out));
        let wrong = br#"{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 0"}}"#;
        out.clear();
        js.answered(&mut out, &mut [room(&subjects, &mut ours)], (1, None, wrong), &mut news);
        assert!(expects(&out, 2, 0), "claimed again: {}", String::from_utf8_lossy(&out));
        js.answered(&mut out, &mut [room(&subjects, &mut ours)], (2, None, br#"{"seq":3}"#), &mut news);
        assert_eq!(ours.get("ann"), Some(&3));

        out.clear();
        js.on_timers(&mut out, &mut [room(&subjects, &mut ours)], times, &mut news, now + second);
        assert!(expects(&out, 3, 3));
        js.answered(&mut out, &mut [room(&subjects, &mut ours)], (3, None, wrong), &mut news);
        js.answered(&mut out, &mut [room(&subjects, &mut ours)], (4, None, wrong), &mut news);
        assert!(ours.is_empty(), "taken meanwhile: lost");
        assert!(news.is_empty());

        ours.insert("bob".to_string(), 5);
        js.on_timers(&mut out, &mut [room(&subjects, &mut ours)], times, &mut news, now + 2 * second);
        ours.clear();
        out.clear();
        js.answered(&mut out, &mut [room(&subjects, &mut ours)], (5, None, br#"{"seq":6}"#), &mut news);
        assert!(
            String::from_utf8_lossy(&out)
                .contains("MSG.DELETE.EVLOOP_NAMES _INBOX.evloop.0000000000000007.6 9\r\n{\"seq\":6}"),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }

    /// No server is found gone while this one cannot hear them (its subscriber link down),
    /// and once it hears again each has a life from then, and the longest retry delay, to be
    /// heard.
    #[test]
    fn silence_while_not_listening_says_nothing() {
        let now = Instant::now();
        let (subjects, mut ours) = (RoomSubjects::of("lobby"), HashMap::new());
        let mut js = JetStream::new(7, now);
        js.heard(0, b"0000000000000009 ann", now);
        let (mut out, mut news) = (Vec::new(), Vec::new());
        let at = |seconds| now + Duration::from_secs(seconds);
        let deaf = (Duration::from_secs(1), Duration::from_secs(3), false);
        js.on_timers(&mut out, &mut [room(&subjects, &mut ours)], deaf, &mut news, at(5));
        assert!(news.is_empty(), "not heard, but not listening");
        js.relisten(at(5));
        let listening = (Duration::from_secs(1), Duration::from_secs(3), true);
        for second in 6..=12 {
            js.on_timers(&mut out, &mut [room(&subjects, &mut ours)], listening, &mut news, at(second));
        }
        assert!(news.is_empty(), "a life from the link's return, and the longest retry delay");
        js.on_timers(&mut out, &mut [room(&subjects, &mut ours)], listening, &mut news, at(13));
        assert_eq!(news, [News::Gone { room: 0, names: vec!["ann".into()], tell_others: false }]);
    }

    /// Timers that ran late (the process stalled) judge no one: the heartbeats that came
    /// meanwhile are read first; the next run does.
    #[test]
    fn a_stalled_server_judges_no_one_until_it_has_read() {
        let now = Instant::now();
        let (subjects, mut ours) = (RoomSubjects::of("lobby"), HashMap::new());
        let mut js = JetStream::new(7, now);
        js.heard(0, b"0000000000000009 ann", now);
        let (mut out, mut news) = (Vec::new(), Vec::new());
        let at = |millis| now + Duration::from_millis(millis);
        let times = (Duration::from_secs(1), Duration::from_secs(3), true);
        js.on_timers(&mut out, &mut [room(&subjects, &mut ours)], times, &mut news, at(1000));
        js.on_timers(&mut out, &mut [room(&subjects, &mut ours)], times, &mut news, at(4000));
        assert!(news.is_empty(), "late by two intervals: not judged");
        js.on_timers(&mut out, &mut [room(&subjects, &mut ours)], times, &mut news, at(4100));
        assert_eq!(news, [News::Gone { room: 0, names: vec!["ann".into()], tell_others: false }]);
    }

    /// The publisher link lost: every question waiting on it is answered, failed.
    #[test]
    fn questions_waiting_on_a_lost_link_fail() {
        let now = Instant::now();
        let (subjects, mut ours) = (RoomSubjects::of("lobby"), HashMap::new());
        let mut js = JetStream { available: true, ..JetStream::new(7, now) };
        let mut out = Vec::new();
        js.ask(&mut out, room(&subjects, &mut ours), Question::Who, 1, now);
        js.ask(&mut out, room(&subjects, &mut ours), Question::History, 2, now);
        let mut news = Vec::new();
        js.lost(&mut news);
        news.sort_by_key(|news| match news {
            News::Answer { ask, .. } => *ask,
            _ => 0,
        });
        assert_eq!(
            news,
            [
                News::Answer { ask: 1, answer: Answer::Failed },
                News::Answer { ask: 2, answer: Answer::Failed }
            ]
        );
    }
}
