//! `evloop-load --coordinate nats://HOST:PORT --agents N`: one run over N agents. The
//! coordinator sends no load: it gathers N free agents, gives each its share (its part of
//! `-c`, `-n`, `--rate`, its own `--sources`, in `--processes` loader processes), waits until
//! every agent's connections are up, starts them all at one instant, shows their progress,
//! and merges their results into one report.
//!
//! ```text
//! gathering ──N agents here──► connecting ──all up──► running ──every result (or agent lost)──► report
//! ```
//!
//! The start instant is given to each agent on its own clock: the coordinator measures each
//! agent's clock against its own from the round trips of hellos and clock requests (see
//! `wire::ClockOffset`), so hosts whose clocks disagree still start together, to within
//! half the shortest round trip. Latency is measured by each agent on its own clock and
//! merged from whole histograms, so no clock's error enters it. The few times that cross
//! hosts (an agent's connect phase, its last reply) are moved onto the coordinator's clock
//! the same way before they are merged.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::{Events, Poll, Token};

use super::bus::{Bus, Message, Turn};
use super::wire::{self, AgentResult, ClockOffset, Phase, ToAgent, ToCoordinator};
use crate::backplane::BackplaneUrls;
use crate::load::clock::now_ns;
use crate::load::config::LoadConfig;
use crate::load::drivers::processes::{PartResult, check_split};
use crate::load::progress::{Progress, Snapshot};
use crate::load::report::{AgentReport, Report};

const BUS: Token = Token(0);
/// How often free agents are asked for while there are too few.
const HELLO_EVERY: Duration = Duration::from_millis(200);
/// How often the agents' clocks are sampled while their connections come up (a request is
/// a few dozen bytes to each agent).
const CLOCK_EVERY: Duration = Duration::from_millis(20);
/// Clock samples of each agent the go waits for (at most [`CLOCK_WAIT`] after the assign):
/// the shortest round trip of ten is a fair one even on a busy host.
const CLOCK_SAMPLES: u32 = 10;
const CLOCK_WAIT: Duration = Duration::from_secs(1);
/// How often the coordinator says it is alive, redraws its progress, and repeats what was
/// not answered (an assign, a go, a stop, a result wanted).
const EVERY_SECOND: Duration = Duration::from_secs(1);
/// The start instant is at least this far ahead of the go, and at least four of the longest
/// round trip to an agent: every agent hears the go before it.
const START_LEAD: Duration = Duration::from_millis(100);
/// The longest sleep of the loop: how soon a stop (SIGINT, SIGTERM) is seen.
const LONGEST_WAIT: Duration = Duration::from_millis(50);
/// After the run, how long the coordinator tries to get its last word (done) out.
const LAST_WORD_WAIT: Duration = Duration::from_millis(500);

/// How a distributed run is coordinated.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CoordinateOptions {
    /// The NATS servers (any of one cluster).
    pub urls: BackplaneUrls,
    /// How many agents the run needs.
    pub agents: u32,
    /// Loader processes per agent.
    pub processes: u32,
    /// An agent not heard from for this long is lost (its share's figures are missing from
    /// the report, which says so); an agent that does not hear from the coordinator for as
    /// long gives the run up.
    pub agent_timeout: Duration,
}

impl CoordinateOptions {
    /// A run over `agents` agents on `urls`, one loader process each, a 5 s timeout.
    pub fn new(urls: BackplaneUrls, agents: u32) -> CoordinateOptions {
        CoordinateOptions { urls, agents, processes: 1, agent_timeout: Duration::from_secs(5) }
    }
}

/// One agent of the run, as the coordinator follows it.
#[derive(Debug)]
struct Member {
    /// Its subject is `evloop.load.agent.<id>`.
    id: String,
    name: String,
    host: String,
    /// Its share of the run, and its loader processes' flags.
    share: LoadConfig,
    parts: Vec<Vec<String>>,
    clock: ClockOffset,
    /// Where it said it is; `None` until its first status.
    phase: Option<Phase>,
    /// The lines its loader processes sent, once all stopped sending.
    lines: Option<u64>,
    progress: Snapshot,
    heard: Instant,
    /// Its result's chunks as they come, and the result once all have.
    chunks: Vec<Option<String>>,
    result: Option<AgentResult>,
    /// Why it has no result: it failed, or went silent.
    failed: Option<String>,
    lost: bool,
    /// When to repeat what it has not answered.
    next_repeat: Instant,
}

impl Member {
    /// Whether nothing more is awaited from it.
    fn settled(&self) -> bool {
        self.result.is_some() || self.failed.is_some() || self.lost
    }
}

/// An agent that answered a hello.
#[derive(Debug)]
struct Candidate {
    id: String,
    name: String,
    host: String,
    sources: Vec<IpAddr>,
    version: String,
    clock: ClockOffset,
}

/// Runs `config` over `options.agents` agents and reports on it as one run. `progress`
/// turns the live line on stderr on or off; once `stop` is set, the agents are told to stop
/// and the report covers the run so far.
pub fn coordinate(
    config: &LoadConfig,
    options: &CoordinateOptions,
    progress: bool,
    stop: &AtomicBool,
) -> io::Result<Report> {
    config.validate().map_err(|message| io::Error::new(io::ErrorKind::InvalidInput, message))?;
    let shares = options.agents.saturating_mul(options.processes);
    check_split(config, shares, "--agents times --processes (times --threads)")?;
    let mut coordinator = Coordinator::new(config, options, progress)?;
    let candidates = coordinator.gather(stop)?;
    coordinator.assign(candidates)?;
    let outcome = coordinator.follow(stop);
    coordinator.farewell();
    outcome?;
    Ok(coordinator.report(stop.load(Ordering::Acquire)))
}

/// See the module documentation.
struct Coordinator<'a> {
    config: &'a LoadConfig,
    options: &'a CoordinateOptions,
    run: String,
    bus: Bus,
    poll: Poll,
    events: Events,
    received: Vec<Message>,
    members: Vec<Member>,
    line: Progress,
    progress: bool,
    /// The start instant, on the coordinator's wall clock; 0 before the go.
    start_wall_ns: u64,
    /// Connections up over every agent at the go.
    members_up: u64,
}

impl<'a> Coordinator<'a> {
    fn new(
        config: &'a LoadConfig,
        options: &'a CoordinateOptions,
        progress: bool,
    ) -> io::Result<Coordinator<'a>> {
        let run = wire::random_id();
        let mut bus = Bus::new(&options.urls, &format!("evloop-load-coordinator-{run}"), BUS, ping(options));
        bus.subscribe(&wire::coordinator_subject(&run));
        Ok(Coordinator {
            config,
            options,
            bus,
            poll: Poll::new()?,
            events: Events::with_capacity(64),
            received: Vec::new(),
            members: Vec::new(),
            line: Progress::new(progress),
            progress,
            run,
            start_wall_ns: 0,
            members_up: 0,
        })
    }

    /// One turn of the loop: waits for the bus (at most `wait`), and returns what came.
    fn turn(&mut self, wait: Duration) -> io::Result<Vec<(ToCoordinator, u64)>> {
        let wait =
            wait.min(LONGEST_WAIT).min(self.bus.next_deadline().saturating_duration_since(Instant::now()));
        // What was published goes out before the wait: a clock request waiting in the
        // buffer would count its wait in the round trip, and skew the offset by half of it.
        self.bus.flush();
        if let Err(error) = self.poll.poll(&mut self.events, Some(wait)) {
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
        let ready = self.events.iter().any(|event| event.token() == BUS);
        match self.bus.turn(self.poll.registry(), ready, &mut self.received) {
            Turn::Up => info!("coordinator on NATS; server={}", self.bus.server()),
            Turn::Lost => warn!("coordinator lost its NATS link; retrying; next={}", self.bus.server()),
            Turn::Same => {}
        }
        let heard_ns = wire::wall_ns();
        let mut said = Vec::new();
        for message in self.received.drain(..) {
            match wire::decode::<ToCoordinator>(&message.payload) {
                Some(message) if message.run() == self.run => said.push((message, heard_ns)),
                Some(_) => {}
                None => debug!("coordinator: not a message of ours; subject={}", message.subject),
            }
        }
        Ok(said)
    }

    fn publish(&mut self, subject: &str, message: &ToAgent) {
        self.bus.publish(subject, &wire::encode(message));
    }

    /// Asks for free agents until enough answered, or `--connect-timeout` passed.
    fn gather(&mut self, stop: &AtomicBool) -> io::Result<Vec<Candidate>> {
        let wanted = self.options.agents as usize;
        let deadline = Instant::now() + self.config.connect_timeout;
        let mut next_hello = Instant::now();
        let mut here: Vec<Candidate> = Vec::new();
        let mut refused: Vec<String> = Vec::new();
        loop {
            let now = Instant::now();
            if self.bus.is_up() && now >= next_hello {
                next_hello = now + HELLO_EVERY;
                let hello = ToAgent::Hello {
                    run: self.run.clone(),
                    protocol: wire::PROTOCOL,
                    sent_ns: wire::wall_ns(),
                };
                self.publish(wire::HELLO, &hello);
            }
            for (said, heard_ns) in self.turn(next_hello.saturating_duration_since(now))? {
                let ToCoordinator::Here {
                    id, name, host, protocol, version, sources, asked_ns, wall_ns, ..
                } = said
                else {
                    continue;
                };
                if protocol != wire::PROTOCOL {
                    let why = format!("{name} speaks protocol {protocol} (evloop-load {version})");
                    if !refused.contains(&why) {
                        refused.push(why);
                    }
                    continue;
                }
                let known = here.iter().position(|candidate| candidate.id == id);
                let index = match known {
                    Some(index) => index,
                    None if here.len() < wanted => {
                        info!("agent here; name={name} host={host}");
                        here.push(Candidate {
                            id,
                            name,
                            host,
                            sources,
                            version,
                            clock: ClockOffset::unknown(),
                        });
                        here.len() - 1
                    }
                    None => continue,
                };
                here[index].clock.sample(asked_ns, wall_ns, heard_ns);
            }
            if here.len() == wanted {
                return check_names(here);
            }
            if stop.load(Ordering::Acquire) {
                return Err(io::Error::other(format!(
                    "stopped while waiting for agents: {} of {wanted} had come",
                    here.len()
                )));
            }
            if Instant::now() >= deadline {
                let names: Vec<&str> = here.iter().map(|candidate| candidate.name.as_str()).collect();
                let mut why = if self.bus.is_up() {
                    format!(
                        "only {} of {wanted} agents came within --connect-timeout ({:.1} s){}{}",
                        here.len(),
                        self.config.connect_timeout.as_secs_f64(),
                        if names.is_empty() { "" } else { ": " },
                        names.join(", ")
                    )
                } else {
                    format!(
                        "cannot reach NATS at {} within --connect-timeout ({:.1} s)",
                        self.options.urls,
                        self.config.connect_timeout.as_secs_f64()
                    )
                };
                if !refused.is_empty() {
                    why.push_str(&format!(
                        "; not taken, as this coordinator speaks protocol {}: {}",
                        wire::PROTOCOL,
                        refused.join(", ")
                    ));
                }
                return Err(io::Error::other(why));
            }
        }
    }

    /// Gives each agent its share of the run.
    fn assign(&mut self, candidates: Vec<Candidate>) -> io::Result<()> {
        let count = candidates.len() as u32;
        let processes = self.options.processes;
        let now = Instant::now();
        for (index, candidate) in candidates.into_iter().enumerate() {
            let mut share = self.config.part(index as u32, count);
            if !candidate.sources.is_empty() {
                share.sources = candidate.sources.clone();
            }
            share.validate().map_err(|why| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("agent {}'s share: {why}", candidate.name),
                )
            })?;
            let parts = (0..processes).map(|part| share.part(part, processes).to_args()).collect();
            debug!("agent's share; name={} version={}", candidate.name, candidate.version);
            self.members.push(Member {
                id: candidate.id,
                name: candidate.name,
                host: candidate.host,
                share,
                parts,
                clock: candidate.clock,
                phase: None,
                lines: None,
                progress: Snapshot::default(),
                heard: now,
                chunks: Vec::new(),
                result: None,
                failed: None,
                lost: false,
                next_repeat: now,
            });
        }
        Ok(())
    }

    /// Follows the run from the assigns to the last result.
    fn follow(&mut self, stop: &AtomicBool) -> io::Result<()> {
        let timeout = self.options.agent_timeout;
        let run_subject = wire::run_subject(&self.run);
        let started = Instant::now();
        let (mut next_clock, mut next_tick) = (started, started + EVERY_SECOND);
        let mut went: Option<Instant> = None;
        let (mut told_stop, mut next_stop) = (false, started);
        let mut announced_hold = self.config.hold.is_zero();
        let mut told_lines: Option<u64> = None;
        loop {
            let now = Instant::now();
            // Repeats: the assign until the agent's status names the run, the go until it
            // runs, the result until it all came.
            for index in 0..self.members.len() {
                let member = &self.members[index];
                if member.settled() || now < member.next_repeat {
                    continue;
                }
                let subject = wire::agent_subject(&member.id);
                let message = match (member.phase, went) {
                    (None, _) => Some(ToAgent::Assign {
                        run: self.run.clone(),
                        index: index as u32,
                        agents: self.members.len() as u32,
                        parts: member.parts.clone(),
                        timeout_ms: timeout.as_millis() as u64,
                    }),
                    (Some(Phase::Connected { .. }), Some(_)) => Some(ToAgent::Go {
                        run: self.run.clone(),
                        start_ns: self.start_for(index),
                        members: self.members_up,
                    }),
                    (Some(Phase::Finished), _) => Some(ToAgent::ResultWanted { run: self.run.clone() }),
                    _ => None,
                };
                self.members[index].next_repeat = now + EVERY_SECOND;
                if let Some(message) = message {
                    self.publish(&subject, &message);
                }
            }
            // Until the go, and only until every agent's clock has its samples.
            let sampling = self.members.iter().any(|member| member.clock.samples < CLOCK_SAMPLES);
            if went.is_none() && sampling && now >= next_clock {
                next_clock = now + CLOCK_EVERY;
                let clock = ToAgent::Clock { run: self.run.clone(), sent_ns: wire::wall_ns() };
                self.publish(&run_subject, &clock);
                self.bus.flush();
            }
            if now >= next_tick {
                next_tick = now + EVERY_SECOND;
                self.publish(&run_subject, &ToAgent::Tick { run: self.run.clone() });
                self.show_progress();
                told_lines = None;
            }
            // Every agent stopped sending: the lines in all, until every agent is done (a
            // broadcast's members drain against it). A lost agent counts with what it last
            // said it sent.
            let all_stopped = self
                .members
                .iter()
                .all(|member| member.lines.is_some() || member.lost || member.failed.is_some());
            if all_stopped && told_lines.is_none() && !self.members.iter().all(Member::settled) {
                let lines =
                    self.members.iter().map(|member| member.lines.unwrap_or(member.progress.sent)).sum();
                told_lines = Some(lines);
                self.publish(&run_subject, &ToAgent::Lines { run: self.run.clone(), lines });
            }
            if stop.load(Ordering::Acquire) && (!told_stop || now >= next_stop) {
                told_stop = true;
                next_stop = now + EVERY_SECOND;
                self.publish(&run_subject, &ToAgent::Stop { run: self.run.clone() });
            }
            for (said, heard_ns) in self.turn(LONGEST_WAIT)? {
                self.on_message(said, heard_ns)?;
            }
            let now = Instant::now();
            for member in &mut self.members {
                if !member.settled() && now >= member.heard + timeout {
                    warn!("agent lost; name={} silent_s={:.1}", member.name, timeout.as_secs_f64());
                    member.lost = true;
                    member.failed = Some(format!("no word from it for {:.1} s", timeout.as_secs_f64()));
                }
            }
            let all_up =
                self.members.iter().all(|member| matches!(member.phase, Some(Phase::Connected { .. })));
            if went.is_none() && self.members.iter().any(|member| member.failed.is_some()) {
                let (name, why) = self
                    .members
                    .iter()
                    .find_map(|member| Some((member.name.clone(), member.failed.clone()?)))
                    .expect("one failed");
                return Err(io::Error::other(format!("agent {name} could not start its share: {why}")));
            }
            let clocks_known = self.members.iter().all(|member| member.clock.samples >= CLOCK_SAMPLES);
            if went.is_none() && all_up && (clocks_known || started.elapsed() >= CLOCK_WAIT) {
                went = Some(self.go());
            }
            if !announced_hold
                && self.members.iter().all(|member| member.settled() || member.phase == Some(Phase::Holding))
                && self.members.iter().any(|member| member.phase == Some(Phase::Holding))
            {
                announced_hold = true;
                self.line.finish();
                let established: u64 = self.members.iter().map(|member| member.progress.established).sum();
                eprintln!(
                    "evloop-load: holding {established} connections for {:.1} s",
                    self.config.hold.as_secs_f64()
                );
            }
            if self.members.iter().all(Member::settled) {
                self.line.finish();
                return Ok(());
            }
        }
    }

    /// One message from an agent of the run.
    fn on_message(&mut self, said: ToCoordinator, heard_ns: u64) -> io::Result<()> {
        let Some(index) = self.members.iter().position(|member| member.id == said.agent()) else {
            return Ok(());
        };
        let member = &mut self.members[index];
        if member.lost {
            return Ok(());
        }
        member.heard = Instant::now();
        match said {
            ToCoordinator::Clock { asked_ns, wall_ns, .. } => {
                member.clock.sample(asked_ns, wall_ns, heard_ns)
            }
            ToCoordinator::Here { asked_ns, wall_ns, .. } => member.clock.sample(asked_ns, wall_ns, heard_ns),
            ToCoordinator::Status { phase, progress, lines, .. } => {
                member.lines = member.lines.or(lines);
                if member.phase != Some(phase) {
                    debug!("agent phase; name={} phase={phase:?}", member.name);
                    // An answer: the next repeat (if any) waits a second from now.
                    member.next_repeat = Instant::now() + EVERY_SECOND;
                }
                member.phase = Some(phase);
                member.progress = progress;
            }
            ToCoordinator::Failed { why, .. } => {
                warn!("agent failed; name={} why=\"{why}\"", member.name);
                member.failed.get_or_insert(why);
            }
            ToCoordinator::Result { chunk, chunks, data, .. } => {
                if member.result.is_some() {
                    return Ok(());
                }
                if chunks == 0 || chunks > wire::MAX_CHUNKS {
                    warn!("agent sent a result in {chunks} chunks; name={}", member.name);
                    member.failed.get_or_insert(format!("a result in {chunks} chunks"));
                    return Ok(());
                }
                if member.chunks.len() != chunks as usize {
                    member.chunks = vec![None; chunks as usize];
                }
                if let Some(slot) = member.chunks.get_mut(chunk as usize) {
                    *slot = Some(data);
                }
                if member.chunks.iter().all(Option::is_some) {
                    let json: String = member.chunks.iter().flatten().map(String::as_str).collect();
                    match serde_json::from_str::<AgentResult>(&json) {
                        Ok(result) => {
                            member.result = Some(result);
                            let done = ToAgent::Done { run: self.run.clone() };
                            let subject = wire::agent_subject(&self.members[index].id);
                            self.publish(&subject, &done);
                        }
                        Err(error) => {
                            warn!("agent's result does not read; name={} error={error}", member.name);
                            member.chunks.clear();
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Every agent's connections are up: tells each to start at one instant, on its own
    /// clock. Returns when it did.
    fn go(&mut self) -> Instant {
        let longest_round_trip = self
            .members
            .iter()
            .map(|member| if member.clock.known() { member.clock.round_trip_ns } else { 0 })
            .max()
            .unwrap_or(0);
        let lead = START_LEAD.max(Duration::from_nanos(longest_round_trip.saturating_mul(4)));
        self.start_wall_ns = wire::wall_ns() + lead.as_nanos() as u64;
        self.members_up = self
            .members
            .iter()
            .map(|member| match member.phase {
                Some(Phase::Connected { established }) => established,
                _ => 0,
            })
            .sum();
        if self.progress {
            self.line.finish();
            eprintln!(
                "evloop-load: {} of {} connections up on {} agents; sending in {} ms",
                self.members_up,
                self.config.connections,
                self.members.len(),
                lead.as_millis()
            );
        }
        for index in 0..self.members.len() {
            let go = ToAgent::Go {
                run: self.run.clone(),
                start_ns: self.start_for(index),
                members: self.members_up,
            };
            let subject = wire::agent_subject(&self.members[index].id);
            self.publish(&subject, &go);
            self.members[index].next_repeat = Instant::now() + lead + EVERY_SECOND;
        }
        Instant::now()
    }

    /// The start instant on agent `index`'s clock.
    fn start_for(&self, index: usize) -> u64 {
        self.members[index].clock.on_agent_clock(self.start_wall_ns)
    }

    fn show_progress(&mut self) {
        let mut total = Snapshot::default();
        let mut alive = 0;
        for member in &self.members {
            total.add(&member.progress);
            alive += usize::from(!member.lost && member.failed.is_none());
        }
        if total.connections > 0 {
            self.line.tick(&total, &format!("  agents {alive}/{}", self.members.len()));
        }
    }

    /// Tells the agents the run is over for them (a result in, or not), and tries for a
    /// moment to get that out.
    fn farewell(&mut self) {
        let done = ToAgent::Done { run: self.run.clone() };
        self.publish(&wire::run_subject(&self.run.clone()), &done);
        let deadline = Instant::now() + LAST_WORD_WAIT;
        while self.bus.flush() > 0 && Instant::now() < deadline {
            let _ = self.turn(Duration::from_millis(5));
        }
    }

    /// The report: every agent's result merged, and an entry per agent.
    fn report(&mut self, stopped: bool) -> Report {
        let coordinator_wall_minus_monotonic = i128::from(wire::wall_ns()) - i128::from(now_ns());
        let mut results = Vec::new();
        let mut entries = Vec::new();
        for member in &mut self.members {
            let mut entry = AgentReport::named(&member.name, &member.host);
            entry.clock_offset_us = member.clock.offset_ns as f64 / 1000.0;
            entry.clock_round_trip_us =
                if member.clock.known() { member.clock.round_trip_ns as f64 / 1000.0 } else { 0.0 };
            if let Some(AgentResult { mut result, wall_minus_monotonic_ns }) = member.result.take() {
                // Its monotonic times onto the coordinator's monotonic clock.
                let delta = i128::from(wall_minus_monotonic_ns)
                    - i128::from(member.clock.offset_ns)
                    - coordinator_wall_minus_monotonic;
                result.tally.rebase(delta as i64);
                let own = Report::new(&member.share, &result.tally, Duration::from_nanos(result.window_ns));
                entry.fill(&own);
                entry.ok = own.ok && member.failed.is_none();
                entry.interrupted = result.interrupted;
                results.push(result);
            }
            entry.error = member.failed.clone();
            entry.lost = member.lost;
            entries.push(entry);
        }
        let total = PartResult::merge(results);
        let mut report = Report::new(self.config, &total.tally, Duration::from_nanos(total.window_ns));
        report.ok &= entries.iter().all(|entry| entry.ok);
        report.interrupted = total.interrupted || stopped;
        report.agents = Some(entries);
        report
    }
}

/// How often the bus pings NATS: often enough that a dead link is found well within the
/// agents' timeout.
fn ping(options: &CoordinateOptions) -> Duration {
    (options.agent_timeout / 3).clamp(Duration::from_millis(200), Duration::from_secs(2))
}

/// Refuses two agents of one name: the report could not tell them apart.
fn check_names(candidates: Vec<Candidate>) -> io::Result<Vec<Candidate>> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for candidate in &candidates {
        *seen.entry(&candidate.name).or_default() += 1;
    }
    if let Some((name, _)) = seen.iter().find(|(_, count)| **count > 1) {
        return Err(io::Error::other(format!(
            "two agents are called {name}: give each its own --agent-name"
        )));
    }
    Ok(candidates)
}
