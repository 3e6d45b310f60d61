//! The connection-count benchmark behind docs/benchmarks.md ("Connections"): fill the server
//! with idle connections, check every one answers, measure what they cost (the server's
//! memory, the loader's, the kernel's, the machine's), then measure a few busy clients among
//! them against the same few alone.
//!
//! Run:  cargo run --release --example scale -- --connections 200000
//!       cargo run --release --example scale -- --connections 2000000 --plan   (print the plan only)
//!       cargo run --release --example scale -- --connections 2000000 --hold 90 --record docs/data/scale.csv
//! (two million: `sysctl -w fs.file-max=5000000` first unless run as root, and an idle machine:
//! about 19 GiB of MemAvailable; docs/scaling.md and docs/operations.md say why.)
//!
//! Steps, each bounded in time; a failure is one sentence naming the step and why, and every
//! process started here is stopped (`common::Guard`):
//! 1. plan: workers, loader processes, source addresses and rates from the open-file limit
//!    and the target (the rule below), and whether the machine's memory holds it;
//! 2. start `evloop-server --workers W` and note each worker's memory and descriptors;
//! 3. fill: `evloop-load -c C -n C --hold H` over P processes, connects paced at
//!    `--connect-rate`, then (once all are up) one verified echo each, paced at
//!    `--echo-rate`, then all held idle; the kernel's TCP memory is sampled throughout;
//! 4. hold: server and loader RSS, the kernel's slab and TCP pages, MemAvailable, worker CPU
//!    while idle, and how evenly `SO_REUSEPORT` spread the connections over the workers;
//! 5. busy: `--active` clients at `--rate` among the idle ones, over as many loader
//!    processes as their count needs;
//! 6. after the hold: the same busy clients alone, for comparison.
//!
//! The rule (printed with every run):
//! - each process may hold `L - 32` sockets (`L` the hard open-file limit, which the server
//!   and the loader raise their soft limit to; 32 are kept for the poller, timers, pipes);
//! - loader processes: `ceil(C / (L - 32))`, since the loader splits its connections
//!   exactly; the busy clients get `ceil(A / (L - 32))` of their own;
//! - server workers (`--workers auto`, the default): `SO_REUSEPORT` hands each connection to
//!   a worker by a hash of its addresses and ports, so a worker's share is binomial: mean
//!   `m = (C + A) / W`, spread about `sqrt(m)`. `W` is the fewest workers whose fullest, at
//!   `m + 5 sqrt(m)`, stays within `L - 32` (a worker that is full turns the next client away
//!   with `ERR server full`, however much room the others have);
//! - source addresses: one per 6,000 connections (connect() searches a source's ~28,000
//!   ports and slows as they fill; past them it fails);
//! - rates: connects at `min(40,000, 4,000,000 / (W + P))` a second, first echoes at half
//!   that: the kernel charges a page to every socket with anything queued, so a fill whose
//!   echoes arrive faster than two cores shared by W + P processes answer them queues pages
//!   on hundreds of thousands of sockets at once (gigabytes at two million); paced, what is
//!   queued is the rate times the latency.

use std::collections::VecDeque;
use std::fmt;
use std::io::{BufRead, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::Value;

mod common;
use common::Guard;

/// See the module documentation.
#[derive(Parser, Debug)]
struct Args {
    /// Idle connections to hold
    #[arg(long, default_value_t = 10_000)]
    connections: u32,
    /// Server worker processes: a number, or `auto` for the rule (from the open-file limit and
    /// the connections; not the server's own `--workers auto`, one per core) [default: auto]
    #[arg(long, value_parser = parse_workers)]
    workers: Option<Workers>,
    /// Loader processes for the fill [default: the rule, from the open-file limit]
    #[arg(long)]
    processes: Option<u32>,
    /// Loader source addresses for the fill, e.g. 127.0.0.1-127.0.0.20 [default: one per
    /// 6,000 connections from 127.0.0.1; the busy clients take the next ones]
    #[arg(long)]
    sources: Option<String>,
    /// Seconds to hold the connections idle (memory, idle CPU and the busy clients are
    /// measured meanwhile); at least 30
    #[arg(long, default_value_t = 60)]
    hold: u32,
    /// Busy clients for the latency comparison (default: 1% of the connections, at least 1)
    #[arg(long)]
    active: Option<u32>,
    /// Their total rate, messages per second
    #[arg(long, default_value_t = 10_000)]
    rate: u32,
    /// New connections per second during the fill [default: the rule]
    #[arg(long)]
    connect_rate: Option<u32>,
    /// First echoes per second during the fill, once every connection is up [default: half
    /// the connect rate]
    #[arg(long)]
    echo_rate: Option<u32>,
    /// Server idle timeout in seconds (to show the timer wheel at this count); 0: off
    #[arg(long, default_value_t = 0)]
    idle_timeout: u32,
    /// Print the plan (workers, processes, sources, rates, memory) and exit
    #[arg(long)]
    plan: bool,
    /// Run even if the memory estimate says the machine cannot hold it, to find the ceiling:
    /// the fill still stops with a sentence (and the count reached) once MemAvailable falls
    /// under 512 MiB
    #[arg(long)]
    no_memory_check: bool,
    /// Append this run's figures as a CSV row to FILE (header written if the file is new)
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// Only draw the chart of a recorded CSV into SVG (memory and latency against
    /// connections), then exit: `--chart docs/data/scale.csv=docs/charts/scale.svg`
    #[arg(long, value_name = "CSV=SVG")]
    chart: Option<String>,
}

/// `--workers`: a count, or the rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Workers {
    Auto,
    Count(u32),
}

fn parse_workers(text: &str) -> Result<Workers, String> {
    if text == "auto" {
        return Ok(Workers::Auto);
    }
    match text.parse::<u32>() {
        Ok(count) if (1..=1024).contains(&count) => Ok(Workers::Count(count)),
        _ => Err(format!("'{text}' is not a worker count: give 1 to 1024, or auto (the rule)")),
    }
}

// ----- failures: a phase and a sentence -----

/// The steps of a run, named in every failure.
#[derive(Clone, Copy, Debug)]
enum Phase {
    Plan,
    Build,
    Server,
    Fill,
    Hold,
    Busy,
    Alone,
    Record,
    Chart,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Plan => "plan",
            Phase::Build => "build",
            Phase::Server => "server start",
            Phase::Fill => "fill (connect, echo once, hold)",
            Phase::Hold => "hold (idle measurements)",
            Phase::Busy => "busy clients among the idle",
            Phase::Alone => "busy clients alone",
            Phase::Record => "record",
            Phase::Chart => "chart",
        })
    }
}

/// Why a run stopped.
struct Failure {
    phase: Phase,
    why: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the {} step failed: {}", self.phase, self.why)
    }
}

type Step<T> = Result<T, Failure>;

/// A failure of `phase`, for `map_err`.
fn failed(phase: Phase) -> impl Fn(String) -> Failure {
    move |why| Failure { phase, why }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("scale: {failure}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Step<()> {
    if let Some(chart) = &args.chart {
        let (csv, svg) = chart
            .split_once('=')
            .ok_or_else(|| Failure { phase: Phase::Chart, why: "--chart takes CSV=SVG".to_string() })?;
        return draw_chart(Path::new(csv), Path::new(svg)).map_err(failed(Phase::Chart));
    }
    let plan = Plan::new(args).map_err(failed(Phase::Plan))?;
    plan.print();
    plan.check_machine(!args.no_memory_check).map_err(failed(Phase::Plan))?;
    if args.plan {
        return Ok(());
    }
    common::try_build(&["--bin", "evloop-server", "--bin", "evloop-load"]).map_err(failed(Phase::Build))?;
    // SIGINT or SIGTERM ends the run at the next check, through the same path as a failure,
    // so every process started here is stopped.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(signal, stop.clone());
    }
    let figures = measure(&plan, &stop)?;
    print_tables(&plan, &figures);
    if let Some(path) = &args.record {
        record(path, &plan, &figures).map_err(failed(Phase::Record))?;
    }
    if figures.verified < u64::from(plan.connections) || figures.fill_errors != "none" {
        return Err(Failure {
            phase: Phase::Fill,
            why: format!(
                "{} of {} first echoes verified; failures: {}",
                figures.verified, plan.connections, figures.fill_errors
            ),
        });
    }
    for (phase, busy) in [(Phase::Busy, &figures.busy_among_idle), (Phase::Alone, &figures.busy_alone)] {
        if busy.verified < busy.sent || busy.sent == 0 || busy.errors != "none" {
            return Err(Failure {
                phase,
                why: format!("{} of {} messages verified: {}", busy.verified, busy.sent, busy.errors),
            });
        }
    }
    Ok(())
}

// ----- the plan: the rule -----

/// Descriptors the server and the loader each keep back from their connections (poller,
/// timers, pipes, standard streams, log files).
const RESERVED_DESCRIPTORS: u64 = 32;
/// Headroom for the uneven spread of `SO_REUSEPORT`, in standard deviations of a worker's
/// share: with 100 workers, 5 leaves about one chance in 30,000 that any is full.
const SPREAD_SIGMAS: f64 = 5.0;
/// Connections per loader source address: connect() finds a free port by searching the
/// source's range (28,232 ports by default) and slows sharply as it fills.
const CONNECTIONS_PER_SOURCE: u64 = 6_000;
/// The connect rate with few processes: about 80% of the unpaced accept rate measured with
/// 11 workers and 11 loader processes on this 2-core machine (~50,000/s).
const MAX_CONNECT_RATE: u64 = 40_000;
/// Connects per second times processes: with W + P processes on two cores, each event
/// wakes a process of its own, and the unpaced rate fell from ~50,000/s at 22 processes to
/// ~35,000/s at 224 (18,500/s at a million connections and 106, docs/benchmarks.md);
/// 4,000,000 / (W + P) keeps about half of that in hand.
const RATE_BUDGET: u64 = 4_000_000;
/// The slowest paced rate the rule picks, whatever the process count.
const MIN_CONNECT_RATE: u64 = 2_000;
/// Machine memory one idle connection pair takes, both ends on this machine, all in (the
/// kernel's socket structures for two sockets ~8.0 KB, the server's ~0.2 KB, the loader's
/// ~1 KB): 9.3 KB measured at 200,000, 9.4 KB (MemAvailable 24.2 -> 6.2 GiB) at two million
/// (issue 37). Used to refuse a count the machine cannot hold.
const PAIR_BYTES_ESTIMATE: u64 = 9_500;
/// MemAvailable, in MiB, below which the fill is stopped.
const LOW_MEMORY_MIB: u64 = 512;
/// Memory kept free for everything else on the machine while the connections are held.
const SPARE_BYTES: u64 = 1 << 30;

/// What a run will do, from the flags and the rule.
struct Plan {
    connections: u32,
    active: u32,
    rate: u32,
    hold: Duration,
    idle_timeout: u32,
    /// The hard open-file limit (both binaries raise their soft limit to it).
    file_limit: u64,
    /// Sockets one process may hold.
    per_process: u64,
    workers: u32,
    processes: u32,
    busy_processes: u32,
    sources: String,
    busy_sources: String,
    source_count: u64,
    connect_rate: u32,
    echo_rate: u32,
    /// Each flag the rule chose, for the printout.
    chosen: Vec<String>,
}

impl Plan {
    fn new(args: &Args) -> Result<Plan, String> {
        if args.hold < 30 {
            return Err(format!(
                "--hold {} is too short: the hold must outlast 2 s of settling, 10 s idle and the busy clients' run (their connects, 1 s warmup, 5 s); use 30 or more",
                args.hold
            ));
        }
        if args.connections == 0 || args.rate == 0 {
            return Err("--connections and --rate must be at least 1".to_string());
        }
        let file_limit =
            hard_file_limit().map_err(|error| format!("cannot read the open-file limit: {error}"))?;
        let per_process = file_limit.saturating_sub(RESERVED_DESCRIPTORS).max(1);
        let connections = u64::from(args.connections);
        let active = args.active.unwrap_or((args.connections / 100).max(1));
        let mut chosen = Vec::new();
        let workers = match args.workers.unwrap_or(Workers::Auto) {
            Workers::Count(workers) => workers,
            Workers::Auto => {
                let workers = workers_for(connections + u64::from(active), per_process);
                chosen.push(format!(
                    "--workers {workers}: the fewest whose fullest, at mean + {SPREAD_SIGMAS} sd of SO_REUSEPORT's spread, holds at most {per_process} of the {} connections (with the busy clients): mean {:.0}, fullest ~{:.0}",
                    connections + u64::from(active),
                    mean_share(connections + u64::from(active), workers),
                    fullest_share(connections + u64::from(active), workers)
                ));
                workers
            }
        };
        let processes = match args.processes {
            Some(processes) => processes.max(1),
            None => {
                let processes = processes_for(connections, per_process);
                chosen.push(format!(
                    "--processes {processes}: ceil({connections} / {per_process}); the loader splits its connections exactly"
                ));
                processes
            }
        };
        if connections.div_ceil(u64::from(processes)) > per_process {
            return Err(format!(
                "{processes} loader processes would hold {} connections each, but a process may hold {per_process} (open-file limit {file_limit}): use --processes {} or more",
                connections.div_ceil(u64::from(processes)),
                connections.div_ceil(per_process)
            ));
        }
        // The busy clients are split the same way: 20,000 of them (1% of two million) in one
        // process need more descriptors than the limit allows, and the loader refuses them.
        let busy_processes = processes_for(u64::from(active), per_process);
        let ports = ephemeral_ports();
        let per_source = CONNECTIONS_PER_SOURCE.min(ports / 2).max(1);
        let fill_sources = connections.div_ceil(per_source);
        let busy_source_count = u64::from(active).div_ceil(per_source);
        let (sources, source_count) = match &args.sources {
            Some(sources) => {
                let count = count_sources(sources)?;
                if count * ports < connections {
                    return Err(format!(
                        "{count} source addresses reach the server through at most {} ports ({ports} each, net.ipv4.ip_local_port_range), fewer than {connections} connections: give more --sources (one per {CONNECTIONS_PER_SOURCE} keeps connect() fast)",
                        count * ports
                    ));
                }
                (sources.clone(), count)
            }
            None => {
                chosen.push(format!(
                    "--sources {}: {fill_sources} addresses, one per {per_source} connections (each has {ports} ports to the server)",
                    loopback_range(0, fill_sources)
                ));
                (loopback_range(0, fill_sources), fill_sources)
            }
        };
        // The busy clients connect from addresses of their own, after the fill's.
        let busy_sources = loopback_range(source_count.max(fill_sources), busy_source_count);
        let total_processes = u64::from(workers) + u64::from(processes);
        let connect_rate = match args.connect_rate {
            Some(rate) => rate.max(1),
            None => {
                let rate = connect_rate_for(total_processes);
                chosen.push(format!(
                    "--connect-rate {rate}: min({MAX_CONNECT_RATE}, {RATE_BUDGET} / ({workers} + {processes}) processes)"
                ));
                rate
            }
        };
        let echo_rate = match args.echo_rate {
            Some(rate) => rate.max(1),
            None => {
                let rate = (connect_rate / 2).max(1);
                chosen.push(format!(
                    "--echo-rate {rate}: half the connect rate (each echo is two deliveries, and queued echoes are what costs kernel pages)"
                ));
                rate
            }
        };
        Ok(Plan {
            connections: args.connections,
            active,
            rate: args.rate,
            hold: Duration::from_secs(u64::from(args.hold)),
            idle_timeout: args.idle_timeout,
            file_limit,
            per_process,
            workers,
            processes,
            busy_processes,
            sources,
            busy_sources,
            source_count,
            connect_rate,
            echo_rate,
            chosen,
        })
    }

    /// How long the fill should take at the planned rates.
    fn fill_estimate(&self) -> Duration {
        let connections = f64::from(self.connections);
        Duration::from_secs_f64(
            connections / f64::from(self.connect_rate) + connections / f64::from(self.echo_rate),
        )
    }

    fn print(&self) {
        eprintln!(
            "scale: {} connections (+{} busy) on {} workers, {} loader processes (+{} for the busy clients), sources {} ({} addresses), busy sources {}; open-file limit {} ({} sockets a process)",
            self.connections,
            self.active,
            self.workers,
            self.processes,
            self.busy_processes,
            self.sources,
            self.source_count,
            self.busy_sources,
            self.file_limit,
            self.per_process
        );
        for line in &self.chosen {
            eprintln!("scale:   {line}");
        }
        let expected = fullest_share(u64::from(self.connections + self.active), self.workers);
        if self.workers > 1 && expected > self.per_process as f64 {
            eprintln!(
                "scale: warning: with {} workers the fullest is likely to get ~{expected:.0} connections, past its {}: it will turn clients away (ERR server full) while others have room; the rule gives --workers {}",
                self.workers,
                self.per_process,
                workers_for(u64::from(self.connections + self.active), self.per_process)
            );
        }
        eprintln!(
            "scale: fill at {} connects/s and {} echoes/s: about {:.0} s; then a {} s hold",
            self.connect_rate,
            self.echo_rate,
            self.fill_estimate().as_secs_f64(),
            self.hold.as_secs()
        );
    }

    /// Whether this machine can hold the plan: memory, and the system-wide file limit. A
    /// count it cannot hold is refused here, before anything starts.
    /// `memory_check` false (`--no-memory-check`): a count past the estimate is noted, not
    /// refused.
    fn check_machine(&self, memory_check: bool) -> Result<(), String> {
        let pairs = u64::from(self.connections) + u64::from(self.active);
        let needed = pairs * PAIR_BYTES_ESTIMATE;
        let available = meminfo_kib("MemAvailable:") * 1024;
        let fits = available.saturating_sub(SPARE_BYTES) / PAIR_BYTES_ESTIMATE;
        eprintln!(
            "scale: memory: ~{:.1} GiB for {pairs} connection pairs at ~{PAIR_BYTES_ESTIMATE} B a pair (both ends here); MemAvailable {:.1} GiB, room for ~{fits} pairs",
            gib(needed),
            gib(available)
        );
        if needed + SPARE_BYTES > available {
            let why = format!(
                "{pairs} connection pairs need about {:.1} GiB (~{PAIR_BYTES_ESTIMATE} B a pair: two sockets' kernel structures and both processes' state), and {:.1} GiB is available with 1 GiB left for the rest: this machine holds about {fits} pairs now (--no-memory-check tries anyway, and stops the fill when memory runs low)",
                gib(needed),
                gib(available)
            );
            if memory_check {
                return Err(why);
            }
            eprintln!("scale: --no-memory-check: running anyway; {why}");
        }
        let sockets = 2 * pairs + 10_000;
        let file_max = read_number("/proc/sys/fs/file-max").unwrap_or(u64::MAX);
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if sockets > file_max {
            if !root {
                return Err(format!(
                    "{sockets} open files are needed system-wide (both ends of every connection), past fs.file-max {file_max}: sysctl -w fs.file-max={}",
                    sockets.next_power_of_two()
                ));
            }
            eprintln!(
                "scale: note: {sockets} open files system-wide is past fs.file-max {file_max}; root is exempt, other users are not (sysctl -w fs.file-max={})",
                sockets.next_power_of_two()
            );
        }
        Ok(())
    }
}

/// The fewest workers whose fullest, at the mean plus [`SPREAD_SIGMAS`] standard deviations
/// of `SO_REUSEPORT`'s hash, holds at most `per_process` of `connections`.
fn workers_for(connections: u64, per_process: u64) -> u32 {
    if connections <= per_process {
        return 1;
    }
    // m + k sqrt(m) = room  =>  sqrt(m) = (-k + sqrt(k^2 + 4 room)) / 2
    let room = per_process as f64;
    let root = (-SPREAD_SIGMAS + (SPREAD_SIGMAS * SPREAD_SIGMAS + 4.0 * room).sqrt()) / 2.0;
    let largest_mean = root * root;
    (connections as f64 / largest_mean).ceil().max(2.0) as u32
}

/// Loader processes for `connections`: the loader splits them exactly, so each holds at most
/// `per_process`.
fn processes_for(connections: u64, per_process: u64) -> u32 {
    u32::try_from(connections.div_ceil(per_process.max(1)).max(1)).unwrap_or(u32::MAX)
}

/// The paced connect rate for `processes` server and loader processes sharing the machine.
fn connect_rate_for(processes: u64) -> u32 {
    (RATE_BUDGET / processes.max(1)).clamp(MIN_CONNECT_RATE, MAX_CONNECT_RATE) as u32
}

/// A worker's mean share of `connections` over `workers`.
fn mean_share(connections: u64, workers: u32) -> f64 {
    connections as f64 / f64::from(workers.max(1))
}

/// The share the fullest worker can be expected to get, at [`SPREAD_SIGMAS`].
fn fullest_share(connections: u64, workers: u32) -> f64 {
    if workers <= 1 {
        return connections as f64;
    }
    let mean = mean_share(connections, workers);
    mean + SPREAD_SIGMAS * mean.sqrt()
}

/// `count` loopback addresses from 127.0.0.1 + `skip`, as a range `A-B`.
fn loopback_range(skip: u64, count: u64) -> String {
    let first = u32::from(std::net::Ipv4Addr::new(127, 0, 0, 1)) + skip as u32;
    let last = first + count.max(1) as u32 - 1;
    format!("{}-{}", std::net::Ipv4Addr::from(first), std::net::Ipv4Addr::from(last))
}

/// How many addresses a `--sources` list names (`A-B` ranges and single addresses).
fn count_sources(text: &str) -> Result<u64, String> {
    let mut count = 0;
    for part in text.split(',').map(str::trim) {
        let address = |text: &str| {
            text.trim()
                .parse::<std::net::Ipv4Addr>()
                .map(u32::from)
                .map_err(|_| format!("bad source address '{text}' in --sources"))
        };
        count += match part.split_once('-') {
            Some((first, last)) => u64::from(address(last)?.saturating_sub(address(first)?)) + 1,
            None => address(part).map(|_| 1)?,
        };
    }
    Ok(count)
}

/// The hard open-file limit of this process, which its children inherit.
fn hard_file_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes into the struct we pass, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(limit.rlim_max)
}

/// Ephemeral ports one source address has to one destination
/// (`net.ipv4.ip_local_port_range`).
fn ephemeral_ports() -> u64 {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let ends: Vec<u64> = range.split_whitespace().filter_map(|end| end.parse().ok()).collect();
    match ends[..] {
        [low, high] if high > low => high - low + 1,
        _ => 28_232,
    }
}

// ----- the measurements -----

/// What one row measured: the fill (connect, verify, hold) and the busy clients.
struct Figures {
    established: u64,
    verified: u64,
    /// The fill's failures by class, as a sentence ("none" when there were none).
    fill_errors: String,
    connect_per_s: f64,
    connect_s: f64,
    ready_s: f64,
    server_rss_b_per_conn: f64,
    loader_rss_b_per_conn: f64,
    /// Growth of the kernel's slab caches (socket structures), per connection pair.
    slab_b_per_pair: f64,
    /// TCP buffer pages (`/proc/net/sockstat` "mem") while held, and their peak in the fill.
    tcp_pages_held: u64,
    tcp_pages_fill_peak: u64,
    /// The kernel: slab plus TCP pages, per connection pair (both ends).
    kernel_b_per_pair: f64,
    /// The machine: MemAvailable's fall per connection pair, all in.
    memavail_b_per_pair: f64,
    idle_cpu_pct: f64,
    listen_overflows: u64,
    spread: Spread,
    /// The busy clients' runs: among the idle connections, then alone.
    busy_among_idle: Busy,
    busy_alone: Busy,
}

/// How the connections lay over the workers while held (descriptors each opened since it
/// started).
#[derive(Clone, Copy, Debug, Default)]
struct Spread {
    fewest: u64,
    most: u64,
    mean: f64,
    /// All the workers hold: the connections the server has, counted on its side.
    total: u64,
}

/// A busy-client run's figures.
struct Busy {
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    sent: u64,
    verified: u64,
    errors: String,
    /// Packets the machine dropped and TCP resent meanwhile: a tail of hundreds of
    /// milliseconds is retransmission timeouts, not the server.
    losses: Losses,
}

impl Busy {
    fn of(report: &Value, losses: Losses) -> Busy {
        let latency = |field: &str| report["latency_us"][field].as_f64().unwrap_or(0.0);
        Busy {
            losses,
            p50_us: latency("p50"),
            p90_us: latency("p90"),
            p99_us: latency("p99"),
            sent: report["messages"]["sent"].as_u64().unwrap_or(0),
            verified: report["messages"]["verified"].as_u64().unwrap_or(0),
            errors: error_story(report),
        }
    }
}

/// What a loader report's failures mean, one clause per class, or "none".
fn error_story(report: &Value) -> String {
    let count = |field: &str| report["errors"][field].as_u64().unwrap_or(0);
    let classes: [(&str, &str); 10] = [
        ("addr_not_available", "a source address ran out of ports: give more --sources"),
        ("turned_away", "a worker was full (ERR server full) while others had room: use more --workers"),
        ("timeout", "connects not done within --connect-timeout: accept queues full, see listen overflows"),
        ("refused", "refused: is the server listening?"),
        ("reset", "reset by the server"),
        ("closed", "closed by the server mid-run"),
        ("reply_timeout", "waited --reply-timeout for a reply"),
        ("lost", "never answered"),
        ("mismatch", "a wrong reply"),
        ("other", "other errors"),
    ];
    let told: Vec<String> = classes
        .iter()
        .filter(|(field, _)| count(field) > 0)
        .map(|(field, meaning)| format!("{} {field} ({meaning})", count(field)))
        .collect();
    if told.is_empty() { "none".to_string() } else { told.join("; ") }
}

/// The columns `--record` writes: the first 24 as before, then the ones added with the
/// kernel's accounting.
const CSV_HEADER: &str = "connections,workers,processes,idle_timeout_s,established,verified,accept_per_s,ready_s,server_rss_b_per_conn,kernel_b_per_conn,idle_cpu_pct,listen_overflows,busy,rate,busy_p50_us,busy_p90_us,busy_p99_us,busy_sent,busy_verified,alone_p50_us,alone_p90_us,alone_p99_us,alone_sent,alone_verified,connect_rate,echo_rate,connect_s,loader_rss_b_per_conn,slab_b_per_pair,tcp_pages_held,tcp_pages_fill_peak,memavail_b_per_pair,worker_fewest,worker_most,worker_limit,busy_backlog_drops,busy_retransmits,alone_backlog_drops,alone_retransmits";

fn measure(plan: &Plan, stop: &AtomicBool) -> Step<Figures> {
    let mut command = Command::new(common::binary("evloop-server"));
    command.args(["--workers", &plan.workers.to_string(), "--listen", "echo=127.0.0.1:0"]);
    if plan.idle_timeout > 0 {
        command.args(["--idle-timeout", &plan.idle_timeout.to_string()]);
    }
    // Workers start one after the other, each in milliseconds.
    let startup = Duration::from_secs(30 + u64::from(plan.workers) / 4);
    let (mut server, target) =
        common::start_server_within(command, startup).map_err(failed(Phase::Server))?;
    // With --workers 1 the server is the reactor; with more, its children are.
    let workers = if plan.workers > 1 { common::children(server.id()) } else { vec![server.id()] };
    if workers.len() != plan.workers as usize {
        return Err(Failure {
            phase: Phase::Server,
            why: format!("{} of {} workers running after start", workers.len(), plan.workers),
        });
    }
    let rss_kib = || -> u64 { workers.iter().map(|&pid| common::status_field(pid, "VmRSS:")).sum() };
    let cpu_ticks = || -> u64 { workers.iter().map(|&pid| common::cpu_ticks(pid)).sum() };
    let descriptors_at_start: Vec<u64> = workers.iter().map(|&pid| open_descriptors(pid)).collect();
    let (rss_before, slab_before, overflows_before) = (rss_kib(), meminfo_kib("Slab:"), listen_overflows());
    let slabs_before = slabinfo();
    let sampler = Sampler::start();
    let sampling_started = Instant::now();
    sleep_unless_stopped(Duration::from_secs(2), stop).map_err(failed(Phase::Server))?;
    let tcp_before = TcpStat {
        inuse: sampler.median(sampling_started, Instant::now(), |sample| sample.tcp.inuse),
        mem_pages: sampler.median(sampling_started, Instant::now(), tcp_pages),
    };
    let available_before = sampler.median(sampling_started, Instant::now(), available_kib);

    // Fill, verify, hold.
    let connections = plan.connections.to_string();
    let fill_started = Instant::now();
    let losses_before_fill = Losses::now();
    let mut fill = Loader::start(
        "the fill's loader",
        &[
            "--target",
            &target,
            "-c",
            &connections,
            "-n",
            &connections,
            "--processes",
            &plan.processes.to_string(),
            "--sources",
            &plan.sources,
            "--connect-rate",
            &plan.connect_rate.to_string(),
            "--rate",
            &plan.echo_rate.to_string(),
            "--hold",
            &format!("{}s", plan.hold.as_secs()),
            "--connect-timeout",
            "60s",
            "--reply-timeout",
            "60s",
        ],
    )
    .map_err(failed(Phase::Fill))?;
    // Twice the planned time, and a minute: a paced fill that falls that far behind has a
    // problem worth a sentence, not a longer wait.
    let fill_deadline = plan.fill_estimate() * 2 + Duration::from_secs(60);
    // The machine's memory is the ceiling (both ends of every connection are here): stop
    // the fill while there is some left, rather than let the kernel kill something.
    let enough_memory = || {
        let available_mib = meminfo_kib("MemAvailable:") / 1024;
        if available_mib >= LOW_MEMORY_MIB {
            return Ok(());
        }
        let sockets = tcp_stat().inuse.saturating_sub(tcp_before.inuse);
        Err(format!(
            "MemAvailable fell to {available_mib} MiB with {sockets} TCP sockets open (about {} connection pairs): this machine's memory is the ceiling; stopped before the kernel had to kill something",
            sockets / 2
        ))
    };
    fill.wait_for_line("holding", fill_deadline, stop, enough_memory).map_err(|why| {
        let per_source = u64::from(plan.connections) / plan.source_count.max(1);
        let hint = if per_source > CONNECTIONS_PER_SOURCE {
            format!(
                "; {per_source} connections per source address, and connect() slows as a source's ports fill: give more --sources (the rule's one per {CONNECTIONS_PER_SOURCE}), or leave --sources out"
            )
        } else {
            String::new()
        };
        Failure {
            phase: Phase::Fill,
            why: format!("{why}; {} TCP sockets open{hint}", tcp_stat().inuse.saturating_sub(tcp_before.inuse)),
        }
    })?;
    let hold_started = Instant::now();
    let ready_s = fill_started.elapsed().as_secs_f64();
    let fill_losses = Losses::now().since(losses_before_fill);
    eprintln!(
        "scale: during the fill the machine dropped {} packets from its loopback backlog (net.core.netdev_max_backlog) and TCP resent {} segments",
        fill_losses.backlog_drops, fill_losses.retransmits
    );
    let tcp_pages_fill_peak =
        sampler.peak(fill_started, hold_started, tcp_pages).saturating_sub(tcp_before.mem_pages);
    eprintln!(
        "scale: the fill's loader holds its connections after {ready_s:.1} s (each connected, then sent one echo); TCP buffer pages peaked at {tcp_pages_fill_peak} during the fill"
    );
    if let Some([_, pressure, _]) = tcp_mem_limits() {
        if tcp_pages_fill_peak > pressure {
            eprintln!(
                "scale: warning: the kernel's TCP memory ({tcp_pages_fill_peak} pages) passed net.ipv4.tcp_mem's pressure threshold ({pressure}) during the fill: echoes queued faster than they were answered; lower --echo-rate"
            );
        }
    }

    // Held and idle.
    sleep_unless_stopped(Duration::from_secs(2), stop).map_err(failed(Phase::Hold))?;
    check_workers(&mut server, &workers).map_err(failed(Phase::Hold))?;
    let (rss_held, slab_held, cpu_before) = (rss_kib(), meminfo_kib("Slab:"), cpu_ticks());
    let loader_rss_kib: u64 = fill.processes().iter().map(|&pid| common::status_field(pid, "VmRSS:")).sum();
    let slabs_held = slabinfo();
    let spread = spread(&workers, &descriptors_at_start);
    // The loader's "holding N" counts connections that came up, also those a full worker
    // then turned away: the server's own count says whether every one is held. If not, the
    // hold would measure something else; the loader's report says why.
    eprintln!("scale: the server holds {} connections", spread.total);
    if spread.total < u64::from(plan.connections) {
        let story = fill.interrupt().map(|report| error_story(&report)).unwrap_or_else(|why| why);
        return Err(Failure {
            phase: Phase::Fill,
            why: format!(
                "the server holds {} of the {} connections after the fill; the loader's failures: {story}",
                spread.total, plan.connections
            ),
        });
    }
    check_spread(plan, spread).map_err(failed(Phase::Hold))?;
    let idle_started = Instant::now();
    let idle_window = Duration::from_secs(10);
    sleep_unless_stopped(idle_window, stop).map_err(failed(Phase::Hold))?;
    let idle_ticks = cpu_ticks().saturating_sub(cpu_before);
    let tcp_pages_held =
        sampler.median(idle_started, Instant::now(), tcp_pages).saturating_sub(tcp_before.mem_pages);
    let available_held = sampler.median(idle_started, Instant::now(), available_kib);
    let sockets_held = tcp_stat().inuse.saturating_sub(tcp_before.inuse);

    // A few busy clients among the idle ones; they must be done before the hold ends.
    let among_idle = busy(plan, &target, &plan.busy_sources, stop).map_err(failed(Phase::Busy))?;
    let hold_left = plan.hold.saturating_sub(hold_started.elapsed());
    if hold_left.is_zero() {
        return Err(Failure {
            phase: Phase::Busy,
            why: format!(
                "the busy clients finished {:.1} s after the hold ended, so some ran without the idle connections: use a longer --hold",
                hold_started.elapsed().as_secs_f64() - plan.hold.as_secs_f64()
            ),
        });
    }
    // The loader's exit closes every held connection; closing a million takes a while.
    let closing = Duration::from_secs(60 + u64::from(plan.connections) / 20_000);
    let fill_report = fill.finish(hold_left + closing, stop).map_err(failed(Phase::Fill))?;
    let teardown = Duration::from_secs(120 + u64::from(plan.connections) / 20_000);
    match wait_for_teardown(tcp_before.inuse, teardown, stop) {
        Teardown::Done => {}
        Teardown::Busy => eprintln!(
            "scale: note: the held sockets are closed, but the machine was still busy {} s later (less than 90% idle: others' work, or the kernel freeing memory); the busy clients alone run anyway",
            QUIET_WAIT.as_secs()
        ),
        Teardown::SocketsLeft => eprintln!(
            "scale: note: {} TCP sockets still open {} s after the hold ended; the busy clients alone run anyway, beside the kernel's cleanup",
            tcp_stat().inuse.saturating_sub(tcp_before.inuse),
            teardown.as_secs()
        ),
    }
    let alone = busy(plan, &target, &plan.busy_sources, stop).map_err(failed(Phase::Alone))?;
    let listen_overflows = listen_overflows().saturating_sub(overflows_before);
    // Which half of the fill queued the pages: connecting, or the first echoes after it.
    let connected_at = fill_started
        + Duration::from_secs_f64(fill_report["connections"]["connect_phase_s"].as_f64().unwrap_or(0.0));
    let peak_connecting =
        sampler.peak(fill_started, connected_at, tcp_pages).saturating_sub(tcp_before.mem_pages);
    let peak_echoing =
        sampler.peak(connected_at, hold_started, tcp_pages).saturating_sub(tcp_before.mem_pages);
    eprintln!(
        "scale: TCP buffer pages at their peak, more than before the fill: {peak_connecting} while connecting, {peak_echoing} during the first echoes"
    );
    drop(sampler);
    server.stop();

    let connections = f64::from(plan.connections);
    print_slab_growth(&slabs_before, &slabs_held, connections);
    let slab_b_per_pair = slab_held.saturating_sub(slab_before) as f64 * 1024.0 / connections;
    let tcp_page_bytes = tcp_pages_held as f64 * 4096.0;
    eprintln!(
        "scale: TCP buffer pages while held: {tcp_pages_held} more than before the fill ({:.0} B a socket over {sockets_held} sockets); the count is the machine's, so others' traffic shows in it",
        tcp_page_bytes / sockets_held.max(1) as f64
    );
    let connection = &fill_report["connections"];
    Ok(Figures {
        established: connection["established"].as_u64().unwrap_or(0),
        verified: fill_report["messages"]["verified"].as_u64().unwrap_or(0),
        fill_errors: error_story(&fill_report),
        connect_per_s: connection["connects_per_s"].as_f64().unwrap_or(0.0),
        connect_s: connection["connect_phase_s"].as_f64().unwrap_or(0.0),
        ready_s,
        server_rss_b_per_conn: rss_held.saturating_sub(rss_before) as f64 * 1024.0 / connections,
        loader_rss_b_per_conn: loader_rss_kib as f64 * 1024.0 / connections,
        slab_b_per_pair,
        tcp_pages_held,
        tcp_pages_fill_peak,
        kernel_b_per_pair: slab_b_per_pair + tcp_page_bytes / connections,
        memavail_b_per_pair: available_before.saturating_sub(available_held) as f64 * 1024.0 / connections,
        idle_cpu_pct: idle_ticks as f64 / idle_window.as_secs_f64(),
        listen_overflows,
        spread,
        busy_among_idle: among_idle,
        busy_alone: alone,
    })
}

/// Runs the busy clients at the plan's rate for 5 s after 1 s of warmup, over as many loader
/// processes as their count needs, from `sources`; returns their figures.
fn busy(plan: &Plan, target: &str, sources: &str, stop: &AtomicBool) -> Result<Busy, String> {
    let losses_before = Losses::now();
    let loader = Loader::start(
        "the busy clients' loader",
        &[
            "--target",
            target,
            "-c",
            &plan.active.to_string(),
            "--processes",
            &plan.busy_processes.to_string(),
            "--rate",
            &plan.rate.to_string(),
            "-d",
            "5s",
            "--warmup",
            "1s",
            "--sources",
            sources,
            // Paced as the fill is: 20,000 at once into a server holding two million, on two
            // cores, is a connect storm the busy clients' latency should not start with.
            "--connect-rate",
            &plan.connect_rate.to_string(),
            "--connect-timeout",
            "60s",
        ],
    )?;
    // Connecting (paced), 6 s of sending, the last replies, and a minute in hand.
    let deadline = Duration::from_secs(75 + u64::from(plan.active) / u64::from(plan.connect_rate).max(1));
    let report = loader.finish(deadline, stop)?;
    Ok(Busy::of(&report, Losses::now().since(losses_before)))
}

/// Checks that the server and every worker it started still run: a worker that died took its
/// connections with it (the supervisor starts another, empty), and the figures would be
/// another run's.
fn check_workers(server: &mut Guard, workers: &[u32]) -> Result<(), String> {
    if let Some(status) = server.try_wait() {
        return Err(format!("the server exited ({status}) while the connections were held"));
    }
    if workers.len() > 1 {
        let running = common::children(server.id());
        let gone: Vec<String> =
            workers.iter().filter(|pid| !running.contains(pid)).map(|pid| pid.to_string()).collect();
        if !gone.is_empty() {
            return Err(format!(
                "worker processes {} exited during the fill (their connections went with them; see the server's log above)",
                gone.join(", ")
            ));
        }
    }
    Ok(())
}

/// Checks the spread of the held connections over the workers: a worker at its limit turns
/// the next client hashed to it away, however much room the others have.
fn check_spread(plan: &Plan, spread: Spread) -> Result<(), String> {
    if plan.workers <= 1 {
        return Ok(());
    }
    let busy_share = f64::from(plan.active) / f64::from(plan.workers);
    eprintln!(
        "scale: spread over {} workers while held: fewest {}, mean {:.0}, most {} connections (limit {} each; the busy clients add ~{busy_share:.0} each)",
        plan.workers, spread.fewest, spread.mean, spread.most, plan.per_process
    );
    if spread.most >= plan.per_process {
        return Err(format!(
            "a worker holds {} connections, its limit, while another holds {}: SO_REUSEPORT spreads by hash, not by room, so clients hashed to the full one are turned away (ERR server full); use --workers {} or more",
            spread.most,
            spread.fewest,
            workers_for(u64::from(plan.connections + plan.active), plan.per_process)
        ));
    }
    if spread.most as f64 + busy_share >= plan.per_process as f64 {
        eprintln!(
            "scale: warning: the fullest worker has room for {} more, and the busy clients bring ~{busy_share:.0} to each: some may be turned away",
            plan.per_process - spread.most
        );
    }
    Ok(())
}

/// The connections each worker holds (descriptors opened since it started).
fn spread(workers: &[u32], at_start: &[u64]) -> Spread {
    let held: Vec<u64> = workers
        .iter()
        .zip(at_start)
        .map(|(&pid, &start)| open_descriptors(pid).saturating_sub(start))
        .collect();
    Spread {
        fewest: held.iter().copied().min().unwrap_or(0),
        most: held.iter().copied().max().unwrap_or(0),
        mean: held.iter().sum::<u64>() as f64 / held.len().max(1) as f64,
        total: held.iter().sum(),
    }
}

/// How many descriptors `pid` has open.
fn open_descriptors(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|entries| entries.count() as u64).unwrap_or(0)
}

/// Sleeps `duration`, unless told to stop meanwhile.
fn sleep_unless_stopped(duration: Duration, stop: &AtomicBool) -> Result<(), String> {
    let until = Instant::now() + duration;
    while Instant::now() < until {
        if stop.load(Ordering::Relaxed) {
            return Err("interrupted (SIGINT or SIGTERM)".to_string());
        }
        std::thread::sleep(Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())));
    }
    Ok(())
}

/// How long the machine may stay busy once the sockets are gone before the comparison runs
/// anyway: on a shared machine others' work keeps it busy, and that is not the cleanup.
const QUIET_WAIT: Duration = Duration::from_secs(15);

/// What [`wait_for_teardown`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Teardown {
    /// The sockets are gone and the machine is quiet.
    Done,
    /// The sockets are gone, but the machine stayed busy (others' work, or the kernel still
    /// freeing memory) for [`QUIET_WAIT`].
    Busy,
    /// Sockets were still open at the timeout.
    SocketsLeft,
}

/// Waits (at most `timeout`) until the kernel holds about as many TCP sockets as before the
/// fill, then (at most [`QUIET_WAIT`] more) until the machine is quiet again: releasing a
/// million sockets keeps the kernel busy for a while after the last one is closed, and a
/// comparison run during that would measure the cleanup.
fn wait_for_teardown(sockets_before: u64, timeout: Duration, stop: &AtomicBool) -> Teardown {
    let started = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) || started.elapsed() >= timeout {
            return Teardown::SocketsLeft;
        }
        if tcp_stat().inuse < sockets_before + 1000 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let closed = Instant::now();
    while closed.elapsed() < QUIET_WAIT && !stop.load(Ordering::Relaxed) {
        if machine_idle_fraction() > 0.9 {
            return Teardown::Done;
        }
    }
    Teardown::Busy
}

// ----- a loader run -----

/// A running `evloop-load --json`: guarded (stopped if this is dropped before it ends), its
/// stderr forwarded line by line and its last lines kept for a failure's sentence, its
/// stdout (the JSON report) collected.
struct Loader {
    guard: Guard,
    lines: Receiver<String>,
    last_lines: Arc<Mutex<VecDeque<String>>>,
    report: Receiver<String>,
}

impl Loader {
    fn start(name: &str, args: &[&str]) -> Result<Loader, String> {
        let mut command = Command::new(common::binary("evloop-load"));
        command.args(args).args(["--json", "--no-progress"]);
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut guard = Guard::spawn(&mut command, name, Duration::from_secs(30))?;
        let (stdout, stderr) = match (guard.child().stdout.take(), guard.child().stderr.take()) {
            (Some(stdout), Some(stderr)) => (stdout, stderr),
            _ => return Err(format!("{name}'s output is not piped")),
        };
        let (line_sender, lines) = std::sync::mpsc::channel();
        let last_lines = Arc::new(Mutex::new(VecDeque::new()));
        let kept = last_lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut kept) = kept.lock() {
                    if kept.len() == 5 {
                        kept.pop_front();
                    }
                    kept.push_back(line.clone());
                }
                let _ = line_sender.send(line);
            }
        });
        let (report_sender, report) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(stdout).read_to_string(&mut text);
            let _ = report_sender.send(text);
        });
        Ok(Loader { guard, lines, last_lines, report })
    }

    /// Its processes: the loader, or with `--processes`, its parts.
    fn processes(&self) -> Vec<u32> {
        let parts = common::children(self.guard.id());
        if parts.is_empty() { vec![self.guard.id()] } else { parts }
    }

    /// Waits up to `timeout` for a stderr line containing `needle`, echoing the others.
    /// `watch` is asked every 200 ms whether to go on; its sentence ends the wait.
    fn wait_for_line(
        &mut self,
        needle: &str,
        timeout: Duration,
        stop: &AtomicBool,
        watch: impl Fn() -> Result<(), String>,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if stop.load(Ordering::Relaxed) {
                return Err("interrupted (SIGINT or SIGTERM)".to_string());
            }
            watch()?;
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) if line.contains(needle) => return Ok(()),
                Ok(line) => eprintln!("{line}"),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.guard.wait_for(Duration::from_secs(5));
                    return Err(self.story(status, &format!("ended before printing '{needle}'")));
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} did not print '{needle}' within {} s{}",
                    self.guard.name(),
                    timeout.as_secs(),
                    self.last_words()
                ));
            }
        }
    }

    /// Stops it now (SIGTERM: it reports what it did so far) and returns that report.
    fn interrupt(mut self) -> Result<Value, String> {
        let status = self.guard.stop();
        self.report(status)
    }

    /// Its JSON report, once it has ended with `status`.
    fn report(&self, status: Option<ExitStatus>) -> Result<Value, String> {
        let text = self.report.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
        serde_json::from_str(text.trim()).map_err(|_| self.story(status, "gave no JSON report"))
    }

    /// Waits up to `timeout` for it to end, and returns its JSON report.
    fn finish(mut self, timeout: Duration, stop: &AtomicBool) -> Result<Value, String> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if stop.load(Ordering::Relaxed) {
                return Err("interrupted (SIGINT or SIGTERM)".to_string());
            }
            if let Some(status) = self.guard.try_wait() {
                break status;
            }
            while let Ok(line) = self.lines.try_recv() {
                eprintln!("{line}");
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} did not end within {} s{}",
                    self.guard.name(),
                    timeout.as_secs(),
                    self.last_words()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // Exit code 1 is a run with failures, whose report says which: the caller judges.
        self.report(Some(status))
    }

    /// "NAME exited with STATUS and WHAT: its last words".
    fn story(&self, status: Option<ExitStatus>, what: &str) -> String {
        let status = status.map_or("an unknown status".to_string(), |status| status.to_string());
        format!("{} {what} ({status}){}", self.guard.name(), self.last_words())
    }

    /// Its last stderr lines, quoted, or nothing.
    fn last_words(&self) -> String {
        let kept =
            self.last_lines.lock().map(|kept| kept.iter().cloned().collect::<Vec<_>>()).unwrap_or_default();
        if kept.is_empty() { String::new() } else { format!(": \"{}\"", kept.join(" / ")) }
    }
}

// ----- the kernel's figures -----

/// TCP sockets in use (this network namespace) and TCP buffer pages (the whole machine),
/// from `/proc/net/sockstat`.
#[derive(Clone, Copy, Debug, Default)]
struct TcpStat {
    inuse: u64,
    mem_pages: u64,
}

fn tcp_stat() -> TcpStat {
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    let Some(line) = sockstat.lines().find(|line| line.starts_with("TCP:")) else {
        return TcpStat::default();
    };
    let words: Vec<&str> = line.split_whitespace().collect();
    let field = |name: &str| {
        words
            .iter()
            .position(|word| *word == name)
            .and_then(|at| words.get(at + 1)?.parse().ok())
            .unwrap_or(0)
    };
    TcpStat { inuse: field("inuse"), mem_pages: field("mem") }
}

/// Packets lost and resent on the machine: drops from the per-CPU backlog every loopback
/// packet passes through (`/proc/net/softnet_stat`, `net.core.netdev_max_backlog` long), and
/// TCP segments retransmitted (`/proc/net/snmp`). The counts are the machine's.
#[derive(Clone, Copy, Debug, Default)]
struct Losses {
    backlog_drops: u64,
    retransmits: u64,
}

impl Losses {
    fn now() -> Losses {
        let softnet = std::fs::read_to_string("/proc/net/softnet_stat").unwrap_or_default();
        let backlog_drops = softnet
            .lines()
            .filter_map(|line| u64::from_str_radix(line.split_whitespace().nth(1)?, 16).ok())
            .sum();
        let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
        let tcp: Vec<&str> = snmp.lines().filter(|line| line.starts_with("Tcp:")).collect();
        let retransmits = match (tcp.first(), tcp.get(1)) {
            (Some(names), Some(values)) => names
                .split_whitespace()
                .zip(values.split_whitespace())
                .find(|(name, _)| *name == "RetransSegs")
                .and_then(|(_, value)| value.parse().ok())
                .unwrap_or(0),
            _ => 0,
        };
        Losses { backlog_drops, retransmits }
    }

    fn since(self, earlier: Losses) -> Losses {
        Losses {
            backlog_drops: self.backlog_drops.saturating_sub(earlier.backlog_drops),
            retransmits: self.retransmits.saturating_sub(earlier.retransmits),
        }
    }
}

/// `net.ipv4.tcp_mem`: pages below which TCP is unconstrained, past which it is under
/// pressure, and its limit.
fn tcp_mem_limits() -> Option<[u64; 3]> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_mem").ok()?;
    let values: Vec<u64> = text.split_whitespace().filter_map(|value| value.parse().ok()).collect();
    values.try_into().ok()
}

/// Samples `/proc/net/sockstat` and MemAvailable four times a second in a thread of its
/// own, for the peak of the kernel's TCP buffer pages during the fill, and medians of both
/// before and while held: the machine is shared, and a median over seconds is steadier than
/// one reading against others' builds and tests.
struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    running: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// One reading of the [`Sampler`].
#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Instant,
    tcp: TcpStat,
    available_kib: u64,
}

impl Sampler {
    fn start() -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let running = Arc::new(AtomicBool::new(true));
        let (kept, alive) = (samples.clone(), running.clone());
        let thread = std::thread::spawn(move || {
            while alive.load(Ordering::Relaxed) {
                let sample = Sample {
                    at: Instant::now(),
                    tcp: tcp_stat(),
                    available_kib: meminfo_kib("MemAvailable:"),
                };
                if let Ok(mut kept) = kept.lock() {
                    kept.push(sample);
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        Sampler { samples, running, thread: Some(thread) }
    }

    /// `field` of the samples taken between `from` and `to`.
    fn between(&self, from: Instant, to: Instant, field: impl Fn(&Sample) -> u64) -> Vec<u64> {
        let samples = self.samples.lock().map(|samples| samples.clone()).unwrap_or_default();
        samples.iter().filter(|sample| sample.at >= from && sample.at <= to).map(field).collect()
    }

    fn peak(&self, from: Instant, to: Instant, field: impl Fn(&Sample) -> u64) -> u64 {
        self.between(from, to, field).into_iter().max().unwrap_or(0)
    }

    fn median(&self, from: Instant, to: Instant, field: impl Fn(&Sample) -> u64) -> u64 {
        let mut values = self.between(from, to, field);
        values.sort_unstable();
        values.get(values.len() / 2).copied().unwrap_or(0)
    }
}

/// A sample's TCP buffer pages.
fn tcp_pages(sample: &Sample) -> u64 {
    sample.tcp.mem_pages
}

/// A sample's MemAvailable, in KiB.
fn available_kib(sample: &Sample) -> u64 {
    sample.available_kib
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.running.store(false, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A field of `/proc/meminfo`, in KiB.
fn meminfo_kib(field: &str) -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The number in a `/proc/sys` file.
fn read_number(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 30)
}

/// The kernel's slab caches (`/proc/slabinfo`, readable by root): name, objects in use, and
/// object size. Empty when unreadable.
fn slabinfo() -> Vec<(String, u64, u64)> {
    let text = std::fs::read_to_string("/proc/slabinfo").unwrap_or_default();
    text.lines()
        .filter(|line| !line.starts_with("slabinfo") && !line.starts_with('#'))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            Some((fields.first()?.to_string(), fields.get(1)?.parse().ok()?, fields.get(3)?.parse().ok()?))
        })
        .collect()
}

/// Prints the slab caches that grew by at least half an object per connection pair: what
/// the kernel's memory per connection is made of. (Caches of one size may be merged and
/// shown under one name: `eventpoll_pwq` as `anon_vma_chain` here, for one.)
fn print_slab_growth(before: &[(String, u64, u64)], held: &[(String, u64, u64)], pairs: f64) {
    let mut grown: Vec<(f64, &str, f64, u64)> = held
        .iter()
        .filter_map(|(name, objects, size)| {
            let was = before.iter().find(|(old, ..)| old == name).map_or(0, |(_, objects, _)| *objects);
            let per_pair = (*objects as f64 - was as f64) / pairs;
            (per_pair >= 0.5).then_some((per_pair * *size as f64, name.as_str(), per_pair, *size))
        })
        .collect();
    if grown.is_empty() {
        return;
    }
    grown.sort_by(|a, b| b.0.total_cmp(&a.0));
    let total: f64 = grown.iter().map(|(bytes, ..)| bytes).sum();
    eprintln!("scale: slab caches grown per connection pair (objects x size), {total:.0} B in all:");
    for (bytes, name, per_pair, size) in grown {
        eprintln!("scale:   {name:<20} {per_pair:>5.2} x {size:>5} B = {bytes:>6.0} B");
    }
}

/// TcpExt ListenOverflows + ListenDrops so far.
fn listen_overflows() -> u64 {
    let netstat = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let lines: Vec<&str> = netstat.lines().filter(|line| line.starts_with("TcpExt:")).collect();
    let (Some(names), Some(values)) = (lines.first(), lines.get(1)) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .filter(|(name, _)| *name == "ListenOverflows" || *name == "ListenDrops")
        .filter_map(|(_, value)| value.parse::<u64>().ok())
        .sum()
}

/// The share of CPU time all CPUs spent idle over the next half second (`/proc/stat`).
fn machine_idle_fraction() -> f64 {
    let sample = || -> (u64, u64) {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let fields: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
        (idle, fields.iter().sum())
    };
    let (idle_before, total_before) = sample();
    std::thread::sleep(Duration::from_millis(500));
    let (idle_after, total_after) = sample();
    idle_after.saturating_sub(idle_before) as f64 / total_after.saturating_sub(total_before).max(1) as f64
}

// ----- output -----

fn print_tables(plan: &Plan, figures: &Figures) {
    println!(
        "| connections | workers | loader processes | established | verified | connect s | connects/s (paced at) | ready after s | server RSS B/conn | loader RSS B/conn | kernel slab B/pair | TCP pages held (fill peak) | all-in B/pair (MemAvailable) | idle CPU % | listen overflows | worker fewest / most (limit) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} | {} | {:.1} | {:.0} ({}) | {:.1} | {:.0} | {:.0} | {:.0} | {} ({}) | {:.0} | {:.2} | {} | {} / {} ({}) |",
        plan.connections,
        plan.workers,
        plan.processes,
        figures.established,
        figures.verified,
        figures.connect_s,
        figures.connect_per_s,
        plan.connect_rate,
        figures.ready_s,
        figures.server_rss_b_per_conn,
        figures.loader_rss_b_per_conn,
        figures.slab_b_per_pair,
        figures.tcp_pages_held,
        figures.tcp_pages_fill_peak,
        figures.memavail_b_per_pair,
        figures.idle_cpu_pct,
        figures.listen_overflows,
        figures.spread.fewest,
        figures.spread.most,
        plan.per_process,
    );
    println!();
    println!(
        "| {} busy clients at {} msgs/s | p50 us | p90 us | p99 us | sent | verified | failures | loopback drops / TCP retransmits meanwhile |",
        plan.active, plan.rate
    );
    println!("|---|---|---|---|---|---|---|---|");
    let among = format!("among {} idle", plan.connections);
    for (label, busy) in [(among.as_str(), &figures.busy_among_idle), ("alone", &figures.busy_alone)] {
        println!(
            "| {label} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} / {} |",
            busy.p50_us,
            busy.p90_us,
            busy.p99_us,
            busy.sent,
            busy.verified,
            busy.errors,
            busy.losses.backlog_drops,
            busy.losses.retransmits
        );
    }
}

/// Appends `figures` to the CSV at `path` (with a header if the file is new).
fn record(path: &Path, plan: &Plan, figures: &Figures) -> Result<(), String> {
    use std::io::Write as _;
    let new = !path.exists();
    if !new {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        let header = text.lines().next().unwrap_or("");
        if !CSV_HEADER.starts_with(header) || header.is_empty() {
            return Err(format!(
                "{} has other columns than this driver writes: record into a new file",
                path.display()
            ));
        }
        if header != CSV_HEADER {
            // An older file whose columns are a prefix of these: give it the new header.
            let rest = text.split_once('\n').map_or("", |(_, rest)| rest);
            std::fs::write(path, format!("{CSV_HEADER}\n{rest}"))
                .map_err(|error| format!("cannot rewrite {}: {error}", path.display()))?;
        }
    }
    let busy = |busy: &Busy| {
        format!("{:.0},{:.0},{:.0},{},{}", busy.p50_us, busy.p90_us, busy.p99_us, busy.sent, busy.verified)
    };
    let row = format!(
        "{},{},{},{},{},{},{:.0},{:.1},{:.0},{:.0},{:.2},{},{},{},{},{},{},{},{:.1},{:.0},{:.0},{},{},{:.0},{},{},{},{},{},{},{}",
        plan.connections,
        plan.workers,
        plan.processes,
        plan.idle_timeout,
        figures.established,
        figures.verified,
        figures.connect_per_s,
        figures.ready_s,
        figures.server_rss_b_per_conn,
        figures.kernel_b_per_pair,
        figures.idle_cpu_pct,
        figures.listen_overflows,
        plan.active,
        plan.rate,
        busy(&figures.busy_among_idle),
        busy(&figures.busy_alone),
        plan.connect_rate,
        plan.echo_rate,
        figures.connect_s,
        figures.loader_rss_b_per_conn,
        figures.slab_b_per_pair,
        figures.tcp_pages_held,
        figures.tcp_pages_fill_peak,
        figures.memavail_b_per_pair,
        figures.spread.fewest,
        figures.spread.most,
        plan.per_process,
        figures.busy_among_idle.losses.backlog_drops,
        figures.busy_among_idle.losses.retransmits,
        figures.busy_alone.losses.backlog_drops,
        figures.busy_alone.losses.retransmits,
    );
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|error| format!("cannot open {}: {error}", path.display()))?;
    let header = if new { format!("{CSV_HEADER}\n") } else { String::new() };
    writeln!(file, "{header}{row}").map_err(|error| format!("cannot write {}: {error}", path.display()))
}

/// Draws memory per connection and busy-client latency against connections from a CSV
/// written by `--record` (rows with the idle timeout off).
fn draw_chart(csv: &Path, svg: &Path) -> Result<(), String> {
    use evloop::load::chart::{Panel, Series, write_svg};
    let mut table = common::Table::try_read(csv)?;
    let needed =
        ["connections", "idle_timeout_s", "server_rss_b_per_conn", "kernel_b_per_conn", "busy_p50_us"];
    if let Some(missing) = needed.iter().find(|column| !table.has(column)) {
        return Err(format!("{} has no column {missing}: is it a CSV written by --record?", csv.display()));
    }
    let idle_timeout = table.column("idle_timeout_s");
    table.rows.retain(|row| row[idle_timeout] == 0.0);
    let series = |name: &str, field: &str| Series {
        name: name.to_string(),
        points: table.points("connections", field),
    };
    let memory = Panel {
        title: "Memory per idle connection".to_string(),
        x_label: "connections".to_string(),
        y_label: "bytes".to_string(),
        log_x: true,
        log_y: true,
        series: vec![
            series("server user space (RSS)", "server_rss_b_per_conn"),
            series("kernel, both ends", "kernel_b_per_conn"),
        ],
    };
    let latency = Panel {
        title: "1% busy clients at a fixed rate".to_string(),
        x_label: "connections held".to_string(),
        y_label: "µs".to_string(),
        log_x: true,
        log_y: true,
        series: vec![
            series("p50 among idle", "busy_p50_us"),
            series("p90 among idle", "busy_p90_us"),
            series("p50 alone", "alone_p50_us"),
            series("p90 alone", "alone_p90_us"),
        ],
    };
    write_svg(svg, &[memory, latency]).map_err(|error| format!("cannot write {}: {error}", svg.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sockets one process holds under this machine's 20,000 open-file limit.
    const PER_PROCESS: u64 = 20_000 - RESERVED_DESCRIPTORS;

    /// The rule's workers leave the fullest, at five standard deviations, within the limit,
    /// and one worker fewer would not.
    #[test]
    fn workers_leave_room_for_the_spread() {
        for connections in [30_000, 101_000, 303_000, 1_010_000, 2_020_000, 2_525_000] {
            let workers = workers_for(connections, PER_PROCESS);
            assert!(fullest_share(connections, workers) <= PER_PROCESS as f64, "{connections} on {workers}");
            assert!(
                fullest_share(connections, workers - 1) > PER_PROCESS as f64,
                "{connections} on {workers}"
            );
        }
        assert_eq!(workers_for(2_020_000, PER_PROCESS), 105);
        assert_eq!(workers_for(19_000, PER_PROCESS), 1);
    }

    /// No loader process, fill or busy, is given more connections than it may hold: 1% of two
    /// million busy clients take two processes, not one (the failure that started issue 37).
    #[test]
    fn loader_processes_stay_within_the_limit() {
        assert_eq!(processes_for(20_000, PER_PROCESS), 2);
        assert_eq!(processes_for(19_968, PER_PROCESS), 1);
        assert_eq!(processes_for(1, PER_PROCESS), 1);
        for connections in [1, 19_969, 300_000, 2_000_000, 2_500_000] {
            let processes = processes_for(connections, PER_PROCESS);
            assert!(connections.div_ceil(u64::from(processes)) <= PER_PROCESS);
        }
    }

    /// The connect rate falls with the processes sharing two cores, within its bounds.
    #[test]
    fn connect_rate_follows_the_process_count() {
        assert_eq!(connect_rate_for(4), MAX_CONNECT_RATE as u32);
        assert_eq!(connect_rate_for(206), 19_417);
        assert_eq!(connect_rate_for(100_000), MIN_CONNECT_RATE as u32);
    }

    /// Source ranges run across the third octet and are counted back exactly.
    #[test]
    fn sources_are_named_and_counted() {
        assert_eq!(loopback_range(0, 4), "127.0.0.1-127.0.0.4");
        assert_eq!(loopback_range(254, 3), "127.0.0.255-127.0.1.1");
        assert_eq!(count_sources("127.0.0.1-127.0.1.78").unwrap(), 334);
        assert_eq!(count_sources("127.0.0.1, 127.0.0.9-127.0.0.10").unwrap(), 3);
        assert!(count_sources("127.0.0.x").is_err());
    }

    /// `--workers` takes a count or `auto`, and refuses anything else in a sentence.
    #[test]
    fn workers_flag() {
        assert_eq!(parse_workers("auto"), Ok(Workers::Auto));
        assert_eq!(parse_workers("105"), Ok(Workers::Count(105)));
        assert!(parse_workers("0").is_err());
        assert!(parse_workers("many").is_err());
    }

    /// A loader report's failures are told by class, with what to do.
    #[test]
    fn failures_are_told() {
        let report: Value = serde_json::json!({"errors": {"turned_away": 3, "lost": 0}});
        assert!(error_story(&report).starts_with("3 turned_away (a worker was full"));
        assert_eq!(error_story(&serde_json::json!({"errors": {}})), "none");
    }
}
