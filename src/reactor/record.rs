//! What a room remembers beyond its members' sockets: their names, and its last lines for
//! newcomers (a room whose handler names its members and keeps history: `chat`). The room
//! itself (`room.rs`) only knows who hears whose lines; this part keeps the rest, in one of
//! two places, chosen per room when the reactor starts:
//!
//! - **in memory**, without a backplane: names and lines are kept here, and every question
//!   is answered at once, in the step that asked it.
//! - **on the engine**, for a room shared over a backplane: the names and the lines live in
//!   Redis or NATS (`backplane/`), so a name is unique on every server and a newcomer gets
//!   the lines said on any of them. The engine answers a round trip later: each question is
//!   asked with a number, and the answer is routed back to the connection that asked
//!   ([`Records::answered`]), or dropped if it is gone (a name it was given is released).
//!   Only this server's members' names are kept here, to release them when they leave and to
//!   fall back on while the engine is out of reach (names are then unique on this server
//!   only, until the engine is back; history is none).
//!
//! Why the engine and not the servers among themselves: a server that dies says nothing, and
//! servers that gossip their members need a protocol of their own to agree on who left. The
//! engine already keeps state for all of them; with an expiry on each name (refreshed by its
//! server while it lives) a dead server's members age out, and one server is told.
//!
//! A newcomer's history on the engine is merged the way Centrifuge merges it: the newcomer
//! becomes a member at once, but what the room sends it is held while its history is read;
//! then it gets the history, then the held lines the history does not already cover. Lines
//! are told apart by their identity (the publishing process and its sequence in the room,
//! [`LineId`], stored with each line on the engine): a held line is dropped if the history
//! holds that process's line of the same or a later sequence (it is in the history, or older
//! than it), so each line reaches the newcomer once, and each sender's lines in order.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::Service;
use super::room::Room;
use crate::backplane::{Answer, Backplane, LineId, Question};

/// See the module documentation.
#[derive(Debug, Default)]
pub(super) struct Records {
    /// One per room, in the rooms' order.
    rooms: Vec<Record>,
    /// Questions asked of the engine and not answered yet, by number.
    asked: HashMap<u64, Asked>,
}

/// What one room remembers.
#[derive(Debug, Default)]
struct Record {
    /// This server's members' names (with an engine, a copy of what it holds for them).
    names: Names,
    /// How many lines it keeps for newcomers (`--history`; 0: none).
    keep: usize,
    /// Whether its handler names its members and keeps history (`chat`), even none.
    named: bool,
    /// The lines themselves, when kept in memory.
    lines: VecDeque<Vec<u8>>,
    /// Whether its names and lines are on the engine.
    on_engine: bool,
    /// Newcomers whose history is being read from the engine, and the lines held for them.
    joining: Vec<Joiner>,
}

/// How long a newcomer whose history came waits at most for this server's live lines to
/// catch up with it (a link to the engine that is down, a subscriber far behind): past it,
/// it gets its history and the held lines as they are, and a line it already has may come
/// again.
const CATCH_UP: Duration = Duration::from_secs(1);

/// A newcomer whose history is being read: the room's lines since it joined, held; then its
/// history, until the live lines have caught up with it.
#[derive(Debug)]
struct Joiner {
    asker: Asker,
    held: Vec<(Option<LineId>, Vec<u8>)>,
    /// Its history, once read, and how long to wait for the live lines to catch up with it.
    history: Option<(Lines, Instant)>,
}

/// Lines with their identities, oldest first.
type Lines = Vec<(LineId, Vec<u8>)>;

/// A room's members' names on this server: each member holds at most one, and no two the
/// same.
#[derive(Debug, Default)]
struct Names {
    by_name: HashMap<String, usize>,
    by_member: HashMap<usize, String>,
    /// The number of the next guest name to try (in memory).
    next_guest: u64,
}

/// The connection that asked a question, and its service (whose handler hears the answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Asker {
    /// Its key.
    pub key: usize,
    /// Its service.
    pub service: usize,
}

/// A question waiting for the engine.
#[derive(Debug)]
struct Asked {
    /// Who asked; `None` once it has gone (its answer is dropped).
    asker: Option<Asker>,
    room: usize,
    what: What,
}

/// What was asked, with what a fallback needs.
#[derive(Debug)]
enum What {
    Claim { wanted: Option<String> },
    Who,
    History,
}

/// A question's answer: now, or once the engine has answered ([`Records::answered`]).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Reply<T> {
    Now(T),
    Later,
}

/// An answer from the engine, for the connection that asked.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Answered {
    /// Its name (or the refusal).
    Claimed { name: String, taken: bool },
    /// Who is in the room.
    Present(Vec<String>),
}

impl Records {
    /// The records of `rooms`: each keeps `history` lines if a service of its keeps
    /// history, and keeps them on the engine if it is shared over one (`engine`).
    pub fn new(rooms: &[Room], services: &[Service], history: usize, engine: bool) -> Records {
        let mut records: Vec<Record> = rooms
            .iter()
            .map(|room| Record { on_engine: engine && room.backplane.is_some(), ..Record::default() })
            .collect();
        for service in services.iter().filter(|service| service.handler.keeps_history()) {
            records[service.room].keep = history;
            records[service.room].named = true;
        }
        Records { rooms: records, asked: HashMap::new() }
    }

    /// How many lines `room` keeps for newcomers, if its handler names its members and keeps
    /// history (`chat`).
    pub fn keeps(&self, room: usize) -> Option<usize> {
        let record = &self.rooms[room];
        record.named.then_some(record.keep)
    }

    /// Claims `wanted` (a guest name if `None`) for `asker` in `room`: the name and whether
    /// another member has it, now, or [`Reply::Later`] from the engine.
    pub fn claim(
        &mut self,
        room: usize,
        asker: Asker,
        wanted: Option<&str>,
        engine: Option<&mut Backplane>,
    ) -> Reply<(String, bool)> {
        let record = &mut self.rooms[room];
        let Some(engine) = engine.filter(|_| record.on_engine) else {
            return Reply::Now(record.names.claim(asker.key, wanted));
        };
        let old = record.names.of(asker.key);
        match engine.ask(room, Question::Claim { wanted, old }) {
            Some(ask) => {
                let what = What::Claim { wanted: wanted.map(String::from) };
                self.asked.insert(ask, Asked { asker: Some(asker), room, what });
                Reply::Later
            }
            None => Reply::Now(record.claim_while_away(room, asker.key, wanted, engine)),
        }
    }

    /// Who is in `room`, now or later.
    pub fn who(&mut self, room: usize, asker: Asker, engine: Option<&mut Backplane>) -> Reply<Vec<String>> {
        let record = &self.rooms[room];
        if let Some(engine) = engine.filter(|_| record.on_engine) {
            if let Some(ask) = engine.ask(room, Question::Who) {
                self.asked.insert(ask, Asked { asker: Some(asker), room, what: What::Who });
                return Reply::Later;
            }
        }
        Reply::Now(record.names.sorted())
    }

    /// `asker` joins `room`: [`Reply::Now`] if it gets its history at once (in memory:
    /// [`history`](Self::history); nothing, if the room keeps none or the engine is out of
    /// reach), or [`Reply::Later`], the engine reading it: the room's lines are held for it
    /// meanwhile ([`line`](Self::line)), and come with the answer.
    pub fn join(&mut self, room: usize, asker: Asker, engine: Option<&mut Backplane>) -> Reply<()> {
        let record = &mut self.rooms[room];
        if record.keep == 0 {
            return Reply::Now(());
        }
        let Some(engine) = engine.filter(|_| record.on_engine) else { return Reply::Now(()) };
        let Some(ask) = engine.ask(room, Question::History) else { return Reply::Now(()) };
        record.joining.push(Joiner { asker, held: Vec::new(), history: None });
        self.asked.insert(ask, Asked { asker: Some(asker), room, what: What::History });
        Reply::Later
    }

    /// The lines `room` keeps in memory, oldest first (none on the engine).
    pub fn history(&self, room: usize) -> impl Iterator<Item = &[u8]> {
        self.rooms[room].lines.iter().map(Vec::as_slice)
    }

    /// A line (`kept`: one a newcomer's history keeps; otherwise a notice) went to `room`
    /// from member `sender` (`None`: another server) with identity `id` (on a backplane):
    /// kept in memory if the room keeps its lines here, and held for each newcomer whose
    /// history is being read. Called for every room line: two branches for a room that
    /// keeps nothing.
    #[inline]
    pub fn line(
        &mut self,
        room: usize,
        sender: Option<usize>,
        id: Option<LineId>,
        payload: &[u8],
        kept: bool,
    ) {
        let record = &mut self.rooms[room];
        if kept && record.keep > 0 && !record.on_engine {
            if record.lines.len() == record.keep {
                record.lines.pop_front();
            }
            record.lines.push_back(payload.to_vec());
        }
        // Shortcut: what is held is bounded by the time the engine may take to answer (its
        // link's ping, 5 s by default: past it the link is reset and the question fails),
        // not by a size of its own.
        // A line the room does not keep (a notice: joined, left, renamed) is never in a
        // history, so it is held without its identity: `merge` then never takes it for
        // covered by a later line of its process, and the newcomer gets it.
        let id = id.filter(|_| kept);
        for joiner in record.joining.iter_mut().filter(|joiner| Some(joiner.asker.key) != sender) {
            joiner.held.push((id, payload.to_vec()));
        }
    }

    /// Member `key` of `room` left (or went before it was served): its name is free, on
    /// the engine too, and answers still due to it will be dropped.
    pub fn leave(&mut self, room: usize, key: usize, engine: Option<&mut Backplane>) {
        let record = &mut self.rooms[room];
        record.joining.retain(|joiner| joiner.asker.key != key);
        for asked in self.asked.values_mut() {
            if asked.asker.is_some_and(|asker| asker.key == key) {
                asked.asker = None;
            }
        }
        if let (Some(name), Some(engine)) = (record.names.release(key), engine) {
            if record.on_engine {
                engine.release(room, &name);
            }
        }
    }

    /// The engine's answer to question `ask`: for whom, and what to tell it; `None` if it
    /// is not for anyone here any more (a name given to a member that has gone is released
    /// at once), or not yet (a newcomer's history: see [`caught_up`](Self::caught_up)). An
    /// answer that failed (the link was lost) falls back on what this server knows.
    pub fn answered(
        &mut self,
        ask: u64,
        answer: Answer,
        engine: &mut Backplane,
        now: Instant,
    ) -> Option<(Asker, Answered)> {
        let Asked { asker, room, what } = self.asked.remove(&ask)?;
        let record = &mut self.rooms[room];
        let Some(asker) = asker else {
            if let Answer::Claimed { name, taken: false } = answer {
                engine.release(room, &name);
            }
            return None;
        };
        let answered = match (what, answer) {
            (What::Claim { .. }, Answer::Claimed { name, taken }) => {
                if !taken {
                    record.names.give(asker.key, name.clone());
                }
                Answered::Claimed { name, taken }
            }
            (What::Claim { wanted }, _) => {
                let (name, taken) = record.claim_while_away(room, asker.key, wanted.as_deref(), engine);
                Answered::Claimed { name, taken }
            }
            (What::Who, Answer::Present(names)) => Answered::Present(names),
            (What::Who, _) => Answered::Present(record.names.sorted()),
            (What::History, answer) => {
                let joiner = record.joining.iter_mut().find(|joiner| joiner.asker.key == asker.key)?;
                let history = match answer {
                    Answer::History(lines) => lines,
                    _ => Vec::new(),
                };
                joiner.history = Some((history, now + CATCH_UP));
                return None;
            }
        };
        Some((asker, answered))
    }

    /// Newcomers whose history came, and whose live lines have caught up with it: each with
    /// what it gets first (its history, then the lines held for it that the history does not
    /// cover). A history read up to a process's line is caught up with once this server has
    /// had that line live too (the engine answers on one link and sends lines on the other,
    /// so the answer may come first): from then on every live line is newer than the
    /// history, and a line the history holds can no longer come again.
    pub fn caught_up(&mut self, engine: &Backplane, now: Instant) -> Vec<(Asker, Vec<Vec<u8>>)> {
        let mut done = Vec::new();
        for (room, record) in self.rooms.iter_mut().enumerate() {
            let mut index = 0;
            while index < record.joining.len() {
                let ready = record.joining[index].history.as_ref().is_some_and(|(history, until)| {
                    now >= *until
                        || history.iter().all(|(id, _)| engine.reached(room, id.origin) >= id.sequence)
                });
                if !ready {
                    index += 1;
                    continue;
                }
                let Joiner { asker, held, history } = record.joining.swap_remove(index);
                let (history, until) = history.expect("a history");
                if now >= until {
                    log::debug!(
                        "joined before the live lines caught up with the history; conn={}",
                        asker.key
                    );
                }
                done.push((asker, merge(history, held)));
            }
        }
        done
    }

    /// The latest a newcomer waits for the live lines to catch up with its history.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.rooms
            .iter()
            .flat_map(|record| record.joining.iter())
            .filter_map(|joiner| joiner.history.as_ref().map(|(_, until)| *until))
            .min()
    }
}

impl Record {
    /// A claim while the engine is out of reach: unique among this server's members; the
    /// engine is told of a name given at its next refresh.
    fn claim_while_away(
        &mut self,
        room: usize,
        key: usize,
        wanted: Option<&str>,
        engine: &mut Backplane,
    ) -> (String, bool) {
        let old = self.names.of(key).map(String::from);
        let (name, taken) = self.names.claim(key, wanted);
        if !taken {
            engine.adopt(room, &name, old.as_deref());
        }
        (name, taken)
    }
}

/// A newcomer's history, then the lines held for it that the history does not cover: a held
/// line is covered if the history holds a line of the same process with the same or a later
/// sequence (the line itself, or one said after it). Notices are held without an identity
/// (`Records::line`): never covered.
fn merge(history: Lines, held: Vec<(Option<LineId>, Vec<u8>)>) -> Vec<Vec<u8>> {
    let mut reached: HashMap<u64, u64> = HashMap::new();
    for (id, _) in &history {
        let last = reached.entry(id.origin).or_insert(0);
        *last = (*last).max(id.sequence);
    }
    let covered = |id: &Option<LineId>| {
        id.is_some_and(|id| reached.get(&id.origin).is_some_and(|&last| id.sequence <= last))
    };
    let mut lines: Vec<Vec<u8>> = history.into_iter().map(|(_, line)| line).collect();
    lines.extend(held.into_iter().filter(|(id, _)| !covered(id)).map(|(_, line)| line));
    lines
}

impl Names {
    /// Gives `member` the name `wanted`, or a guest name (`guest-N`, the first free) if
    /// `None`; its earlier name is free again. Returns the name, and whether another member
    /// has it (the member then keeps its own).
    fn claim(&mut self, member: usize, wanted: Option<&str>) -> (String, bool) {
        let name = match wanted {
            Some(name) => {
                if self.by_name.get(name).is_some_and(|&holder| holder != member) {
                    return (name.to_string(), true);
                }
                name.to_string()
            }
            None => loop {
                self.next_guest += 1;
                let guest = format!("guest-{}", self.next_guest);
                if !self.by_name.contains_key(&guest) {
                    break guest;
                }
            },
        };
        self.give(member, name.clone());
        (name, false)
    }

    /// `member` has `name` now (the engine gave it); its earlier name is free.
    fn give(&mut self, member: usize, name: String) {
        if let Some(old) = self.by_member.insert(member, name.clone()) {
            self.by_name.remove(&old);
        }
        self.by_name.insert(name, member);
    }

    /// `member`'s name, if it has one.
    fn of(&self, member: usize) -> Option<&str> {
        self.by_member.get(&member).map(String::as_str)
    }

    /// `member` left: its name, free again.
    fn release(&mut self, member: usize) -> Option<String> {
        let name = self.by_member.remove(&member)?;
        self.by_name.remove(&name);
        Some(name)
    }

    /// The names, sorted.
    fn sorted(&self) -> Vec<String> {
        let mut names: Vec<String> = self.by_name.keys().cloned().collect();
        names.sort_unstable();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(origin: u64, sequence: u64) -> LineId {
        LineId { origin, sequence }
    }

    /// Names are unique in the room; a guest name skips one taken; a name is free again once
    /// its member took another or left.
    #[test]
    fn names_are_unique_and_freed() {
        let mut names = Names::default();
        assert_eq!(names.claim(1, None), ("guest-1".to_string(), false));
        assert_eq!(names.claim(2, Some("guest-2")), ("guest-2".to_string(), false));
        assert_eq!(names.claim(3, None), ("guest-3".to_string(), false), "guest-2 is taken");
        assert_eq!(names.claim(3, Some("guest-1")), ("guest-1".to_string(), true));
        assert_eq!(names.claim(1, Some("ann")), ("ann".to_string(), false));
        assert_eq!(names.claim(3, Some("guest-1")), ("guest-1".to_string(), false), "freed by the rename");
        assert_eq!(names.release(2), Some("guest-2".to_string()));
        assert_eq!(names.sorted(), ["ann", "guest-1"]);
    }

    /// The history first; then the held lines it does not cover: not those it holds, nor
    /// older ones of a process it has a later line of; those of processes it has none of,
    /// and later ones, in the order held.
    #[test]
    fn history_and_held_lines_merge_once_each() {
        let line = |text: &str| text.as_bytes().to_vec();
        let history = vec![(id(1, 4), line("a4")), (id(2, 7), line("b7")), (id(1, 5), line("a5"))];
        let held = vec![
            (Some(id(1, 3)), line("a3: older than the history: said before it")),
            (Some(id(1, 5)), line("a5")),
            (Some(id(2, 8)), line("b8")),
            (Some(id(3, 1)), line("c1")),
            (Some(id(1, 6)), line("a6")),
            (None, line("no identity: kept")),
        ];
        let merged: Vec<String> =
            merge(history, held).into_iter().map(|line| String::from_utf8(line).unwrap()).collect();
        assert_eq!(merged, ["a4", "b7", "a5", "b8", "c1", "a6", "no identity: kept"]);
    }
}
