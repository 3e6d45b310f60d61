//! `evloop-load --agent nats://HOST:PORT`: a loader that waits on NATS for runs, one at a
//! time, and runs its share of each as loader processes (`drivers/processes.rs`), relaying
//! their barrier and their results to the coordinator.
//!
//! ```text
//! idle ──assign──► connecting ──all up──► connected ──go at the instant──► running
//!                                                          (holding) ──► finished ──done──► idle
//! ```
//!
//! An agent that hears nothing from its coordinator for the run's timeout gives the run up
//! (its processes stopped, killed) and is idle again: a coordinator killed mid-run leaves no
//! load behind.

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::{Events, Poll, Token, Waker};

use super::bus::{Bus, Message, Turn};
use super::wire::{self, AgentResult, Phase, ToAgent, ToCoordinator};
use crate::backplane::BackplaneUrls;
use crate::load::clock::now_ns;
use crate::load::drivers::processes::{Children, PartResult, Said, go_line};
use crate::load::progress::Snapshot;

const BUS: Token = Token(0);
/// Woken by the threads that read the loader processes.
const CHILDREN: Token = Token(1);
/// How often an agent on a run says where it is (its heartbeat).
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// The longest sleep: how soon a stop (SIGINT, SIGTERM) is seen.
const LONGEST_WAIT: Duration = Duration::from_millis(100);
/// Stopped by a signal mid-run, how long the agent waits for its processes' results, to
/// send them, before it exits anyway.
const LAST_WORD_WAIT: Duration = Duration::from_secs(3);
/// How long the NATS link may be down at the start before the agent says so.
const SAY_DOWN_AFTER: Duration = Duration::from_secs(5);

/// How an agent is started.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AgentOptions {
    /// The NATS servers (any of one cluster).
    pub urls: BackplaneUrls,
    /// Its name in reports; `None`: the host name and the process id.
    pub name: Option<String>,
    /// Local addresses its share connects from (`--sources`), whatever the coordinator's
    /// (they are told to it, which builds the agent's share with them).
    pub sources: Vec<IpAddr>,
    /// The `evloop-load` binary, started for each loader process.
    pub program: PathBuf,
    /// How often the NATS link is pinged when idle, and how long an answer may take.
    pub ping: Duration,
}

impl AgentOptions {
    /// Options for an agent on `urls`, starting `program` for its loader processes.
    pub fn new(urls: BackplaneUrls, program: PathBuf) -> AgentOptions {
        AgentOptions { urls, name: None, sources: Vec::new(), program, ping: Duration::from_secs(2) }
    }
}

/// Runs an agent until `stop` is set. `say` is given a line for people (`evloop-load` prints
/// them on stdout): `agent NAME ready` once it is subscribed, then one as each run ends
/// (`agent NAME finished run RUN`, or `agent NAME gave run RUN up: ...`).
pub fn run_agent(options: &AgentOptions, stop: &AtomicBool, say: &mut dyn FnMut(&str)) -> io::Result<()> {
    let host = host_name();
    let name = options.name.clone().unwrap_or_else(|| format!("{host}-{}", std::process::id()));
    let mut poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), CHILDREN)?);
    let id = wire::random_id();
    let mut bus = Bus::new(&options.urls, &format!("evloop-load-agent-{name}"), BUS, options.ping);
    bus.subscribe(wire::HELLO);
    bus.subscribe(&wire::agent_subject(&id));
    let mut agent = Agent { options, id, name, host, run: None, waker };
    let mut events = Events::with_capacity(64);
    let mut received = Vec::new();
    let (started, mut said_ready, mut said_down) = (Instant::now(), false, false);
    let mut stopping_since: Option<Instant> = None;
    loop {
        let mut wait = bus.next_deadline().saturating_duration_since(Instant::now()).min(LONGEST_WAIT);
        if let Some(run) = &agent.run {
            wait = wait.min(run.next_deadline().saturating_duration_since(Instant::now()));
        }
        if let Err(error) = poll.poll(&mut events, Some(wait)) {
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
        let bus_ready = events.iter().any(|event| event.token() == BUS);
        match bus.turn(poll.registry(), bus_ready, &mut received) {
            Turn::Up if !said_ready => {
                said_ready = true;
                say(&format!("agent {} ready", agent.name));
            }
            Turn::Up => info!("agent back on NATS; server={}", bus.server()),
            Turn::Lost => warn!("agent lost its NATS link; retrying; next={}", bus.server()),
            Turn::Same => {}
        }
        if !said_ready && !said_down && started.elapsed() >= SAY_DOWN_AFTER {
            said_down = true;
            warn!("agent not on NATS yet; still trying; servers={}", options.urls);
        }
        for message in received.drain(..) {
            if let Some(line) = agent.on_message(&mut bus, &message) {
                say(&line);
            }
        }
        agent.on_children(&mut bus);
        if let Some(line) = agent.on_timers(&mut bus) {
            say(&line);
        }
        // A signal: the run (if any) is stopped and its result sent, then the agent exits.
        if stop.load(Ordering::Acquire) {
            let since = *stopping_since.get_or_insert_with(|| {
                if let Some(run) = &mut agent.run {
                    run.tell_children("stop");
                }
                Instant::now()
            });
            let done = agent.run.as_ref().is_none_or(|run| run.phase == Phase::Finished);
            if done || since.elapsed() >= LAST_WORD_WAIT {
                let deadline = Instant::now() + Duration::from_millis(500);
                while bus.flush() > 0 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                return Ok(());
            }
        }
        bus.flush();
    }
}

/// An agent: who it is, and the run it is on.
struct Agent<'a> {
    options: &'a AgentOptions,
    /// Its subject is `evloop.load.agent.<id>`.
    id: String,
    name: String,
    host: String,
    run: Option<Run>,
    waker: Arc<Waker>,
}

/// A run an agent is on.
struct Run {
    id: String,
    /// The coordinator's subject.
    coordinator: String,
    /// The subscription to the run's subject.
    sid: usize,
    children: Option<Children>,
    phase: Phase,
    /// Each loader process's progress, whether it is up (and with how many), whether it
    /// holds, and its result.
    snapshots: Vec<Snapshot>,
    connected: Vec<Option<u64>>,
    holding: Vec<bool>,
    results: Vec<Option<PartResult>>,
    /// Lines each loader process sent, once it stopped sending; their sum once all have.
    stopped: Vec<Option<u64>>,
    lines: Option<u64>,
    /// Why it failed, if it did (said to the coordinator once).
    failed: Option<String>,
    /// The lines in all were passed on to the processes.
    told_lines: bool,
    /// The result, cut into chunks, once all processes gave theirs.
    chunks: Vec<String>,
    /// When the coordinator was last heard, and how long it may be silent.
    heard: Instant,
    timeout: Duration,
    next_status: Instant,
    told_stop: bool,
}

impl Run {
    fn next_deadline(&self) -> Instant {
        self.next_status.min(self.heard + self.timeout)
    }

    fn tell_children(&mut self, word: &str) {
        if word == "stop" {
            if self.told_stop {
                return;
            }
            self.told_stop = true;
        }
        if let Some(children) = &mut self.children {
            children.tell_all(word);
        }
    }

    /// Its progress: its processes' summed.
    fn progress(&self) -> Snapshot {
        let mut total = Snapshot::default();
        self.snapshots.iter().for_each(|snapshot| total.add(snapshot));
        total
    }
}

impl Agent<'_> {
    /// One message from NATS; returns a line for people when a run ends.
    fn on_message(&mut self, bus: &mut Bus, message: &Message) -> Option<String> {
        let Some(said) = wire::decode::<ToAgent>(&message.payload) else {
            debug!("agent: not a message of ours; subject={}", message.subject);
            return None;
        };
        let on_this_run = self.run.as_ref().is_some_and(|run| run.id == said.run());
        if let Some(run) = &mut self.run {
            if on_this_run {
                run.heard = Instant::now();
            }
        }
        match said {
            ToAgent::Hello { run, sent_ns, .. } if self.run.is_none() || on_this_run => {
                let here = ToCoordinator::Here {
                    run: run.clone(),
                    id: self.id.clone(),
                    name: self.name.clone(),
                    host: self.host.clone(),
                    protocol: wire::PROTOCOL,
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    sources: self.options.sources.clone(),
                    asked_ns: sent_ns,
                    wall_ns: wire::wall_ns(),
                };
                bus.publish(&wire::coordinator_subject(&run), &wire::encode(&here));
            }
            ToAgent::Hello { .. } => {}
            // A repeat: the coordinator missed the status that answered it.
            ToAgent::Assign { .. } if on_this_run => self.send_status(bus),
            ToAgent::Assign { run, .. } if self.run.is_some() => {
                let busy = ToCoordinator::Failed {
                    run: run.clone(),
                    id: self.id.clone(),
                    why: format!("busy with another run ({})", self.run.as_ref().map_or("", |run| &run.id)),
                };
                bus.publish(&wire::coordinator_subject(&run), &wire::encode(&busy));
            }
            ToAgent::Assign { run, parts, timeout_ms, index, agents } => {
                info!("agent assigned; run={run} share={}/{agents} processes={}", index + 1, parts.len());
                self.start_run(bus, run, &parts, Duration::from_millis(timeout_ms.max(1)));
            }
            _ if !on_this_run => {}
            ToAgent::Clock { run, sent_ns } => {
                let clock = ToCoordinator::Clock {
                    run: run.clone(),
                    id: self.id.clone(),
                    asked_ns: sent_ns,
                    wall_ns: wire::wall_ns(),
                };
                bus.publish(&wire::coordinator_subject(&run), &wire::encode(&clock));
            }
            ToAgent::Go { start_ns, members, .. } => {
                let run = self.run.as_mut()?;
                if matches!(run.phase, Phase::Connected { .. }) {
                    // The start instant, given on this host's wall clock, on its monotonic
                    // clock: the loader processes wait for it themselves (a timer), so they
                    // start at it, not when they next look.
                    let now_wall = wire::wall_ns();
                    if start_ns < now_wall {
                        warn!("agent told to go late; late_ms={:.1}", (now_wall - start_ns) as f64 / 1e6);
                    }
                    let epoch_ns = now_ns() + start_ns.saturating_sub(now_wall);
                    run.tell_children(&go_line(epoch_ns, members));
                    run.phase = Phase::Running;
                    run.next_status = Instant::now();
                }
            }
            ToAgent::Lines { lines, .. } => {
                let run = self.run.as_mut()?;
                if !run.told_lines {
                    run.told_lines = true;
                    run.tell_children(&format!("lines {lines}"));
                }
            }
            ToAgent::Tick { .. } => {}
            ToAgent::Stop { .. } => {
                if let Some(run) = &mut self.run {
                    run.tell_children("stop");
                }
            }
            ToAgent::ResultWanted { .. } => self.send_result(bus),
            ToAgent::Done { .. } => {
                let run = self.run.take()?;
                bus.unsubscribe(run.sid);
                let how = match (&run.failed, run.phase) {
                    (Some(why), _) => format!(" (its share failed: {why})"),
                    (None, Phase::Finished) => String::new(),
                    (None, _) => " (before its end: the coordinator ended the run)".to_string(),
                };
                return Some(format!("agent {} finished run {}{how}", self.name, run.id));
            }
        }
        None
    }

    /// Starts the loader processes of a run; says so, or why not.
    fn start_run(&mut self, bus: &mut Bus, run: String, parts: &[Vec<String>], timeout: Duration) {
        let coordinator = wire::coordinator_subject(&run);
        let sid = bus.subscribe(&wire::run_subject(&run));
        let count = parts.len();
        let children = Children::start(&self.options.program, parts, Some(self.waker.clone()));
        let now = Instant::now();
        let mut state = Run {
            id: run.clone(),
            coordinator,
            sid,
            children: None,
            phase: Phase::Connecting,
            snapshots: vec![Snapshot::default(); count],
            connected: vec![None; count],
            holding: vec![false; count],
            results: (0..count).map(|_| None).collect(),
            stopped: vec![None; count],
            lines: None,
            failed: None,
            told_lines: false,
            chunks: Vec::new(),
            heard: now,
            timeout,
            next_status: now,
            told_stop: false,
        };
        match children {
            Ok(children) => state.children = Some(children),
            Err(error) => {
                state.phase = Phase::Finished;
                state.failed = Some(format!("cannot start a loader process: {error}"));
            }
        }
        self.run = Some(state);
        self.send_failure(bus);
        self.send_status(bus);
    }

    /// What the loader processes said.
    fn on_children(&mut self, bus: &mut Bus) {
        let Some(run) = &mut self.run else { return };
        let Some(children) = &mut run.children else { return };
        let mut changed = false;
        while let Some((index, said)) = children.next(Duration::ZERO) {
            match said {
                Said::Progress(snapshot) => run.snapshots[index] = snapshot,
                Said::Connected(established) => run.connected[index] = Some(established),
                Said::Holding => run.holding[index] = true,
                Said::Stopped(lines) => run.stopped[index] = Some(lines),
                Said::Result(result) => {
                    run.results[index] = Some(*result);
                    let _ = children.exit_status(index);
                }
                Said::Ended(why) => {
                    let status =
                        children.exit_status(index).map(|status| status.to_string()).unwrap_or_default();
                    run.failed = Some(format!("{why} ({status})"));
                }
            }
            changed = true;
        }
        if !changed {
            return;
        }
        if run.lines.is_none() && run.stopped.iter().all(Option::is_some) {
            run.lines = Some(run.stopped.iter().flatten().sum());
            run.next_status = Instant::now();
        }
        let phase = if run.failed.is_some() || run.results.iter().all(Option::is_some) {
            Phase::Finished
        } else if run.holding.iter().all(|&held| held) {
            Phase::Holding
        } else if run.phase == Phase::Connecting && run.connected.iter().all(Option::is_some) {
            Phase::Connected { established: run.connected.iter().flatten().sum() }
        } else {
            run.phase
        };
        if phase == run.phase {
            if run.next_status <= Instant::now() {
                self.send_status(bus);
            }
            return;
        }
        run.phase = phase;
        if phase == Phase::Finished {
            if run.failed.is_some() {
                // What is left of its processes is stopped: its result will not come.
                run.children = None;
            } else {
                let result = AgentResult {
                    result: PartResult::merge(run.results.iter_mut().filter_map(Option::take)),
                    wall_minus_monotonic_ns: (i128::from(wire::wall_ns()) - i128::from(now_ns())) as i64,
                };
                let json = serde_json::to_string(&result).expect("a result serializes");
                run.chunks = wire::chunks(&json).into_iter().map(str::to_string).collect();
            }
        }
        self.send_failure(bus);
        self.send_result(bus);
        self.send_status(bus);
    }

    /// The go, statuses, and the coordinator's silence; returns a line for people when a run
    /// is given up.
    fn on_timers(&mut self, bus: &mut Bus) -> Option<String> {
        let now = Instant::now();
        let run = self.run.as_mut()?;
        if now >= run.heard + run.timeout {
            let line = format!(
                "agent {} gave run {} up: no word from its coordinator for {:.1} s",
                self.name,
                run.id,
                run.timeout.as_secs_f64()
            );
            warn!("{line}");
            // Dropping the processes stops them (killed if still running).
            let run = self.run.take()?;
            bus.unsubscribe(run.sid);
            return Some(line);
        }
        if now >= run.next_status {
            self.send_status(bus);
        }
        None
    }

    fn send_status(&mut self, bus: &mut Bus) {
        let Some(run) = &mut self.run else { return };
        run.next_status = Instant::now() + STATUS_EVERY;
        let status = ToCoordinator::Status {
            run: run.id.clone(),
            id: self.id.clone(),
            phase: run.phase,
            progress: run.progress(),
            lines: run.lines,
        };
        bus.publish(&run.coordinator, &wire::encode(&status));
    }

    fn send_failure(&mut self, bus: &mut Bus) {
        let Some(run) = &mut self.run else { return };
        if let Some(why) = &run.failed {
            warn!("agent's share of a run failed; run={} why=\"{why}\"", run.id);
            let failed = ToCoordinator::Failed { run: run.id.clone(), id: self.id.clone(), why: why.clone() };
            bus.publish(&run.coordinator, &wire::encode(&failed));
        }
    }

    /// Sends the result, every chunk of it, if it is ready.
    fn send_result(&mut self, bus: &mut Bus) {
        let Some(run) = &self.run else { return };
        let chunks = run.chunks.len() as u32;
        for (index, data) in run.chunks.iter().enumerate() {
            let result = ToCoordinator::Result {
                run: run.id.clone(),
                id: self.id.clone(),
                chunk: index as u32,
                chunks,
                data: data.clone(),
            };
            bus.publish(&run.coordinator, &wire::encode(&result));
        }
    }
}

/// This host's name (the kernel's, as `hostname` prints it), or "agent" if it cannot be read.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "agent".to_string())
}
