//! evloop-load: the bundled load generator, itself a mio reactor.
//!
//! It opens many connections, drives a handler's workload over them, verifies every byte of
//! every reply, and reports throughput and latency percentiles. Closed loop (`--pipeline K`
//! requests in flight per connection) measures capacity; open loop (`--rate R`) sends on a
//! fixed schedule whatever the replies do and measures latency from each message's
//! *scheduled* time, so a server stall shows up in the figures instead of quietly slowing
//! the loader down (coordinated omission).
//!
//! ```no_run
//! use evloop::load::{LoadConfig, Stop};
//!
//! let mut config = LoadConfig::default();
//! config.target = "127.0.0.1:7000".parse()?;
//! config.connections = 100;
//! config.stop = Stop::After(std::time::Duration::from_secs(5));
//! let report = evloop::load::run(&config, false)?;
//! println!("{report}");
//! assert!(report.ok, "some reply did not verify");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//! - `config`: the run's settings ([`LoadConfig`]), validated; `plan`: its share per thread.
//! - `engine/`: one reactor thread driving its share of the connections through the phases
//!   of a run, in parts: the connections and their I/O, the schedule, the traffic, what a
//!   workload may do with a connection, connecting, the phases, publishing totals.
//! - `workloads/`: what each workload sends and how it checks what comes back, one module
//!   each behind one trait ([`Workload`] names one): echo, uppercase, sum, broadcast, file,
//!   generic.
//! - [`script`]: the generic workload's flags: requests and replies typed on the command
//!   line (`-m`, `--expect`, `--expect-prefix`, `--latency-marker`, `--preset`), for
//!   servers no one here wrote.
//! - `tally`: what a thread counted and measured; tallies merge.
//! - `report`: the final [`Report`], human and JSON.
//! - `shared`: the few counters threads share.
//! - `socket`: the loader's end of a connection: TCP, Unix stream or UDP.
//! - [`agents`]: load from many hosts: agents that wait on NATS for runs, and the
//!   coordinator that splits one run between them and merges their results.
//! - `drivers/`: runs made of runs, or of processes: [`processes`] (`--processes N`: loader
//!   processes, each a part, merged exactly), [`sweep`] (`--sweep-connections`: a run per
//!   connection count, as CSV and SVG), [`step`] (`--step-members`: rooms grown step by
//!   step until a line's p95 reach passes a limit, as CSV and SVG).
//! - `progress`: the live progress line.
//! - `timer`: exact wakeups with a `timerfd`: open-loop pacing, the loader's deadlines.
//! - `clock`: the monotonic clock in nanoseconds.
//! - `sources`: `--sources` address lists ([`parse_sources`]).
//! - [`chart`]: line charts as SVG, for sweeps and benchmarks.

pub mod agents;
pub mod chart;
mod clock;
mod config;
mod drivers;
mod engine;
mod plan;
mod progress;
mod report;
pub mod script;
mod shared;
mod socket;
mod sources;
mod tally;
mod timer;
pub mod tls;
mod workloads;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

pub use config::{LoadConfig, Stop};
pub use drivers::{processes, step, sweep};
pub use report::{
    AgentReport, Broadcast, Connections, Errors, Messages, Percentiles, Report, SCHEMA, SpectrumPoint,
    Throughput, TlsHandshakes,
};
pub use sources::parse_sources;
pub use tally::{Failures, Mismatch};
pub use workloads::{Workload, WorkloadFlags};

use progress::{Progress, Snapshot};
use shared::{Shared, WholeRun};
use tally::Tally;
use workloads::Exchange;

/// How often the progress line is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// How often a process that is part of a larger run checks whether its connections are up.
const GATE_CHECK_EVERY: Duration = Duration::from_millis(5);

/// Runs the load described by `config` and reports on it. `progress` turns the live line on
/// stderr on or off.
pub fn run(config: &LoadConfig, progress: bool) -> io::Result<Report> {
    run_until(config, progress, Arc::new(AtomicBool::new(false)))
}

/// [`run`], stopped early once `stop` is set (`evloop-load` sets it on SIGINT and SIGTERM):
/// sending stops, the replies on their way get a moment (at most a second) to come, and the
/// report covers the run so far, marked [`Report::interrupted`].
pub fn run_until(config: &LoadConfig, progress: bool, stop: Arc<AtomicBool>) -> io::Result<Report> {
    let hooks = Hooks { progress, parent: None, whole: WholeRun::alone(), stop: stop.clone() };
    let (total, window) = run_threads_of(config, hooks)?;
    let mut report = Report::new(config, &total, window);
    report.interrupted = stop.load(Ordering::Acquire);
    Ok(report)
}

/// The parent of a process that runs one part of a larger run (see `processes.rs`): what
/// the part tells it, and when. What the parent tells the part comes in a [`WholeRun`].
pub(crate) trait Parent {
    /// This process's connections are all up and its run prepared (`established` up):
    /// returns when every part's are, with the go (the start, and the room's size, in the
    /// [`WholeRun`]); only then does sending start.
    fn connected(&mut self, established: usize) -> io::Result<()>;
    /// Its progress, once a second.
    fn progress(&mut self, snapshot: Snapshot);
    /// Every thread has stopped sending; `lines` were sent in all.
    fn stopped(&mut self, lines: u64);
    /// With `--hold`: the run is over and its connections are held.
    fn holding(&mut self, established: usize);
}

/// Runs one part of a multi-process run (see `processes.rs`), talking to its `parent`, told
/// about the whole run in `whole`. Returns the raw tally and window, for the parent to
/// merge. `stop` stops it early, as it does [`run_until`].
pub(crate) fn run_part(
    config: &LoadConfig,
    parent: &mut dyn Parent,
    whole: Arc<WholeRun>,
    stop: Arc<AtomicBool>,
) -> io::Result<(Tally, Duration)> {
    run_threads_of(config, Hooks { progress: false, parent: Some(parent), whole, stop })
}

/// How a run talks to whoever started it.
pub(crate) struct Hooks<'h> {
    /// Whether to draw the live progress line on stderr.
    progress: bool,
    /// A part of a multi-process run: its parent.
    parent: Option<&'h mut dyn Parent>,
    /// What the parent says about the whole run.
    whole: Arc<WholeRun>,
    /// Set from outside: stop, and report the run so far.
    stop: Arc<AtomicBool>,
}

/// Runs the threads of a run (one workload's [`run_threads`], see `workloads::Kind`).
pub(crate) type RunThreads = for<'h> fn(&LoadConfig, Hooks<'h>) -> io::Result<(Tally, Duration)>;

fn run_threads_of(config: &LoadConfig, hooks: Hooks<'_>) -> io::Result<(Tally, Duration)> {
    config.validate().map_err(|message| io::Error::new(io::ErrorKind::InvalidInput, message))?;
    (config.workload.kind().run)(config, hooks)
}

/// Runs `config` with workload `W` on its threads, each a reactor (`engine`), and merges
/// what they counted.
pub(crate) fn run_threads<W: Exchange>(
    config: &LoadConfig,
    hooks: Hooks<'_>,
) -> io::Result<(Tally, Duration)> {
    let Hooks { progress, mut parent, whole, stop } = hooks;
    let plans = config.plans();
    let shared = Shared::new(config.connections as usize, plans.len(), parent.is_none(), stop, whole);
    let run = Arc::new(W::share(config, &plans)?);
    let mut progress = Progress::new(progress);
    let results = thread::scope(|scope| -> io::Result<Vec<io::Result<Tally>>> {
        let (done, finished) = mpsc::channel();
        for plan in plans {
            let (done, shared, run) = (done.clone(), &shared, &run);
            thread::Builder::new()
                .name(format!("evloop-load-{}", plan.index))
                .spawn_scoped(scope, move || {
                    let _ = done.send(engine::run::<W>(config, plan, shared, run));
                })
                .expect("spawn a loader thread");
        }
        drop(done);
        let mut results = Vec::new();
        let mut announced_hold = config.hold.is_zero();
        let (mut awaiting_go, mut said_stopped) = (parent.is_some(), parent.is_none());
        let mut next_tick = Instant::now() + PROGRESS_EVERY;
        while results.len() < config.threads as usize {
            let waiting = awaiting_go || !said_stopped || !announced_hold;
            let wait =
                if waiting { GATE_CHECK_EVERY } else { next_tick.saturating_duration_since(Instant::now()) };
            match finished.recv_timeout(wait) {
                Ok(result) => results.push(result),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if Instant::now() >= next_tick {
                next_tick = Instant::now() + PROGRESS_EVERY;
                let snapshot = Snapshot::of(&shared);
                progress.tick(&snapshot, "");
                if let Some(parent) = &mut parent {
                    parent.progress(snapshot);
                }
            }
            let established = shared.established.load(Ordering::Acquire);
            if awaiting_go && shared.all_prepared() {
                awaiting_go = false;
                if let Some(parent) = &mut parent {
                    parent.connected(established)?;
                }
                // Every part starts at the start its parent named (a moment ahead).
                let epoch_ns = shared.whole.epoch_ns.load(Ordering::Acquire);
                if epoch_ns != 0 {
                    shared.run_start_ns.store(epoch_ns, Ordering::Release);
                }
                shared.go.store(true, Ordering::Release);
            }
            if !said_stopped && shared.all_stopped_sending() {
                said_stopped = true;
                if let Some(parent) = &mut parent {
                    parent.stopped(shared.sent.load(Ordering::Acquire));
                }
            }
            if !announced_hold && shared.holding.load(Ordering::Acquire) == config.threads as usize {
                announced_hold = true;
                progress.finish();
                match &mut parent {
                    Some(parent) => parent.holding(established),
                    None => eprintln!(
                        "evloop-load: holding {established} connections for {:.1} s",
                        config.hold.as_secs_f64()
                    ),
                }
            }
        }
        Ok(results)
    })?;
    progress.finish();
    let mut total = Tally::default();
    for result in results {
        total.merge(&result?);
    }
    let window = measured_window(config, &shared, &total);
    Ok((total, window))
}

/// The window throughput is counted over, from the end of the warmup: the set duration, cut
/// short if sending stopped early (every connection lost or refused), or for `--messages`
/// up to the last measured reply. Nothing sent, nothing measured: zero.
fn measured_window(config: &LoadConfig, shared: &Shared, total: &Tally) -> Duration {
    let run_start = shared.run_start_ns.load(Ordering::Acquire);
    if run_start == 0 || total.sent == 0 {
        return Duration::ZERO;
    }
    match config.stop {
        Stop::After(duration) => {
            let start = run_start + config.warmup.as_nanos() as u64;
            let end = shared.run_end_ns.load(Ordering::Acquire);
            duration.min(Duration::from_nanos(end.saturating_sub(start)))
        }
        Stop::Messages(_) => {
            let start = shared.run_start_ns.load(Ordering::Acquire) + config.warmup.as_nanos() as u64;
            Duration::from_nanos(total.last_reply_ns.saturating_sub(start))
        }
    }
}
