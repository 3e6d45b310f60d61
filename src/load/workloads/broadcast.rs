//! `broadcast`: each message must reach every other member of the room, once and in the
//! order sent, as `<sender-addr>: <message>`. Its message carries its sender, sequence and
//! the times it was due and sent, so any member, in any loader thread, can check it and
//! measure its delivery.
//!
//! A line answers no request of its own connection: it is answered by its delivery to
//! every other member. Open loop (the default, 1,000 lines/s), deliveries are only counted;
//! closed loop (`--pipeline`), each sender keeps its lines in flight until every member has
//! them (`acks.rs`), whichever thread that member is on. Before the run, one member repeats
//! a sync line until every other has seen it: the server handles messages in order, so
//! every member is then surely in the room.
//!
//! Open loop, a room may be spread over loader processes (`--processes`, agents on other
//! hosts): each process syncs its own members before the go, so all are in the room before
//! anyone sends; its parent tells it the room's size at the go (each line is owed to every
//! member but its sender) and the lines sent in all once every process stopped sending, so
//! its members know what they are owed. A line from a member of another process is checked
//! whole but for the sender's address, which only that process knows; it is timed against
//! the shared start (the same monotonic clock on one host; across hosts, the start instant
//! each agent was given on its own clock, so the figure carries their alignment's error).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::acks::LineAcks;
use super::payload::{header_and_filler, is_plain_filler, take_hex};
use super::{Exchange, Request, Workload, WorkloadFlags, header_fits};
use crate::load::config::LoadConfig;
use crate::load::engine::{Prep, Replies, WAKER, Wire};
use crate::load::plan::Plan;
use crate::load::report::{Broadcast as BroadcastReport, Percentiles, Report};
use crate::load::shared::Shared;
use crate::load::socket::LoadSocket;
use crate::load::tally::Tally;

/// The payload of the sync line: never a real message, which always starts with a hex
/// header.
const SYNC: &[u8] = b"sync";
/// How often the sync line is repeated until every member has seen it.
const SYNC_EVERY_NS: u64 = 20_000_000;

/// The room, as every thread of the run shares it.
#[derive(Debug)]
pub(crate) struct Room {
    /// Closed loop: which lines every member has.
    acks: Option<LineAcks>,
    /// Members that have seen the sync line (so are surely in the room).
    synced: AtomicUsize,
    /// Each connection's local address as the server prints it, by connection id.
    sender_addrs: Mutex<Vec<Option<String>>>,
    /// This process's connection ids: `first_id`, and how many.
    first_id: u32,
    connections: u32,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Broadcast {
    room: Arc<Room>,
    size: usize,
    /// This thread's index, and the ids of its connections.
    thread: usize,
    ids: Range<u32>,
    /// Every member's address, by id, as the run starts.
    addrs: Vec<Option<String>>,
    /// How many members each line goes to (every member but its sender), as the run starts:
    /// over every process, for a room spread over several.
    members: u32,
    /// Members up in this process as the run starts.
    local_members: u64,
    /// The room is spread over several processes (this one is a part of a larger run).
    spread: bool,
    next_sync_ns: u64,
    /// When to stop waiting for every member to be in the room; `None` before the sync.
    sync_deadline_ns: Option<u64>,
}

/// What a member keeps.
#[derive(Debug, Default)]
pub(crate) struct Member {
    /// It has seen the sync line, so it is surely in the room.
    synced: bool,
    /// The last sequence number it got from each sender, to check that every line arrives
    /// once and in the order sent.
    last_seq_from: LastSeqs,
}

impl Exchange for Broadcast {
    const NAME: &'static str = "broadcast";
    const ANSWERED_ON_ITS_CONNECTION: bool = false;
    const DEFAULT_RATE: Option<f64> = Some(1000.0);
    type Run = Room;
    type Conn = Member;

    fn from_flags(_flags: &mut WorkloadFlags) -> Result<Workload, String> {
        Ok(Workload::Broadcast)
    }

    /// A closed loop answers a line once every member has it, which only the process of
    /// every member can see.
    fn one_process(config: &LoadConfig) -> Option<&'static str> {
        config.open_loop_rate().is_none().then_some(
            "a closed-loop broadcast (--pipeline, --step-members) runs in one loader process: a line is answered once every member has it, which no one process sees when the room is spread over several (an open loop, --rate, can be)",
        )
    }

    fn validate(config: &LoadConfig) -> Result<(), String> {
        if config.target.is_datagram() {
            return Err("broadcast cannot run over UDP: there are no connections to broadcast to".to_string());
        }
        header_fits(config, Self::NAME)?;
        if config.connections < 2 {
            return Err("broadcast needs at least 2 connections".to_string());
        }
        Ok(())
    }

    fn share(config: &LoadConfig, plans: &[Plan]) -> std::io::Result<Room> {
        let id_space = config.first_id as usize + config.connections as usize;
        let closed_loop = config.open_loop_rate().is_none();
        Ok(Room {
            acks: closed_loop.then(|| LineAcks::new(config.pipeline, id_space, plans)),
            synced: AtomicUsize::new(0),
            sender_addrs: Mutex::new(vec![None; id_space]),
            first_id: config.first_id,
            connections: config.connections,
        })
    }

    fn new(config: &LoadConfig, plan: &Plan, run: &Arc<Room>) -> Broadcast {
        Broadcast {
            room: run.clone(),
            size: config.size,
            thread: plan.index,
            ids: plan.first_id..plan.first_id + plan.count,
            addrs: Vec::new(),
            members: 0,
            local_members: 0,
            spread: false,
            next_sync_ns: 0,
            sync_deadline_ns: None,
        }
    }

    fn start(&mut self, registry: &mio::Registry) -> std::io::Result<()> {
        if let Some(acks) = &self.room.acks {
            acks.set_waker(self.thread, mio::Waker::new(registry, WAKER)?);
        }
        Ok(())
    }

    fn request(&self, request: &Request, out: &mut Vec<u8>, tally: &mut Tally) {
        tally.deliveries_expected += u64::from(self.members);
        let times = (request.intended_ns, request.sent_ns, request.epoch_ns);
        broadcast_message(request.id, request.seq, times, self.size, out);
    }

    /// Never asked: a line answers no request of its connection ([`reply`] takes lines),
    /// and broadcast does not run over UDP.
    ///
    /// [`reply`]: Exchange::reply
    fn check(&self, _id: u32, _seq: u64, _reply: &[u8], _scratch: &mut Vec<u8>) -> bool {
        false
    }

    fn expected(&self, _id: u32, _seq: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(b"(a broadcast line from a loader connection)");
    }

    /// A line came: the sync line, or another member's message, checked against what its
    /// sender sent, counted and timed.
    fn reply(&self, replies: &mut Replies<'_, Self>, line: &[u8], _offset: u64) {
        if line.ends_with(b": sync") {
            replies.tally().received -= 1;
            let member = replies.state();
            if !member.synced {
                member.synced = true;
                self.room.synced.fetch_add(1, Ordering::AcqRel);
            }
            return;
        }
        let id = replies.id();
        // A sender of another process (a room spread over several): its address is not
        // known here, and the message is checked without it.
        let sender_addr = |sender: u32| match self.addrs.get(sender as usize) {
            Some(Some(addr)) => Some(addr.as_str()),
            _ if self.spread && !self.ids_here(sender) => Some(""),
            _ => None,
        };
        let Some(delivery) = verify_broadcast(line, self.size, replies.epoch_ns(), sender_addr) else {
            return replies.tally().mismatch(id, b"(a broadcast line from a loader connection)", line);
        };
        // Each sender's lines come once each, in the order sent: a sequence number that does
        // not move forward is a duplicate or a reordering.
        let last = replies.state().last_seq_from.advance(delivery.sender, delivery.seq);
        if last.is_some_and(|last| delivery.seq <= last) {
            let expected = format!("(sender {}'s line after #{})", delivery.sender, last.unwrap_or(0));
            return replies.tally().mismatch(id, expected.as_bytes(), line);
        }
        let tally = replies.tally();
        tally.verified += 1;
        tally.deliveries_seen += 1;
        let measured = replies.measured(delivery.intended_ns);
        if let Some(acks) = &self.room.acks {
            let last = acks.delivered(delivery.sender, delivery.seq, self.members, self.thread);
            if last && measured {
                let reach = replies.now().saturating_sub(delivery.intended_ns);
                Tally::record(&mut replies.tally().reach, reach);
            }
        }
        if measured {
            replies.measure(delivery.intended_ns, delivery.sent_ns, line.len() as u64);
        }
    }

    fn on_up(&self, id: u32, socket: &LoadSocket) {
        // Unix clients have no address the server can print; they are counted as members
        // (for the sync) with an empty name.
        let name = socket.local_name().unwrap_or_default();
        self.room.sender_addrs.lock().expect("not poisoned")[id as usize] = Some(name);
    }

    /// The first member repeats the sync line until every other member has received it.
    fn prepare(&mut self, prep: &mut Prep<'_, Member>, now: u64) -> bool {
        let established = prep.shared().established.load(Ordering::Acquire);
        let deadline_ns = *self.sync_deadline_ns.get_or_insert_with(|| {
            self.addrs = self.room.sender_addrs.lock().expect("not poisoned").clone();
            self.spread = prep.shared().whole.is_part();
            now + prep.config().connect_timeout.as_nanos() as u64
        });
        let synced = self.room.synced.load(Ordering::Acquire);
        if established <= 1 || synced + 1 >= established {
            return true;
        }
        if now >= deadline_ns {
            // A server that accepted connections but does not serve them all: run anyway,
            // and what never reaches those members is counted as lost.
            if self.thread == 0 {
                log::warn!(
                    "not every member is in the room after --connect-timeout; running anyway; in_room={} connected={established}",
                    synced + 1
                );
            }
            return true;
        }
        let Some(sync_id) = self.addrs.iter().position(Option::is_some) else { return false };
        let sync_id = sync_id as u32;
        if now < self.next_sync_ns || !self.ids.contains(&sync_id) {
            return false;
        }
        self.next_sync_ns = now + SYNC_EVERY_NS;
        if prep.send(sync_id, SYNC) {
            prep.tally().sync_lines += 1;
        }
        false
    }

    /// The room's size as the run starts: every member but a line's sender is owed it.
    fn begin(&mut self, shared: &Shared) {
        self.local_members = shared.established.load(Ordering::Acquire) as u64;
        self.members = shared.room_size().saturating_sub(1) as u32;
    }

    /// Closed loop: each line that has reached every other member makes room for its
    /// sender's next one.
    fn answers(&self, wire: &mut Wire<'_, Self>, now: u64) {
        let Some(acks) = &self.room.acks else { return };
        for index in 0..wire.sending_keys().len() {
            let Some(&key) = wire.sending_keys().get(index) else { break };
            while let Some(oldest) = wire.oldest(key) {
                if !acks.take_answered(wire.id(key), oldest.seq, self.members) {
                    break;
                }
                wire.answered_elsewhere(key, now);
            }
        }
    }

    /// Another thread may still be sending: its lines are not expected yet, so this asks
    /// only once every thread has stopped (the engine waits for that).
    ///
    /// A room spread over processes: this process's members are owed every line sent
    /// anywhere but their own, known once the parent says how many lines were sent in all.
    fn drained(&self, _in_flight: usize, shared: &Shared) -> bool {
        let seen = shared.deliveries_seen.load(Ordering::Acquire);
        match (shared.whole.is_part(), self.owed_here(shared)) {
            (false, _) => seen >= shared.deliveries_expected.load(Ordering::Acquire),
            (true, Some(owed)) => seen >= owed,
            (true, None) => false,
        }
    }

    /// Deliveries are expected by senders and seen by receivers in any thread: the
    /// shortfall is only known in total, so one thread reports it.
    fn lost_at_end(&self, shared: &Shared) -> u64 {
        if self.thread != 0 {
            return 0;
        }
        let seen = shared.deliveries_seen.load(Ordering::Acquire);
        if !shared.whole.is_part() {
            return shared.deliveries_expected.load(Ordering::Acquire).saturating_sub(seen);
        }
        match self.owed_here(shared) {
            Some(owed) => owed.saturating_sub(seen),
            None => {
                log::warn!("the lines sent over every process never came: this process's missing deliveries are not counted");
                0
            }
        }
    }

    fn report(config: &LoadConfig, tally: &Tally, report: &mut Report) {
        report.broadcast = Some(BroadcastReport {
            deliveries_expected: tally.deliveries_expected,
            deliveries_seen: tally.deliveries_seen,
            sync_lines: tally.sync_lines,
            reach_us: config.broadcast_closed_loop.then(|| Percentiles::of(&tally.reach)),
        });
    }
}

impl Broadcast {
    /// Whether connection `id` is one of this process's.
    fn ids_here(&self, id: u32) -> bool {
        (self.room.first_id..self.room.first_id + self.room.connections).contains(&id)
    }

    /// A room spread over processes: the deliveries this process's members are owed, once
    /// the lines sent in all are known: each line to every member but its sender, and this
    /// process's own lines were sent by members here.
    fn owed_here(&self, shared: &Shared) -> Option<u64> {
        let lines = shared.whole.lines()?;
        let own_lines = shared.sent.load(Ordering::Acquire);
        Some((lines * self.local_members).saturating_sub(own_lines))
    }
}

/// A broadcast message: sender, sequence, and the times it was scheduled and sent, in hex,
/// then filler to `size`. The times travel with the message so any receiving connection, in
/// any loader thread, can measure its delivery latency; they are written as the schedule
/// since `epoch_ns` (the run's start, which every thread knows) and the lateness of the send
/// after it, a dozen hex digits rather than thirty: every delivery reads them.
fn broadcast_message(
    sender: u32,
    seq: u64,
    (intended_ns, sent_ns, epoch_ns): (u64, u64, u64),
    size: usize,
    out: &mut Vec<u8>,
) {
    let (scheduled, lateness) = (intended_ns.saturating_sub(epoch_ns), sent_ns.saturating_sub(intended_ns));
    let header = [u64::from(sender), seq, scheduled, lateness];
    header_and_filler(out, &header, (sender as usize) ^ (seq as usize), size);
}

/// A verified broadcast delivery.
#[derive(Debug, PartialEq, Eq)]
struct Delivery {
    /// The sending connection.
    sender: u32,
    /// Its sequence number among that sender's messages.
    seq: u64,
    /// When it was scheduled to be sent.
    intended_ns: u64,
    /// When it was sent.
    sent_ns: u64,
}

/// Checks a line a broadcast receiver got: `<sender-addr>: <message>`, where the address
/// must be the sender's (`sender_addr(sender)`) and the message exactly what that sender
/// sent. `None` for anything else.
///
/// It reads the header and compares the rest with the filler in place, rather than
/// rebuilding the message: this runs once per delivery, and the loader must stay cheaper per
/// message than the server it measures.
fn verify_broadcast<'a>(
    line: &[u8],
    size: usize,
    epoch_ns: u64,
    sender_addr: impl Fn(u32) -> Option<&'a str>,
) -> Option<Delivery> {
    // The address has no spaces; the message follows its ": ".
    let space = memchr::memchr(b' ', line)?;
    let addr = line[..space].strip_suffix(b":")?;
    let message = &line[space + 1..];
    let mut rest = message;
    let sender = u32::try_from(take_hex(&mut rest)?).ok()?;
    let (seq, scheduled, lateness) = (take_hex(&mut rest)?, take_hex(&mut rest)?, take_hex(&mut rest)?);
    let intended_ns = epoch_ns.saturating_add(scheduled);
    let sent_ns = intended_ns.saturating_add(lateness);
    // Unix clients have no address the loader could know (the server numbers them by
    // accept order, `unix#3`): for them the name is empty and only the message is checked.
    let expected_addr = sender_addr(sender)?;
    if !expected_addr.is_empty() && expected_addr.as_bytes() != addr {
        return None;
    }
    let header = message.len() - rest.len();
    let filler_start = (sender as usize) ^ (seq as usize);
    (message.len() == size.max(header) && is_plain_filler(rest, filler_start)).then_some(Delivery {
        sender,
        seq,
        intended_ns,
        sent_ns,
    })
}

/// Hashes the connection ids the loader keys its maps with: one multiplication. The
/// default (SipHash, built against hash flooding, which ids chosen here cannot do) costs
/// more than the lookup it serves, once per broadcast delivery.
#[derive(Clone, Copy, Debug, Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64((self.0 << 8) | u64::from(byte));
        }
    }

    fn write_u32(&mut self, id: u32) {
        self.write_u64(u64::from(id));
    }

    fn write_u64(&mut self, value: u64) {
        // Fibonacci hashing: the golden ratio spreads consecutive ids over the high bits.
        self.0 = value.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// The last sequence number a receiver got from each sender. Lines come in runs from one
/// sender (a room's lines of a turn are grouped by sender), so the current sender's is kept
/// aside and the map is touched only when the sender changes.
#[derive(Debug, Default)]
struct LastSeqs {
    current: Option<(u32, u64)>,
    others: HashMap<u32, u64, BuildHasherDefault<IdHasher>>,
}

impl LastSeqs {
    /// Notes line `seq` of `sender`; returns the one before it from that sender, if any.
    fn advance(&mut self, sender: u32, seq: u64) -> Option<u64> {
        if let Some((current, last)) = &mut self.current {
            if *current == sender {
                return Some(std::mem::replace(last, seq));
            }
        }
        if let Some((previous, last)) = self.current.replace((sender, seq)) {
            self.others.insert(previous, last);
        }
        self.others.remove(&sender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A broadcast line verifies only with the right sender address and exact message.
    #[test]
    fn broadcast_lines_verify() {
        let mut message = Vec::new();
        broadcast_message(5, 9, (1000, 1200, 100), 64, &mut message);
        assert_eq!(message.len(), 64);
        let addrs = |sender: u32| (sender == 5).then_some("127.0.0.1:4000");
        let mut line = b"127.0.0.1:4000: ".to_vec();
        line.extend_from_slice(&message);
        assert_eq!(
            verify_broadcast(&line, 64, 100, addrs),
            Some(Delivery { sender: 5, seq: 9, intended_ns: 1000, sent_ns: 1200 })
        );
        let mut wrong_addr = b"127.0.0.1:4001: ".to_vec();
        wrong_addr.extend_from_slice(&message);
        assert_eq!(verify_broadcast(&wrong_addr, 64, 100, addrs), None);
        assert_eq!(verify_broadcast(b"127.0.0.1:4000: sync", 64, 100, addrs), None);
        // Any byte changed, dropped or added is caught, except in the two times, which
        // the receiver has nothing to check against (it measures with them).
        let times = "127.0.0.1:4000: 5.9.".len().."127.0.0.1:4000: 5.9.384.c8".len();
        for at in 0..line.len() {
            let mut damaged = line.clone();
            damaged[at] ^= 1;
            if !times.contains(&at) {
                assert_eq!(verify_broadcast(&damaged, 64, 100, addrs), None, "byte {at} changed");
            }
            let mut short = line.clone();
            short.remove(at);
            assert_eq!(verify_broadcast(&short, 64, 100, addrs), None, "byte {at} dropped");
        }
        let mut long = line.clone();
        long.push(b'x');
        assert_eq!(verify_broadcast(&long, 64, 100, addrs), None);
        // A header with a leading zero is not what was sent.
        let mut padded = b"127.0.0.1:4000: 05".to_vec();
        padded.extend_from_slice(&message[1..]);
        assert_eq!(verify_broadcast(&padded, 65, 100, addrs), None);
        // A header longer than --size: the message is the header alone.
        let mut long_header = Vec::new();
        broadcast_message(5, u64::MAX, (u64::MAX, u64::MAX, 0), 32, &mut long_header);
        let mut line = b"127.0.0.1:4000: ".to_vec();
        line.extend_from_slice(&long_header);
        assert!(long_header.len() > 32 && verify_broadcast(&line, 32, 0, addrs).is_some());
    }

    /// Each sender's previous line is remembered, whichever senders come between.
    #[test]
    fn last_seqs_follow_each_sender() {
        let mut seqs = LastSeqs::default();
        assert_eq!(seqs.advance(1, 0), None);
        assert_eq!(seqs.advance(1, 1), Some(0));
        assert_eq!(seqs.advance(2, 0), None);
        assert_eq!(seqs.advance(1, 2), Some(1));
        assert_eq!(seqs.advance(3, 7), None);
        assert_eq!(seqs.advance(2, 1), Some(0));
        assert_eq!(seqs.advance(2, 2), Some(1));
        assert_eq!(seqs.advance(1, 3), Some(2));
        assert_eq!(seqs.advance(3, 8), Some(7));
    }
}
