//! Attacks on the server's memory by many clients that each hold a little, against the budget
//! for all clients (`--max-client-memory`) and without it: docs/benchmarks.md, "A memory
//! budget for all clients".
//!
//! Run:  cargo run --release --example attack                  (3 attacks x 3 budgets, ~2 min)
//!       cargo run --release --example attack -- --attacks lines --budgets 64M,0
//!       cargo run --release --example attack -- --charts-only  (redraw from docs/data/attack.csv)
//!
//! The attacks, each against a fresh release `evloop-server` with each of `--budgets`:
//! - **lines**: 15,000 connections each send 60,000 bytes of a line and never end it (under
//!   the 64 KiB frame limit, so each is a client in the middle of a message).
//! - **ws**: 4,000 WebSocket connections (`--max-frame 1M`) each send 60,000 bytes of a text
//!   message in fragments of 10,000 and never the last one.
//! - **room**: 2,000 members of a room, each with a 4 KiB receive buffer, never read, while
//!   one sender sends 1,000-byte lines flat out.
//!
//! The attackers are threads of this driver, each with its own sockets, so that one slow
//! connect does not hold up the rest: 15,000 connections fit in a process's 20,000 open
//! files (the server is a process of its own). More than that needs more processes, and
//! past ~25,000 more source addresses.
//!
//! Throughout, 20 honest echo clients each send a line every 10 ms and check its echo; their
//! latency says what the attack (and the evictions) cost everyone else. Every 100 ms, from a
//! second before the attack until the server's memory has held for `--hold` seconds with
//! the attack in place (RSS within 1%, no more evictions, the attackers' bytes all read),
//! the driver samples the server's RSS (/proc/PID/status) and, as last scraped from its
//! metrics listener, `evloop_client_memory_bytes` and `evloop_clients_evicted_total`. It
//! writes the samples to docs/data/attack.csv (keeping the rows of attacks and budgets not
//! run this time), draws docs/charts/attack.svg (RSS over time, a panel per attack, a line
//! per budget; and the room's gauge) and prints a Markdown table.
//!
//! To see one eviction by hand: `evloop-server --listen echo=127.0.0.1:7000
//! --max-client-memory 100K`, then twice, in two terminals,
//! `(head -c 60000 /dev/zero | tr '\0' x; cat) | nc 127.0.0.1 7000`: the two unfinished lines
//! hold more than 100K together, and one of the two is told `ERR evicted: ...`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use evloop::load::chart::{Panel, Series, write_svg};

mod common;

/// See the module documentation.
#[derive(Parser, Debug)]
struct Args {
    /// The attacks to run
    #[arg(long, value_delimiter = ',', default_value = "lines,ws,room")]
    attacks: Vec<Attack>,
    /// `--max-client-memory` of each server (0: no budget)
    #[arg(long, value_delimiter = ',', default_value = "256M,64M,0")]
    budgets: Vec<String>,
    /// lines: connections, each holding an unfinished line
    #[arg(long, default_value_t = 15_000)]
    lines_connections: usize,
    /// ws: connections, each holding an unfinished fragmented message
    #[arg(long, default_value_t = 4_000)]
    ws_connections: usize,
    /// lines and ws: bytes each attacker sends of its message
    #[arg(long, default_value_t = 60_000)]
    message_bytes: usize,
    /// room: members who never read
    #[arg(long, default_value_t = 2_000)]
    room_members: usize,
    /// room: lines the sender sends (of 1,000 bytes)
    #[arg(long, default_value_t = 4_000)]
    room_lines: usize,
    /// Threads the attackers connect from, each with its own sockets
    #[arg(long, default_value_t = 8)]
    threads: usize,
    /// Honest echo clients, each sending a line every 10 ms
    #[arg(long, default_value_t = 20)]
    honest: usize,
    /// Seconds the server's memory must hold (RSS within 1%, no more evictions) once the
    /// attack is in place before the run ends (30 s at most)
    #[arg(long, default_value_t = 3.0)]
    hold: f64,
    /// Where the samples go (CSV)
    #[arg(long, default_value = "docs/data/attack.csv")]
    csv: PathBuf,
    /// Where the chart goes (SVG)
    #[arg(long, default_value = "docs/charts/attack.svg")]
    chart: PathBuf,
    /// Measure nothing: redraw the chart from --csv
    #[arg(long)]
    charts_only: bool,
}

/// One way to make the server hold memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Attack {
    /// Unfinished lines.
    Lines,
    /// Unfinished fragmented WebSocket messages.
    Ws,
    /// A room whose members never read.
    Room,
}

impl Attack {
    fn name(self) -> &'static str {
        match self {
            Attack::Lines => "lines",
            Attack::Ws => "ws",
            Attack::Room => "room",
        }
    }

    fn title(self, args: &Args) -> String {
        match self {
            Attack::Lines => format!(
                "{} connections, {} bytes of a line each",
                thousands(args.lines_connections),
                thousands(args.message_bytes)
            ),
            Attack::Ws => format!(
                "{} WebSockets, {} bytes of a fragmented message each",
                thousands(args.ws_connections),
                thousands(args.message_bytes)
            ),
            Attack::Room => {
                format!("a room of {} members who never read", thousands(args.room_members))
            }
        }
    }
}

/// One sample: seconds since the attack began (negative before), the server's RSS, and the
/// metrics as last scraped (bytes all clients hold; clients evicted so far); and, not in
/// the CSV, the bytes the server has read and its CPU time so far (whether the attack holds,
/// and what holding costs).
#[derive(Clone, Copy, Debug)]
struct Sample {
    time: f64,
    rss: u64,
    client_memory: u64,
    evicted: u64,
    received: u64,
    cpu_us: f64,
}

/// What one attack on one server came to.
struct Outcome {
    attack: Attack,
    budget: String,
    samples: Vec<Sample>,
    /// Seconds from the first attacker's connect to the last one in place.
    took: f64,
    /// The server's CPU use while the attack held (the last `--hold` seconds), in percent
    /// of one core.
    held_cpu: f64,
    /// Attackers that could not connect or were refused before they were in place.
    refused: usize,
    /// The honest clients' round trips during the attack (µs), and those that failed.
    honest_us: Vec<u64>,
    honest_failed: u64,
}

fn main() {
    let args = Args::parse();
    if !args.charts_only {
        common::build(&["--bin", "evloop-server"]);
        let mut outcomes = Vec::new();
        for &attack in &args.attacks {
            for budget in &args.budgets {
                eprintln!("attack: {} against --max-client-memory {budget}", attack.name());
                outcomes.push(run(&args, attack, budget));
            }
        }
        print_table(&args, &outcomes);
        record(&args.csv, &outcomes);
    }
    draw(&args);
}

/// Starts a server with `budget`, samples it, attacks it, holds, and stops it.
fn run(args: &Args, attack: Attack, budget: &str) -> Outcome {
    let mut command = Command::new(common::binary("evloop-server"));
    command.args(["--listen", "echo=127.0.0.1:0", "--listen", "metrics=127.0.0.1:0"]);
    match attack {
        Attack::Lines => {}
        Attack::Ws => {
            command.args(["--listen", "echo:ws=127.0.0.1:0", "--max-frame", "1M"]);
        }
        Attack::Room => {
            command.args(["--listen", "broadcast=127.0.0.1:0"]);
        }
    }
    command.args(["--max-client-memory", budget]);
    let listeners = if attack == Attack::Lines { 2 } else { 3 };
    let (mut server, addrs) = common::start_listeners(command, listeners);
    let addr = |index: usize| -> SocketAddr { addrs[index].parse().expect("a listener's address") };
    let (echo, metrics) = (addr(0), addr(1));
    let target = if attack == Attack::Lines { echo } else { addr(2) };

    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let scraped = Arc::new(Scraped::default());
    let scraper = spawn_scraper(metrics, &scraped, &stop);
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = spawn_sampler(server.id(), started, &scraped, &samples, &stop);
    let honest: Vec<_> = (0..args.honest).map(|index| spawn_honest(echo, index, started, &stop)).collect();

    thread::sleep(Duration::from_secs(1));
    let attack_began = started.elapsed();
    let (held, refused) = match attack {
        Attack::Lines => from_threads(args, args.lines_connections, |_| unfinished_line(target, args)),
        Attack::Ws => from_threads(args, args.ws_connections, |_| unfinished_ws_message(target, args)),
        Attack::Room => room_that_never_reads(target, args, &scraped),
    };
    let took = (started.elapsed() - attack_began).as_secs_f64();
    let held_cpu = hold(args, &samples);

    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("the sampler");
    scraper.join().expect("the scraper");
    let samples = std::mem::take(&mut *samples.lock().unwrap());
    let (mut honest_us, mut honest_failed) = (Vec::new(), 0);
    for client in honest {
        let (round_trips, failed) = client.join().expect("an honest client");
        honest_us.extend(round_trips.into_iter().filter(|&(at, _)| at >= attack_began).map(|(_, us)| us));
        honest_failed += u64::from(failed);
    }
    drop(held);
    common::stop(&mut server);
    let began = attack_began.as_secs_f64();
    let samples = samples.into_iter().map(|sample| Sample { time: sample.time - began, ..sample }).collect();
    Outcome { attack, budget: budget.to_string(), samples, took, held_cpu, refused, honest_us, honest_failed }
}

/// Waits until the server's memory has held for `--hold` seconds (RSS within 1%, the gauge
/// and the evictions unchanged, and the server reading less than 1 MiB in all: the
/// attackers' bytes are read, what is left is the honest clients'), 30 s at most; the
/// server's CPU use over those seconds, in percent of one core.
fn hold(args: &Args, samples: &Mutex<Vec<Sample>>) -> f64 {
    let window = (args.hold * 10.0).round().max(2.0) as usize;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        thread::sleep(Duration::from_millis(100));
        let samples = samples.lock().unwrap();
        let Some(last) = samples.len().checked_sub(window).map(|first| &samples[first..]) else { continue };
        let (low, high) = last.iter().fold((u64::MAX, 0), |(low, high), s| (low.min(s.rss), high.max(s.rss)));
        let steady =
            last.iter().all(|s| s.evicted == last[0].evicted && s.client_memory == last[0].client_memory)
                && last[last.len() - 1].received.saturating_sub(last[0].received) < 1 << 20;
        if (high - low) * 100 <= low && steady || Instant::now() > deadline {
            let (first, end) = (last[0], last[last.len() - 1]);
            return (end.cpu_us - first.cpu_us) / ((end.time - first.time) * 1e6) * 100.0;
        }
    }
}

/// The metrics as last scraped.
#[derive(Default)]
struct Scraped {
    client_memory: AtomicU64,
    evicted: AtomicU64,
    connections_open: AtomicU64,
    received: AtomicU64,
}

/// Scrapes the metrics listener as often as it answers (every 50 ms at most) until `stop`.
/// On its own thread, so that a server too busy to answer late does not delay the RSS
/// samples: a sample takes the figures of the last scrape.
fn spawn_scraper(
    metrics: SocketAddr,
    scraped: &Arc<Scraped>,
    stop: &Arc<AtomicBool>,
) -> thread::JoinHandle<()> {
    let (scraped, stop) = (Arc::clone(scraped), Arc::clone(stop));
    thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            for (name, value) in scrape(metrics) {
                let gauge = match name.as_str() {
                    "evloop_client_memory_bytes" => &scraped.client_memory,
                    "evloop_clients_evicted_total" => &scraped.evicted,
                    "evloop_connections_open" => &scraped.connections_open,
                    "evloop_received_bytes_total" => &scraped.received,
                    _ => continue,
                };
                gauge.store(value, Ordering::Relaxed);
            }
            thread::sleep(Duration::from_millis(50));
        }
    })
}

/// The metrics listener's samples without labels: (name, value).
fn scrape(metrics: SocketAddr) -> Vec<(String, u64)> {
    let Ok(mut stream) = TcpStream::connect(metrics) else { return Vec::new() };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: attack\r\n\r\n");
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.contains('{'))
        .filter_map(|line| {
            let (name, value) = line.split_once(' ')?;
            Some((name.to_string(), value.trim().parse::<f64>().ok()? as u64))
        })
        .collect()
}

/// Samples the server's RSS every 100 ms, on a fixed schedule, into `samples` until `stop`.
fn spawn_sampler(
    pid: u32,
    started: Instant,
    scraped: &Arc<Scraped>,
    samples: &Arc<Mutex<Vec<Sample>>>,
    stop: &Arc<AtomicBool>,
) -> thread::JoinHandle<()> {
    let (scraped, samples, stop) = (Arc::clone(scraped), Arc::clone(samples), Arc::clone(stop));
    thread::spawn(move || {
        let mut next = started;
        while !stop.load(Ordering::Relaxed) {
            let sample = Sample {
                time: started.elapsed().as_secs_f64(),
                rss: common::status_field(pid, "VmRSS:") * 1024,
                client_memory: scraped.client_memory.load(Ordering::Relaxed),
                evicted: scraped.evicted.load(Ordering::Relaxed),
                received: scraped.received.load(Ordering::Relaxed),
                cpu_us: common::cpu_time(pid).total_us(),
            };
            samples.lock().unwrap().push(sample);
            // A sample taken late (a busy machine) moves the schedule on, rather than
            // making up for it with samples in a burst.
            next = (next + Duration::from_millis(100)).max(Instant::now());
            thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    })
}

/// An honest echo client: a line every 10 ms, its echo checked, until `stop` or a failure.
/// Returns its round trips (when each began, since `started`; how long it took, in µs) and
/// whether it failed (an error, a wrong echo, or told it was evicted).
fn spawn_honest(
    echo: SocketAddr,
    index: usize,
    started: Instant,
    stop: &Arc<AtomicBool>,
) -> thread::JoinHandle<(Vec<(Duration, u64)>, bool)> {
    let stop = Arc::clone(stop);
    thread::spawn(move || {
        let mut round_trips = Vec::new();
        let served = (|| -> std::io::Result<bool> {
            let stream = TcpStream::connect(echo)?;
            stream.set_read_timeout(Some(Duration::from_secs(30)))?;
            let mut writer = stream.try_clone()?;
            let mut reader = BufReader::new(stream);
            let mut reply = String::new();
            for sequence in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let line = format!("honest {index} {sequence}\n");
                let sent = Instant::now();
                writer.write_all(line.as_bytes())?;
                reply.clear();
                reader.read_line(&mut reply)?;
                if reply != line {
                    return Ok(false);
                }
                round_trips.push((sent - started, sent.elapsed().as_micros() as u64));
                thread::sleep(Duration::from_millis(10));
            }
            Ok(true)
        })();
        (round_trips, !matches!(served, Ok(true)))
    })
}

/// `count` attackers made by `attacker`, spread over `--threads` threads so that connecting
/// one does not wait for the last to finish sending. Returns the sockets in place (held
/// until the caller drops them) and how many were refused.
fn from_threads(
    args: &Args,
    count: usize,
    attacker: impl Fn(usize) -> Option<TcpStream> + Sync,
) -> (Vec<TcpStream>, usize) {
    let threads = args.threads.max(1);
    let attacker = &attacker;
    let sockets: Vec<Vec<Option<TcpStream>>> = thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|thread| {
                let share = count / threads + usize::from(thread < count % threads);
                scope.spawn(move || (0..share).map(attacker).collect::<Vec<_>>())
            })
            .collect();
        workers.into_iter().map(|worker| worker.join().expect("an attacker thread")).collect()
    });
    let all: Vec<Option<TcpStream>> = sockets.into_iter().flatten().collect();
    let refused = all.iter().filter(|socket| socket.is_none()).count();
    (all.into_iter().flatten().collect(), refused)
}

/// A connection that sends `--message-bytes` of a line and never ends it. An evicted
/// attacker may be closed before it is done sending: it still counts as in place.
fn unfinished_line(target: SocketAddr, args: &Args) -> Option<TcpStream> {
    let mut stream = TcpStream::connect(target).ok()?;
    stream.set_write_timeout(Some(Duration::from_secs(10))).ok()?;
    let _ = stream.write_all(&vec![b'x'; args.message_bytes]);
    Some(stream)
}

/// A WebSocket that sends `--message-bytes` of a text message in fragments of 10,000 bytes
/// (the first a text frame, the rest continuations, none final) and never the end.
fn unfinished_ws_message(target: SocketAddr, args: &Args) -> Option<TcpStream> {
    let mut stream = TcpStream::connect(target).ok()?;
    stream.set_write_timeout(Some(Duration::from_secs(10))).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {target}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    let mut byte = [0u8; 1];
    while !response.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).ok()?;
        response.push(byte[0]);
    }
    if !response.starts_with(b"HTTP/1.1 101") {
        return None;
    }
    let mut sent = 0;
    while sent < args.message_bytes {
        let length = (args.message_bytes - sent).min(10_000);
        let opcode = if sent == 0 { 0x01 } else { 0x00 }; // FIN clear: more to come
        let _ = stream.write_all(&masked_frame(opcode, length));
        sent += length;
    }
    Some(stream)
}

/// A client's frame of `length` bytes of `x`: header byte `first`, masked as a client must.
fn masked_frame(first: u8, length: usize) -> Vec<u8> {
    let mut frame = vec![first];
    match length {
        0..=125 => frame.push(0x80 | length as u8),
        126..=0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(length as u16).to_be_bytes());
        }
        _ => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(length as u64).to_be_bytes());
        }
    }
    let key = [0x37, 0xfa, 0x21, 0x3d];
    frame.extend_from_slice(&key);
    frame.extend((0..length).map(|index| b'x' ^ key[index % 4]));
    frame
}

/// `--room-members` members with 4 KiB receive buffers who never read, then a sender who
/// sends `--room-lines` lines of 1,000 bytes as fast as the server takes them. In place when
/// the last line is sent.
fn room_that_never_reads(target: SocketAddr, args: &Args, scraped: &Scraped) -> (Vec<TcpStream>, usize) {
    let (mut members, refused) = from_threads(args, args.room_members, |_| {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
        socket.set_recv_buffer_size(4096).ok()?;
        socket.connect(&target.into()).ok()?;
        Some(socket.into())
    });
    // Every member in the room before the first line: the honest clients, the members and
    // a scrape are open.
    let deadline = Instant::now() + Duration::from_secs(20);
    let everyone = (args.honest + members.len()) as u64;
    while scraped.connections_open.load(Ordering::Relaxed) < everyone && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let Ok(mut sender) = TcpStream::connect(target) else { return (members, refused + 1) };
    let _ = sender.set_write_timeout(Some(Duration::from_secs(30)));
    let mut line = vec![b'l'; 1000];
    line[999] = b'\n';
    let batch: Vec<u8> = line.repeat(64);
    for _ in 0..args.room_lines.div_ceil(64) {
        if sender.write_all(&batch).is_err() {
            break;
        }
    }
    members.push(sender);
    (members, refused)
}

/// The Markdown table of this run's outcomes.
fn print_table(args: &Args, outcomes: &[Outcome]) {
    println!(
        "\n| attack | --max-client-memory | RSS before | peak RSS | growth | peak gauge | evicted | in place after | server CPU while held | honest echo p99 / max | honest failed |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for outcome in outcomes {
        let before =
            outcome.samples.iter().take_while(|sample| sample.time < 0.0).last().map_or(0, |s| s.rss);
        let peak = outcome.samples.iter().map(|sample| sample.rss).max().unwrap_or(0);
        let gauge = outcome.samples.iter().map(|sample| sample.client_memory).max().unwrap_or(0);
        let evicted = outcome.samples.last().map_or(0, |sample| sample.evicted);
        let mut honest = outcome.honest_us.clone();
        honest.sort_unstable();
        let p99 = honest.get(honest.len() * 99 / 100).copied().unwrap_or(0);
        let max = honest.last().copied().unwrap_or(0);
        let refused =
            if outcome.refused > 0 { format!(" ({} refused)", outcome.refused) } else { String::new() };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} s{refused} | {:.0}% | {:.1} / {:.1} ms | {} of {} |",
            outcome.attack.name(),
            outcome.budget,
            mib(before),
            mib(peak),
            mib(peak.saturating_sub(before)),
            if gauge > 0 { mib(gauge) } else { "-".to_string() },
            thousands(evicted as usize),
            outcome.took,
            outcome.held_cpu,
            p99 as f64 / 1000.0,
            max as f64 / 1000.0,
            outcome.honest_failed,
            args.honest
        );
    }
}

/// Writes `outcomes` to `path`, keeping the rows of the attacks and budgets not run now.
fn record(path: &PathBuf, outcomes: &[Outcome]) {
    let rerun: Vec<(String, String)> =
        outcomes.iter().map(|outcome| (outcome.attack.name().to_string(), outcome.budget.clone())).collect();
    let mut csv = String::from("time,attack,budget,rss,client_memory,evicted\n");
    for line in std::fs::read_to_string(path).unwrap_or_default().lines().skip(1) {
        let cells: Vec<&str> = line.split(',').collect();
        if cells.len() == 6 && !rerun.iter().any(|(attack, budget)| attack == cells[1] && budget == cells[2])
        {
            csv.push_str(line);
            csv.push('\n');
        }
    }
    for outcome in outcomes {
        for sample in &outcome.samples {
            csv.push_str(&format!(
                "{:.2},{},{},{},{},{}\n",
                sample.time,
                outcome.attack.name(),
                outcome.budget,
                sample.rss,
                sample.client_memory,
                sample.evicted
            ));
        }
    }
    std::fs::write(path, csv).expect("write the CSV");
    println!("\nwrote {}", path.display());
}

/// The chart from the CSV: the server's RSS over time, a panel per attack and a line per
/// budget; and a last panel of what the room's clients hold as the budget counts them
/// (`evloop_client_memory_bytes`), which is where the count passes the budget.
fn draw(args: &Args) {
    let text = std::fs::read_to_string(&args.csv).expect("read the CSV");
    let mut runs: Vec<Recorded> = Vec::new();
    for line in text.lines().skip(1) {
        let cells: Vec<&str> = line.split(',').collect();
        let (Some(attack), Ok(time), Ok(rss), Ok(gauge)) = (
            cells.get(1).and_then(|name| Attack::from_str(name, true).ok()),
            cells[0].parse::<f64>(),
            cells.get(3).map_or(Ok(0.0), |cell| cell.parse::<f64>()),
            cells.get(4).map_or(Ok(0.0), |cell| cell.parse::<f64>()),
        ) else {
            continue;
        };
        let position =
            runs.iter().position(|run| run.attack == attack && run.budget == cells[2]).unwrap_or_else(|| {
                runs.push(Recorded { attack, budget: cells[2].to_string(), samples: Vec::new() });
                runs.len() - 1
            });
        runs[position].samples.push((time, rss / f64::from(1 << 20), gauge / f64::from(1 << 20)));
    }
    runs.sort_by_key(|run| run.attack);
    let mut panels: Vec<Panel> = Vec::new();
    for run in &runs {
        if panels.last().is_none_or(|panel| panel.title != run.attack.title(args)) {
            panels.push(Panel {
                title: run.attack.title(args),
                x_label: "seconds since the attack began".to_string(),
                y_label: "server RSS, MiB".to_string(),
                log_x: false,
                log_y: false,
                series: Vec::new(),
            });
        }
        let points = run.samples.iter().map(|&(time, rss, _)| (time, rss)).collect();
        panels.last_mut().unwrap().series.push(Series { name: budget_label(&run.budget), points });
    }
    let counted: Vec<Series> = runs
        .iter()
        .filter(|run| run.attack == Attack::Room && run.budget != "0")
        .map(|run| Series {
            name: budget_label(&run.budget),
            points: run.samples.iter().map(|&(time, _, gauge)| (time, gauge)).collect(),
        })
        .collect();
    if !counted.is_empty() {
        panels.push(Panel {
            title: "The room: what its clients hold, as counted".to_string(),
            x_label: "seconds since the attack began".to_string(),
            y_label: "evloop_client_memory_bytes, MiB".to_string(),
            log_x: false,
            log_y: false,
            series: counted,
        });
    }
    write_svg(&args.chart, &panels).expect("write the chart");
    println!("wrote {}", args.chart.display());
}

/// One run as the CSV recorded it.
struct Recorded {
    attack: Attack,
    budget: String,
    /// Seconds since the attack began, the server's RSS and the gauge, both in MiB.
    samples: Vec<(f64, f64, f64)>,
}

/// How a budget reads in the legend.
fn budget_label(budget: &str) -> String {
    match budget {
        "0" => "--max-client-memory 0 (none)".to_string(),
        "256M" => "--max-client-memory 256M (default)".to_string(),
        other => format!("--max-client-memory {other}"),
    }
}

/// `bytes` in MiB, e.g. `865 MiB`.
fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / f64::from(1 << 20))
}

/// `15000` as `15,000`.
fn thousands(value: usize) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}
