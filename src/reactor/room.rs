//! Rooms: who hears whose lines, and a room's lines of one turn, framed once per codec into
//! one buffer each and written from there to every member.
//!
//! Every listener's connections form a room (`Recipient::AllExcept` reaches it). A handler
//! that [has a room](crate::Handler::has_room), such as `broadcast`, shares it by name: every
//! listener naming the same room (`broadcast@NAME`; unnamed: `default`) feeds one room, and
//! over a backplane the servers naming it share it too. So its members may speak different
//! codecs (a line client beside a browser): the room frames each line once per codec among
//! its listeners, and each member gets the lines framed for its own.
//!
//! A chat line goes to every member but its sender. Copying it into each member's output
//! would cost a copy per member, and writing it at once would cost a `write` per member per
//! line. Instead the line is framed once per codec, here, and at the end of the turn
//! (`release_room`) each member gets every line of the turn but its own in one `sendmsg`,
//! straight from its codec's buffer; only what a member's socket does not take is copied,
//! into that member's output. The kernel's copy into each socket is all that is left per
//! member. (A transport that transforms bytes, TLS, takes the copy instead.)
//!
//! A big room is written over several turns, [`ROOM_WRITES_PER_TURN`] members each, so that
//! the other connections are served in between: those lines wait in a release of their own
//! while the next ones gather, and go out first.
//!
//! A [`Room`] knows nothing of sockets: it holds its members' keys and its lines, and lends
//! each step of a release to the reactor (`output.rs`), which writes to each member.
//!
//! Lines wait here only until something else would reach a member (its own reply, a line
//! addressed to it, a new member joining, one leaving): the room's lines are released first,
//! all of them at once, so every member sees everything in the order it happened.

use std::io::IoSlice;

use super::Service;
use crate::codec::{Codec, Framing};
use crate::config::DEFAULT_ROOM;

/// A room's lines are released early once they hold this much, so a busy turn cannot grow
/// the buffer without bound.
const RELEASE_AT_BYTES: usize = 256 * 1024;

/// Members a room's lines are written to per turn in the flush phase; the rest get them in
/// the next turns, after the other connections have had theirs. Without it a line to a room
/// of 12,500 members held the thread for ~150 ms of writes (~12 µs each on this machine's
/// loopback), and a busy echo client beside the room waited it out: 100,000 members over 8
/// workers, echo p99 940 ms unbounded; 512: 79 ms; 256: 71 ms; 128: 43 ms, with reach
/// unchanged within the noise (examples/reach.rs --echo).
pub(super) const ROOM_WRITES_PER_TURN: usize = 128;

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Room {
    /// Its name, if it is shared by name (a handler with a room); `None`: one listener's own.
    name: Option<String>,
    /// Slab keys of its members (ready connections only), in no particular order.
    members: Vec<usize>,
    /// The framings its members need (a codec each of its listeners', and compressed
    /// WebSocket framings as members agree to them), each with this turn's lines framed so.
    framings: Vec<(Framing, RoomLines)>,
    /// Its index among the backplane's rooms, if it is shared over one.
    pub backplane: Option<usize>,
    /// Lines of an earlier turn still being written to its members, a budget per turn.
    releasing: Option<Release>,
    /// Emptied framings, kept for the next release (their buffers' memory reused).
    spare: Vec<(Framing, RoomLines)>,
}

/// Lines being written to a room's members over several turns: members before `next` (in
/// the member list) have them; those from `next` on wait their turn. Lines sent meanwhile
/// gather in the room's framings and are released after these, so every member gets
/// everything in order.
#[derive(Debug)]
struct Release {
    framings: Vec<(Framing, RoomLines)>,
    next: usize,
}

/// One step of a release, lent to the writer: the lines, and the members to write them to
/// (the room's list, borrowed out while the writer works: writing changes no membership,
/// since closing is deferred).
#[derive(Debug)]
pub(super) struct ReleaseStep {
    release: Release,
    members: Vec<usize>,
    /// The end of this step's members (exclusive).
    end: usize,
    /// When it started (`CLOCK_MONOTONIC` ns), while tracing releases.
    started_ns: Option<u64>,
}

impl ReleaseStep {
    /// The next `budget` members this step writes to.
    pub fn batch(&mut self, budget: usize) -> &[usize] {
        self.end = self.release.next.saturating_add(budget).min(self.members.len());
        &self.members[self.release.next.min(self.end)..self.end]
    }

    /// The members of the batch (after [`batch`](Self::batch)).
    pub fn members(&self) -> &[usize] {
        &self.members[self.release.next.min(self.end)..self.end]
    }

    /// The lines `member` gets, into `slices` (everything but its own lines, adjacent parts
    /// joined): framed in `slot` (its service's framing), or, for a member with a framing
    /// of its own (`own`: compressed with its window), in that framing. A framing added
    /// since these lines were gathered has none of them. Returns how many lines.
    pub fn lines_for<'a>(
        &'a self,
        member: usize,
        slot: usize,
        own: Option<Framing>,
        slices: &mut Vec<IoSlice<'a>>,
    ) -> u64 {
        let framings = &self.release.framings;
        // Rare, and a short list: found where the member's framing is.
        let slot = own.map_or(slot, |own| framings.iter().position(|(of, _)| *of == own).unwrap_or(0));
        match framings.get(slot) {
            Some((_, lines)) => lines.slices_for(member, slices),
            None => {
                slices.clear();
                0
            }
        }
    }
}

impl Room {
    /// Its name, if other listeners and servers may share it.
    pub fn shared_name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// How many members it has here.
    pub fn members(&self) -> usize {
        self.members.len()
    }

    /// Adds a connection, whose lines are framed as its listener's codec says, or as `own`
    /// (a member compressing with a window of its own: its lines are framed so from the
    /// next line on). Returns its index in the member list, to keep beside it.
    pub fn join(&mut self, key: usize, own: Option<Framing>) -> usize {
        if let Some(framing) = own {
            self.slot_for(framing);
        }
        self.members.push(key);
        self.members.len() - 1
    }

    /// Removes the member at `index` by moving the last one into its place; returns the key
    /// of the member that moved (its stored index must be updated to `index`).
    pub fn leave(&mut self, index: usize) -> Option<usize> {
        self.members.swap_remove(index);
        self.members.get(index).copied()
    }

    /// Frames `payload` from `sender` (`None`: another server) once per framing its members
    /// need, after the lines so far: every member but the sender gets it when the lines are
    /// released. (What the room remembers of its lines, for newcomers, is `record.rs`'s.)
    pub fn push_line(&mut self, sender: Option<usize>, payload: &[u8]) {
        for (framing, lines) in &mut self.framings {
            lines.push(sender, *framing, payload);
        }
    }

    /// Whether the lines gathered have grown past their bound: release them now.
    pub fn is_full(&self) -> bool {
        self.framings.iter().any(|(_, lines)| lines.len() >= RELEASE_AT_BYTES)
    }

    /// Whether an earlier turn's lines are still being written to its members.
    pub fn is_releasing(&self) -> bool {
        self.releasing.is_some()
    }

    /// Whether lines wait to be written: gathered this turn, or an earlier turn's release
    /// not done yet.
    pub fn lines_waiting(&self) -> bool {
        self.releasing.is_some() || self.framings.first().is_some_and(|(_, lines)| !lines.is_empty())
    }

    /// Starts a step of releasing its lines: the release under way, or (none under way) the
    /// lines gathered so far, which move to a release while the room gathers the next ones
    /// in emptied framings of the same kinds. The step goes back with
    /// [`end_release`](Self::end_release).
    pub fn start_release(&mut self) -> ReleaseStep {
        if self.releasing.is_none() {
            self.freeze();
        }
        // `RUST_LOG=evloop::room=debug`: when each release starts and ends, for the reach
        // benchmark's breakdown (examples/reach.rs); a branch otherwise.
        let traced = log::log_enabled!(target: "evloop::room", log::Level::Debug);
        ReleaseStep {
            release: self.releasing.take().expect("a release under way"),
            members: std::mem::take(&mut self.members),
            end: 0,
            started_ns: traced.then(crate::sys::monotonic_ns),
        }
    }

    /// Ends a step: its members have the lines; the release is done once every member has.
    pub fn end_release(&mut self, step: ReleaseStep) {
        let ReleaseStep { mut release, members, end, started_ns } = step;
        if let Some(started_ns) = started_ns {
            log::debug!(
                target: "evloop::room",
                "room released; pid={} members={}..{end} started_ns={started_ns} ended_ns={} first={:?}",
                std::process::id(),
                release.next,
                crate::sys::monotonic_ns(),
                String::from_utf8_lossy(release.framings[0].1.first_line())
            );
        }
        let done = end >= members.len();
        self.members = members;
        release.next = end;
        if done {
            for (_, lines) in &mut release.framings {
                lines.clear();
            }
            self.spare = release.framings;
        } else {
            self.releasing = Some(release);
        }
    }

    /// Starts releasing the lines gathered so far (none in progress): they move to the
    /// release, and the room gathers the next ones in emptied framings of the same kinds.
    fn freeze(&mut self) {
        let same_kinds = self.spare.len() == self.framings.len()
            && self.spare.iter().zip(&self.framings).all(|((spare, _), (framing, _))| spare == framing);
        if !same_kinds {
            // The first release, or a framing added since (a compression window): rare.
            self.spare = self.framings.iter().map(|(framing, _)| (*framing, RoomLines::default())).collect();
        }
        let framings = std::mem::replace(&mut self.framings, std::mem::take(&mut self.spare));
        self.releasing = Some(Release { framings, next: 0 });
    }

    /// The slot of `framing` among its framings, added if it is new (a member compressing
    /// with a window no other member uses); its lines are framed so from the next line on.
    fn slot_for(&mut self, framing: Framing) -> usize {
        self.framings.iter().position(|(of, _)| *of == framing).unwrap_or_else(|| {
            self.framings.push((framing, RoomLines::default()));
            self.framings.len() - 1
        })
    }
}

/// The rooms `services` form, each service told its room and the slot of its codec there:
/// a room per service, except that services whose handler has a room share one by name.
/// Rooms shared by name come first, in the order of their first service: the backplane
/// numbers them so.
pub(crate) fn rooms_of(services: &mut [Service]) -> Vec<Room> {
    let mut rooms: Vec<Room> = Vec::new();
    let shared = |service: &Service| {
        service
            .handler
            .has_room()
            .then(|| service.room_name.clone().unwrap_or_else(|| DEFAULT_ROOM.to_string()))
    };
    let place = |rooms: &mut Vec<Room>, name: Option<String>, codec: Codec| {
        let existing =
            name.as_ref().and_then(|name| rooms.iter().position(|room| room.name.as_ref() == Some(name)));
        let room = existing.unwrap_or_else(|| {
            rooms.push(Room::new(name));
            rooms.len() - 1
        });
        let framing = rooms[room].slot_for(codec.into());
        (room, framing)
    };
    for service in services.iter_mut().filter(|service| service.handler.has_room()) {
        (service.room, service.framing) = place(&mut rooms, shared(service), service.codec);
    }
    for (index, room) in rooms.iter_mut().enumerate() {
        room.backplane = Some(index);
    }
    for service in services.iter_mut().filter(|service| !service.handler.has_room()) {
        (service.room, service.framing) = place(&mut rooms, None, service.codec);
    }
    rooms
}

impl Room {
    /// An empty room, `name`d if it is shared by name.
    fn new(name: Option<String>) -> Room {
        Room {
            name,
            members: Vec::new(),
            framings: Vec::new(),
            backplane: None,
            releasing: None,
            spare: Vec::new(),
        }
    }
}

/// The lines of one turn, framed with one codec. Empty between turns.
#[derive(Debug, Default)]
pub(crate) struct RoomLines {
    /// The lines, framed, in the order sent.
    bytes: Vec<u8>,
    /// Who sent them: runs of consecutive lines of one sender, so that each member can be
    /// given everything but its own.
    runs: Vec<Run>,
}

/// Consecutive lines of one sender.
#[derive(Clone, Copy, Debug)]
struct Run {
    /// The sending connection; `None` for lines from another server (the backplane), which
    /// every member gets.
    sender: Option<usize>,
    /// Where its lines end in `bytes` (they start where the previous run ends).
    end: usize,
    /// How many lines.
    lines: u64,
}

impl RoomLines {
    /// Frames `payload` as `framing` says after the lines so far, as sent by `sender`.
    pub(crate) fn push(&mut self, sender: Option<usize>, framing: impl Into<Framing>, payload: &[u8]) {
        framing.into().encode(payload, &mut self.bytes);
        let end = self.bytes.len();
        match self.runs.last_mut() {
            Some(run) if run.sender == sender => {
                run.end = end;
                run.lines += 1;
            }
            _ => self.runs.push(Run { sender, end, lines: 1 }),
        }
    }

    /// The first line waiting, framed, cut to 80 bytes (for the trace of a release).
    fn first_line(&self) -> &[u8] {
        let end = self.runs.first().map_or(0, |run| run.end).min(80);
        let line = &self.bytes[..end];
        memchr::memchr(b'\n', line).map_or(line, |newline| &line[..newline])
    }

    /// Whether no line waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// How many bytes wait.
    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// The parts of the buffer `member` gets, in order (every run but its own), into
    /// `slices`; adjacent parts are joined, so a member that sent nothing gets one slice.
    /// Returns how many lines they hold.
    pub(crate) fn slices_for<'a>(&'a self, member: usize, slices: &mut Vec<IoSlice<'a>>) -> u64 {
        slices.clear();
        let mut start = 0;
        let mut lines = 0;
        let mut taken: Option<(usize, usize)> = None;
        for run in &self.runs {
            if run.sender != Some(member) {
                lines += run.lines;
                taken = match taken {
                    Some((from, to)) if to == start => Some((from, run.end)),
                    Some((from, to)) => {
                        slices.push(IoSlice::new(&self.bytes[from..to]));
                        Some((start, run.end))
                    }
                    None => Some((start, run.end)),
                };
            }
            start = run.end;
        }
        if let Some((from, to)) = taken {
            slices.push(IoSlice::new(&self.bytes[from..to]));
        }
        lines
    }

    /// Empties it, keeping its memory for the next turn (up to a bound: one burst of long
    /// lines should not pin memory for ever).
    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.runs.clear();
        if self.bytes.capacity() > KEPT_CAPACITY {
            self.bytes = Vec::new();
        }
    }
}

/// The most buffer a room keeps between turns.
const KEPT_CAPACITY: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    fn slices_of(lines: &RoomLines, member: usize) -> Vec<String> {
        let mut slices = Vec::new();
        let count = lines.slices_for(member, &mut slices);
        let text: Vec<String> =
            slices.iter().map(|slice| String::from_utf8(slice.to_vec()).unwrap()).collect();
        assert_eq!(count, text.concat().matches('\n').count() as u64, "the line count");
        text
    }

    /// Each member gets every line but its own, in order, in as few slices as can be.
    #[test]
    fn members_get_everything_but_their_own_lines() {
        let mut lines = RoomLines::default();
        lines.push(Some(1), Codec::Line, b"a");
        lines.push(Some(1), Codec::Line, b"b");
        lines.push(Some(2), Codec::Line, b"c");
        lines.push(None, Codec::Line, b"d");
        lines.push(Some(1), Codec::Line, b"e");
        assert_eq!(slices_of(&lines, 9), ["a\nb\nc\nd\ne\n"]);
        assert_eq!(slices_of(&lines, 1), ["c\nd\n"]);
        assert_eq!(slices_of(&lines, 2), ["a\nb\n", "d\ne\n"]);
        lines.clear();
        assert!(lines.is_empty() && slices_of(&lines, 9).is_empty());
    }

    /// Listeners of a handler with a room share it by name, each codec framed apart; other
    /// listeners get a room each; shared rooms come first, numbered for the backplane.
    #[test]
    fn listeners_share_rooms_by_name() {
        let service = |name: &str, codec: Codec, room: Option<&str>| {
            let mut service = Service::new(name.to_string(), crate::handlers::by_name(name).unwrap(), codec);
            service.room_name = room.map(String::from);
            service
        };
        let mut services = vec![
            service("echo", Codec::Line, None),
            service("broadcast", Codec::Line, None),
            service("broadcast", Codec::Length, None),
            service("broadcast", Codec::Line, Some("lobby")),
            service("echo", Codec::Line, None),
        ];
        let rooms = rooms_of(&mut services);
        let placed: Vec<(usize, usize)> =
            services.iter().map(|service| (service.room, service.framing)).collect();
        assert_eq!(placed, [(2, 0), (0, 0), (0, 1), (1, 0), (3, 0)]);
        assert_eq!(rooms[0].shared_name(), Some("default"));
        assert_eq!(rooms[1].shared_name(), Some("lobby"));
        assert_eq!((rooms[0].backplane, rooms[1].backplane, rooms[2].backplane), (Some(0), Some(1), None));
    }

    /// A room of one listener's codec with `members` joined (keys 0, 1, ...).
    fn room_of(codecs: &[Codec], members: usize) -> Room {
        let mut room = Room::new(Some("lobby".to_string()));
        for &codec in codecs {
            room.slot_for(codec.into());
        }
        for key in 0..members {
            assert_eq!(room.join(key, None), key);
        }
        room
    }

    /// Runs release steps of `budget` members until the lines are out, as the writer would:
    /// what each member got, by key, in `slot`'s framing, and the keys of each step.
    fn release_all(room: &mut Room, slot: usize, budget: usize, got: &mut [Vec<u8>]) -> Vec<Vec<usize>> {
        let mut steps = Vec::new();
        while room.lines_waiting() {
            let mut step = room.start_release();
            step.batch(budget);
            let mut slices = Vec::new();
            for &member in step.members() {
                step.lines_for(member, slot, None, &mut slices);
                got[member].extend(slices.iter().flat_map(|slice| slice.iter().copied()));
            }
            steps.push(step.members().to_vec());
            drop(slices);
            room.end_release(step);
        }
        steps
    }

    /// Joining gives each member its index; leaving moves the last member into the gap and
    /// names it, so the leaver's index is right for it.
    #[test]
    fn membership_is_kept_by_index() {
        let mut room = room_of(&[Codec::Line], 4);
        assert_eq!(room.leave(1), Some(3), "the last member moved into the gap");
        assert_eq!(room.members, [0, 3, 2]);
        assert_eq!(room.leave(2), None, "the last member left: nobody moved");
        assert_eq!(room.members, [0, 3]);
    }

    /// A line is framed once per codec among the room's listeners, and every member but the
    /// sender gets it in its own framing.
    #[test]
    fn each_codec_gets_its_framing() {
        let mut room = room_of(&[Codec::Line, Codec::Length], 3);
        room.push_line(Some(1), b"hi");
        let mut lines = vec![Vec::new(); 3];
        release_all(&mut room, 0, usize::MAX, &mut lines);
        assert_eq!(lines, [b"hi\n".to_vec(), Vec::new(), b"hi\n".to_vec()], "all but the sender, as lines");
        room.push_line(None, b"hi");
        let mut framed = vec![Vec::new(); 3];
        release_all(&mut room, 1, usize::MAX, &mut framed);
        assert_eq!(framed[1], b"\0\0\0\x02hi", "length-framed, and a line from another server reaches all");
        assert!(!room.lines_waiting());
    }

    /// A release reaches at most `budget` members per step, in member order, and is done
    /// once every member has the lines.
    #[test]
    fn a_release_keeps_to_its_budget() {
        let mut room = room_of(&[Codec::Line], 5);
        room.push_line(None, b"one");
        let mut got = vec![Vec::new(); 5];
        let steps = release_all(&mut room, 0, 2, &mut got);
        assert_eq!(steps, [vec![0, 1], vec![2, 3], vec![4]]);
        assert!(got.iter().all(|lines| lines == b"one\n"));
    }

    /// Lines sent while a release is under way wait for it: every member gets the earlier
    /// lines first, whichever step it is in.
    #[test]
    fn lines_keep_their_order_across_steps() {
        let mut room = room_of(&[Codec::Line], 4);
        room.push_line(None, b"first");
        let mut got = vec![Vec::new(); 4];
        let mut step = room.start_release();
        step.batch(2);
        let mut slices = Vec::new();
        for &member in step.members() {
            step.lines_for(member, 0, None, &mut slices);
            got[member].extend(slices.iter().flat_map(|slice| slice.iter().copied()));
        }
        drop(slices);
        room.end_release(step);
        assert!(room.is_releasing(), "two members still wait");
        room.push_line(None, b"second");
        release_all(&mut room, 0, 2, &mut got);
        assert!(got.iter().all(|lines| lines == b"first\nsecond\n"), "{got:?}");
        assert!(!room.is_full());
    }
}
