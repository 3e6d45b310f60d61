//! What agents and a coordinator say to each other over NATS: JSON objects, one per message,
//! on a few subjects, and the arithmetic of their clocks.
//!
//! ```text
//! evloop.load.hello              coordinators ─► every agent   hello (who is free?)
//! evloop.load.agent.<id>         coordinator  ─► one agent     assign, go, result?, done
//! evloop.load.run.<run>          coordinator  ─► its agents    clock, tick, stop, done
//! evloop.load.coordinator.<run>  agents       ─► coordinator   here, clock, status, result, failed
//! ```
//!
//! NATS delivers at most once, so whatever matters is repeated until it is answered: hello
//! until enough agents are here, assign until the agent's status names the run, go until it
//! says it runs, result? until every chunk came. An agent's status (once a second, and on
//! every change) is its heartbeat; the coordinator's tick is its own.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::load::drivers::processes::PartResult;
use crate::load::progress::Snapshot;

/// The version of this protocol: an agent and a coordinator must speak the same.
pub(crate) const PROTOCOL: u32 = 1;

/// Where coordinators ask who is free.
pub(crate) const HELLO: &str = "evloop.load.hello";

/// Results are cut into chunks of this many bytes at most: NATS refuses a message over its
/// `max_payload` (1 MiB unless configured lower), and a result's histograms may approach it.
pub(crate) const CHUNK: usize = 256 * 1024;

/// The most chunks a result may come in (256 MiB): a count past it in a message is refused,
/// not allocated for.
pub(crate) const MAX_CHUNKS: u32 = 1024;

/// Agent `id`'s own subject.
pub(crate) fn agent_subject(id: &str) -> String {
    format!("evloop.load.agent.{id}")
}

/// The subject every agent of run `run` listens on.
pub(crate) fn run_subject(run: &str) -> String {
    format!("evloop.load.run.{run}")
}

/// The coordinator of run `run`'s own subject.
pub(crate) fn coordinator_subject(run: &str) -> String {
    format!("evloop.load.coordinator.{run}")
}

/// A random id (16 hex digits): a run's, an agent's.
pub(crate) fn random_id() -> String {
    format!("{:016x}", crate::sys::random_u64())
}

/// The wall clock, in ns since 1970: what hosts can compare (roughly), and what the start
/// instant of a run is given in, each agent's in its own clock (see [`ClockOffset`]).
pub(crate) fn wall_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_nanos() as u64)
}

/// What a coordinator says to agents.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ToAgent {
    /// Who is free? Answered [`ToCoordinator::Here`] by every idle agent.
    Hello {
        run: String,
        protocol: u32,
        /// The coordinator's wall clock as it sent this (a clock sample).
        sent_ns: u64,
    },
    /// Run your share of `run`: one loader process per element of `parts`, each with those
    /// `evloop-load` flags.
    Assign {
        run: String,
        /// The agent's place among them, and how many there are.
        index: u32,
        agents: u32,
        parts: Vec<Vec<String>>,
        /// How long the agent may hear nothing from the coordinator before it gives up the
        /// run (the coordinator gives up on an agent after as long).
        timeout_ms: u64,
    },
    /// What time is it? (A clock sample.)
    Clock { run: String, sent_ns: u64 },
    /// Start sending at `start_ns`, on the agent's own wall clock; `members` connections are
    /// up over every agent (a room's size).
    Go { run: String, start_ns: u64, members: u64 },
    /// Every agent has stopped sending: `lines` were sent in all (a broadcast's members
    /// then know every delivery they are owed).
    Lines { run: String, lines: u64 },
    /// The coordinator is alive.
    Tick { run: String },
    /// Stop now, and send the result so far.
    Stop { run: String },
    /// Send the result (again): not all of it came.
    ResultWanted { run: String },
    /// The run is over for you: forget it.
    Done { run: String },
}

impl ToAgent {
    /// The run it is about.
    pub fn run(&self) -> &str {
        match self {
            ToAgent::Hello { run, .. }
            | ToAgent::Assign { run, .. }
            | ToAgent::Clock { run, .. }
            | ToAgent::Go { run, .. }
            | ToAgent::Lines { run, .. }
            | ToAgent::Tick { run }
            | ToAgent::Stop { run }
            | ToAgent::ResultWanted { run }
            | ToAgent::Done { run } => run,
        }
    }
}

/// Where an agent is in a run.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub(crate) enum Phase {
    /// Its loader processes are connecting.
    Connecting,
    /// Its connections are up (this many came up): waiting for the go.
    Connected { established: u64 },
    /// Told to go (at the start instant, or at once if that had passed).
    Running,
    /// Done sending, its connections held (`--hold`).
    Holding,
    /// Its result is ready (or it failed: a `failed` message said why).
    Finished,
}

/// What an agent says to a coordinator.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ToCoordinator {
    /// I am free, and here: the answer to a hello.
    Here {
        run: String,
        /// The agent's subject is `evloop.load.agent.<id>`.
        id: String,
        name: String,
        host: String,
        protocol: u32,
        version: String,
        /// `--sources` given to the agent: its share connects from these.
        sources: Vec<IpAddr>,
        /// The hello's `sent_ns`, and the agent's wall clock as it answered.
        asked_ns: u64,
        wall_ns: u64,
    },
    /// The answer to a clock request.
    Clock { run: String, id: String, asked_ns: u64, wall_ns: u64 },
    /// Once a second on a run, and on every change: where it is, its progress, and once all
    /// its loader processes have stopped sending, the lines they sent.
    Status {
        run: String,
        id: String,
        phase: Phase,
        progress: Snapshot,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lines: Option<u64>,
    },
    /// Chunk `chunk` of `chunks` of its result ([`AgentResult`] as JSON).
    Result { run: String, id: String, chunk: u32, chunks: u32, data: String },
    /// Its share could not run, or ended before its result.
    Failed { run: String, id: String, why: String },
}

impl ToCoordinator {
    /// The run it is about.
    pub fn run(&self) -> &str {
        match self {
            ToCoordinator::Here { run, .. }
            | ToCoordinator::Clock { run, .. }
            | ToCoordinator::Status { run, .. }
            | ToCoordinator::Result { run, .. }
            | ToCoordinator::Failed { run, .. } => run,
        }
    }

    /// The agent it is from.
    pub fn agent(&self) -> &str {
        match self {
            ToCoordinator::Here { id, .. }
            | ToCoordinator::Clock { id, .. }
            | ToCoordinator::Status { id, .. }
            | ToCoordinator::Result { id, .. }
            | ToCoordinator::Failed { id, .. } => id,
        }
    }
}

/// An agent's result: its loader processes' merged, and how to read its clock.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct AgentResult {
    /// Its processes' results, merged (histograms whole).
    pub result: PartResult,
    /// Its wall clock minus its monotonic clock, in ns, as it sent this: with the clock
    /// offset, what turns its monotonic times (connect phase, last reply) into the
    /// coordinator's.
    pub wall_minus_monotonic_ns: i64,
}

/// A message as bytes.
pub(crate) fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    serde_json::to_vec(message).expect("a message serializes")
}

/// A message from bytes; `None` for anything else (another tool on the subject).
pub(crate) fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Option<T> {
    serde_json::from_slice(bytes).ok()
}

/// `text` in chunks of at most [`CHUNK`] bytes, cut between characters.
pub(crate) fn chunks(text: &str) -> Vec<&str> {
    let mut chunks = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.len().min(CHUNK);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        chunks.push(&rest[..end]);
        rest = &rest[end..];
    }
    if chunks.is_empty() {
        chunks.push("");
    }
    chunks
}

/// An agent's clock against the coordinator's, from request and answer times (NTP's
/// arithmetic): the agent answered at `wall_ns` on its clock a request sent at `asked_ns`
/// and heard back at `heard_ns` on the coordinator's. Of several samples the one with the
/// shortest round trip is kept: its error is at most half of that round trip (less, unless
/// the two ways take very different times).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ClockOffset {
    /// The agent's clock minus the coordinator's, in ns.
    pub offset_ns: i64,
    /// The round trip it was measured over, in ns; `u64::MAX` before any sample.
    pub round_trip_ns: u64,
    /// Samples taken.
    pub samples: u32,
}

impl ClockOffset {
    /// No sample yet.
    pub fn unknown() -> ClockOffset {
        ClockOffset { offset_ns: 0, round_trip_ns: u64::MAX, samples: 0 }
    }

    /// Takes a sample, if it is better than the one held.
    pub fn sample(&mut self, asked_ns: u64, wall_ns: u64, heard_ns: u64) {
        let Some(round_trip_ns) = heard_ns.checked_sub(asked_ns) else { return };
        self.samples += 1;
        if round_trip_ns < self.round_trip_ns {
            let midpoint = i128::from(asked_ns) + i128::from(round_trip_ns) / 2;
            self.offset_ns = (i128::from(wall_ns) - midpoint) as i64;
            self.round_trip_ns = round_trip_ns;
        }
    }

    /// Whether any sample came.
    pub fn known(&self) -> bool {
        self.round_trip_ns != u64::MAX
    }

    /// `coordinator_ns` on the coordinator's wall clock, on the agent's.
    pub fn on_agent_clock(self, coordinator_ns: u64) -> u64 {
        (i128::from(coordinator_ns) + i128::from(self.offset_ns)).max(0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Messages survive the trip through JSON as they were.
    #[test]
    fn messages_round_trip() {
        let to_agent = [
            ToAgent::Hello { run: "r".into(), protocol: PROTOCOL, sent_ns: 5 },
            ToAgent::Assign {
                run: "r".into(),
                index: 1,
                agents: 2,
                parts: vec![vec!["--connections".into(), "5".into()]],
                timeout_ms: 5000,
            },
            ToAgent::Go { run: "r".into(), start_ns: 9, members: 10 },
            ToAgent::Lines { run: "r".into(), lines: 7 },
            ToAgent::Done { run: "r".into() },
        ];
        for message in to_agent {
            assert_eq!(decode::<ToAgent>(&encode(&message)), Some(message));
        }
        let status = ToCoordinator::Status {
            run: "r".into(),
            id: "a".into(),
            phase: Phase::Connected { established: 7 },
            progress: Snapshot::default(),
            lines: Some(3),
        };
        assert_eq!(decode::<ToCoordinator>(&encode(&status)), Some(status));
        assert_eq!(decode::<ToAgent>(b"{\"type\":\"launch\"}"), None);
        assert_eq!(decode::<ToAgent>(b"PING"), None);
    }

    /// Chunks cover the text exactly, each within the limit, never inside a character.
    #[test]
    fn chunks_cut_between_characters() {
        let text: String = "é".repeat(CHUNK) + "abc";
        let pieces = chunks(&text);
        assert!(pieces.iter().all(|piece| piece.len() <= CHUNK));
        assert_eq!(pieces.concat(), text);
        assert_eq!(pieces.len(), 3);
        assert_eq!(chunks(""), [""]);
    }

    /// The offset is the agent's clock against the midpoint of the round trip, from the
    /// sample with the shortest one.
    #[test]
    fn clock_offset_takes_the_shortest_round_trip() {
        let mut offset = ClockOffset::unknown();
        assert!(!offset.known());
        // The agent's clock 1 s ahead; a 10 ms round trip, answered in its middle.
        offset.sample(100_000_000, 1_105_000_000, 110_000_000);
        assert_eq!(offset.offset_ns, 1_000_000_000);
        // A slower sample, answered late, is not taken.
        offset.sample(200_000_000, 1_290_000_000, 300_000_000);
        assert_eq!((offset.offset_ns, offset.round_trip_ns), (1_000_000_000, 10_000_000));
        // A faster one is; an agent behind gives a negative offset.
        offset.sample(400_000_000, 399_000_000, 402_000_000);
        assert_eq!((offset.offset_ns, offset.round_trip_ns), (-2_000_000, 2_000_000));
        assert_eq!(offset.on_agent_clock(1_000_000_000), 998_000_000);
        // An answer heard before it was asked (a clock stepped) is no sample.
        offset.sample(500, 0, 400);
        assert_eq!(offset.round_trip_ns, 2_000_000);
    }
}
