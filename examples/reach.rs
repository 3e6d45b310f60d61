//! How long one line takes to reach every member of a big room: the benchmark behind
//! docs/benchmarks.md ("Rooms over a backplane"). The room is served by `--workers N` sharing
//! it over a backplane; its members are held by several processes of this program (each
//! process may open only ~20,000 sockets here), spread over 127.0.0.x source addresses. One
//! more connection sends numbered lines, one at a time; every member checks that it gets each
//! line exactly once and intact, and each holder reports when its last member got it. The
//! reach time of a line is the latest of those arrivals less its send time (both on the
//! system-wide monotonic clock).
//!
//! With `--codec ws` the members are WebSocket clients (each through its opening handshake,
//! then reading frames) on a `broadcast:ws` listener of the same room, the sender a line
//! client: browsers and `nc` in one room. The server's WebSocket pings are off for the run
//! (`--ws-ping 0`): connecting 100,000 members takes longer than a ping interval, and the
//! holders do not answer pings.
//!
//! Run:  cargo run --release --example reach -- --members 10000,100000 --workers 8
//!       cargo run --release --example reach -- --members 100000 --workers 8 --codec ws
//!       cargo run --release --example reach -- --members 2000 --workers 2 --lines 5   (a taste)
//!
//! Needs `redis-server` (or `nats-server` with `--engine nats`) on PATH.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

mod common;

/// See the module documentation.
#[derive(Parser, Debug)]
struct Args {
    /// Room sizes to measure
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    members: Vec<u32>,
    /// Server worker processes
    #[arg(long, default_value_t = 8)]
    workers: u32,
    /// The engine: redis or nats
    #[arg(long, default_value = "redis")]
    engine: String,
    /// Lines sent per room size (one at a time)
    #[arg(long, default_value_t = 20)]
    lines: u32,
    /// Members per holder process
    #[arg(long, default_value_t = 16_000)]
    per_holder: u32,
    /// The members' codec: line, or ws (WebSocket clients; the sender stays a line client)
    #[arg(long, default_value = "line")]
    codec: String,
    /// A busy echo client beside the room (evloop-load, 4 connections, 1,000 requests a
    /// second in all, open loop) while the lines go out: does the room starve the others?
    #[arg(long)]
    echo: bool,
    /// Only draw reach against members from a CSV of measured rows (docs/data/reach.csv:
    /// members,workers,engine,reach_p50_ms,reach_max_ms,...), then exit:
    /// `--chart docs/data/reach.csv=docs/charts/reach.svg`
    #[arg(long, value_name = "CSV=SVG")]
    chart: Option<String>,
    /// Internal: run as a holder of COUNT members of the room at ADDR, sender SENDER,
    /// connecting from SOURCES (comma-separated, in turn), speaking CODEC
    #[arg(long, num_args = 5, value_names = ["ADDR", "COUNT", "SENDER", "SOURCES", "CODEC"], hide = true)]
    hold: Option<Vec<String>>,
}

fn main() {
    let args = Args::parse();
    if let Some(hold) = &args.hold {
        let sources: Vec<IpAddr> = hold[3].split(',').map(|source| source.parse().unwrap()).collect();
        return holder(&hold[0], hold[1].parse().unwrap(), &hold[2], &sources, hold[4] == "ws");
    }
    if let Some(chart) = &args.chart {
        let (csv, svg) = chart.split_once('=').expect("--chart CSV=SVG");
        return draw_chart(csv.as_ref(), svg.as_ref());
    }
    common::build(&["--bin", "evloop-server", "--bin", "evloop-load", "--example", "reach"]);
    println!(
        "{} workers over {}; members over {}; {} lines per room, one at a time; reach = the last member's arrival less the send time.\n",
        args.workers, args.engine, args.codec, args.lines
    );
    println!(
        "| members | holders | connect s | reach p50 ms | reach p99 ms | reach max ms | deliveries verified | server RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &members in &args.members {
        measure(&args, members);
    }
    println!();
    println!("Where the time goes, per line (medians over the lines; times from the send):");
    println!();
    println!(
        "| members | receipt at workers, first / last ms | server's last write ms | last member has it ms | releases per worker | server CPU ms | holders CPU ms | engine CPU ms | µs per delivery: server / holders |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (members, breakdown) in breakdowns().lock().unwrap().iter() {
        breakdown.print(*members);
    }
    let echo = echo_figures().lock().unwrap();
    if !echo.is_empty() {
        println!();
        println!("A busy echo client beside the room (4 connections, 1,000 requests/s, open loop):");
        println!();
        println!("| members | over (of the lines) | echoes verified | p50 ms | p99 ms | max ms | ok |");
        println!("|---|---|---|---|---|---|---|");
        for row in echo.iter() {
            println!("{row}");
        }
    }
}

/// The echo client's rows, printed after the main table.
fn echo_figures() -> &'static std::sync::Mutex<Vec<String>> {
    static ROWS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    &ROWS
}

/// The breakdowns measured so far, printed after the main table.
fn breakdowns() -> &'static std::sync::Mutex<Vec<(u32, Breakdown)>> {
    static BREAKDOWNS: std::sync::Mutex<Vec<(u32, Breakdown)>> = std::sync::Mutex::new(Vec::new());
    &BREAKDOWNS
}

/// Where a line's time goes, from the workers' trace (`RUST_LOG=evloop::room=debug`) and the
/// CPU time of each part.
#[derive(Debug, Default)]
struct Breakdown {
    /// Per line: when the first and the last worker got it from the backplane (ms after the
    /// send; the sender's own worker delivers it without the backplane).
    receipt_ms: Vec<(f64, f64)>,
    /// Per line: when the last worker finished writing it to its members.
    written_ms: Vec<f64>,
    /// Per line: the most releases one worker took to write it to all its members.
    releases: Vec<u32>,
    /// Per line: when the last member had it (the holders' reports).
    reach_ms: Vec<f64>,
    /// Server, holders, engine.
    cpu_per_line_ms: Vec<f64>,
}

impl Breakdown {
    /// Reads the trace: for line N, the entries whose text holds `L{N} `.
    fn of(trace: &str, sent: &[u64]) -> Breakdown {
        let field = |line: &str, name: &str| -> Option<u64> {
            let start = line.find(name)? + name.len();
            line[start..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
        };
        let mut breakdown = Breakdown::default();
        for (number, &sent_ns) in sent.iter().enumerate() {
            let tag = format!("L{number} {sent_ns}");
            let ms = |ns: u64| ns.saturating_sub(sent_ns) as f64 / 1e6;
            let entries: Vec<&str> = trace.lines().filter(|entry| entry.contains(&tag)).collect();
            let receipts: Vec<f64> = entries
                .iter()
                .filter(|entry| entry.contains("from the backplane"))
                .filter_map(|entry| field(entry, "at_ns=").map(ms))
                .collect();
            let first = receipts.iter().copied().fold(f64::INFINITY, f64::min);
            let last = receipts.iter().copied().fold(0.0, f64::max);
            breakdown.receipt_ms.push((if first.is_finite() { first } else { 0.0 }, last));
            let releases: Vec<(u64, u64)> = entries
                .iter()
                .filter(|entry| entry.contains("room released"))
                .filter_map(|entry| Some((field(entry, "pid=")?, field(entry, "ended_ns=")?)))
                .collect();
            breakdown.written_ms.push(releases.iter().map(|&(_, ended)| ms(ended)).fold(0.0, f64::max));
            let mut per_worker: HashMap<u64, u32> = HashMap::new();
            for (pid, _) in releases {
                *per_worker.entry(pid).or_default() += 1;
            }
            breakdown.releases.push(per_worker.values().copied().max().unwrap_or(0));
        }
        breakdown
    }

    fn print(&self, members: u32) {
        let median = |values: Vec<f64>| {
            let mut values = values;
            values.sort_by(f64::total_cmp);
            values.get(values.len() / 2).copied().unwrap_or(0.0)
        };
        let per_delivery = |cpu_ms: f64| cpu_ms * 1000.0 / f64::from(members);
        println!(
            "| {members} | {:.1} / {:.1} | {:.1} | {:.1} | {:.0} | {:.1} | {:.1} | {:.1} | {:.2} / {:.2} |",
            median(self.receipt_ms.iter().map(|&(first, _)| first).collect()),
            median(self.receipt_ms.iter().map(|&(_, last)| last).collect()),
            median(self.written_ms.clone()),
            median(self.reach_ms.clone()),
            median(self.releases.iter().map(|&count| f64::from(count)).collect()),
            self.cpu_per_line_ms[0],
            self.cpu_per_line_ms[1],
            self.cpu_per_line_ms[2],
            per_delivery(self.cpu_per_line_ms[0]),
            per_delivery(self.cpu_per_line_ms[1]),
        );
    }
}

/// Nanoseconds on CLOCK_MONOTONIC: the same clock in every process of this machine.
fn monotonic_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes into the struct we pass, which lives for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

struct Holder {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Holder {
    /// The next line it prints.
    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("a holder's report");
        assert!(!line.is_empty(), "a holder died");
        line.trim_end().to_string()
    }
}

fn measure(args: &Args, members: u32) {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let mut engine = match args.engine.as_str() {
        "nats" => {
            let mut command = Command::new("nats-server");
            command.args(["-a", "127.0.0.1", "-p", &port]);
            command
        }
        _ => {
            let mut command = Command::new("redis-server");
            command.args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
            // The default pub/sub output limit (32 MiB) cuts off a subscriber that a burst
            // of a million deliveries keeps busy; this benchmark measures the room, not that.
            command.args(["--client-output-buffer-limit", "pubsub 0 0 0"]);
            command
        }
    };
    let mut engine = engine.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start the engine");
    std::thread::sleep(Duration::from_millis(300));
    let url = format!("{}://127.0.0.1:{port}", if args.engine == "nats" { "nats" } else { "redis" });
    let mut server = Command::new(common::binary("evloop-server"));
    server.args(["--listen", "broadcast=127.0.0.1:0", "--workers", &args.workers.to_string()]);
    server.args(["--backplane", &url, "--max-output", "64M"]);
    let websocket = args.codec == "ws";
    if websocket {
        // The members' listener, the same room; the sender stays on the line listener.
        server.args(["--listen", "broadcast:ws=127.0.0.1:0", "--ws-ping", "0"]);
    }
    if args.echo {
        server.args(["--listen", "echo=127.0.0.1:0"]);
    }
    // Each worker logs when a line came from the backplane and when each release of the room
    // started and ended (monotonic ns): the breakdown below reads them.
    let trace_path = std::path::PathBuf::from(common::binary(&format!("reach-trace-{members}.log")));
    let trace = std::fs::File::create(&trace_path).expect("the trace file");
    server.env("RUST_LOG", "warn,evloop::room=debug");
    let mut server = server.stdout(Stdio::piped()).stderr(trace).spawn().expect("start the server");
    let mut startup = BufReader::new(server.stdout.take().unwrap());
    let mut listening = || {
        let mut line = String::new();
        startup.read_line(&mut line).expect("a startup line");
        // `<handler> listening on <addr> (<codec>)`
        line.split(' ').nth(3).expect("an address").to_string()
    };
    let addr = listening();
    let members_addr = if websocket { listening() } else { addr.clone() };
    let echo_addr = args.echo.then(&mut listening);

    let mut sender = TcpStream::connect(&addr).expect("connect the sender");
    let sender_name = sender.local_addr().unwrap().to_string();
    let started = Instant::now();
    let holder_count = members.div_ceil(args.per_holder);
    let mut holders: Vec<Holder> = (0..holder_count)
        .map(|index| {
            let count = (members - index * args.per_holder).min(args.per_holder);
            // Two source addresses per holder, 8,000 connections each: with
            // IP_BIND_ADDRESS_NO_PORT the kernel picks a connect port from the even half of
            // the range first (~14,000 ports); past that, each connect scans the bind table,
            // and at a million members connects crawled.
            let source = |k: u32| Ipv4Addr::new(127, 0, 1 + (k / 250) as u8, 2 + (k % 250) as u8);
            let sources = format!("{},{}", source(2 * index), source(2 * index + 1));
            let mut child = Command::new(common::binary("examples/reach"))
                .args(["--hold", &members_addr, &count.to_string(), &sender_name, &sources, &args.codec])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("start a holder");
            let stdin = child.stdin.take().unwrap();
            let stdout = BufReader::new(child.stdout.take().unwrap());
            Holder { child, stdin, stdout }
        })
        .collect();
    for holder in &mut holders {
        let line = holder.line();
        assert!(line.starts_with("connected"), "{line}");
    }
    let connect_s = started.elapsed().as_secs_f64();

    // Every member is surely in the room once each has seen a sync line (the server handles
    // a connection's lines in order, and the workers subscribe before they accept).
    let mut synced = 0;
    while synced < holders.len() {
        sender.write_all(b"sync\n").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        synced = 0;
        for holder in &mut holders {
            writeln!(holder.stdin, "synced?").unwrap();
            if holder.line() == "synced" {
                synced += 1;
            }
        }
    }

    // CPU time (user + system) of the server's processes, the holders and the engine over
    // the measured lines.
    let server_pids =
        || std::iter::once(server.id()).chain(common::children(server.id())).collect::<Vec<_>>();
    let cpu_of = |pids: &[u32]| pids.iter().map(|&pid| common::cpu_time(pid).total_us()).sum::<f64>();
    let holder_pids: Vec<u32> = holders.iter().map(|holder| holder.child.id()).collect();
    let cpu_before = [cpu_of(&server_pids()), cpu_of(&holder_pids), cpu_of(&[engine.id()])];
    let mut reach_ms = Vec::new();
    let mut sent = Vec::new();
    let mut echo: Option<Child> = None;
    let lines_started = Instant::now();
    for line in 0..args.lines {
        let sent_ns = monotonic_ns();
        sent.push(sent_ns);
        sender.write_all(format!("L{line} {sent_ns}\n").as_bytes()).unwrap();
        let mut last_ns = 0;
        for holder in &mut holders {
            // "got LINE LAST_NS": every member of that holder has line LINE.
            let report = holder.line();
            let mut fields = report.split(' ');
            assert_eq!(fields.next(), Some("got"), "{report}");
            assert_eq!(fields.next(), Some(line.to_string().as_str()), "{report}");
            last_ns = last_ns.max(fields.next().unwrap().parse::<u64>().unwrap());
        }
        reach_ms.push((last_ns - sent_ns) as f64 / 1e6);
        if let (0, Some(echo_addr)) = (line, &echo_addr) {
            // Within the rest of the lines, so that every echo meets a burst: half as long as
            // they should take, judging by this one (the first line is the slowest).
            let seconds = (f64::from(args.lines - 1) * reach_ms[0] * 0.5 / 1000.0).max(1.0);
            echo = Some(
                Command::new(common::binary("evloop-load"))
                    .args(["--target", echo_addr, "-c", "4", "-R", "1000", "--json", "--no-progress"])
                    .args(["-d", &format!("{seconds:.1}s")])
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("start the echo client"),
            );
        }
    }
    if let Some(echo) = echo.take() {
        let output = echo.wait_with_output().unwrap();
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("the echo report");
        let latency = &report["latency_us"];
        let ms = |field: &str| latency[field].as_f64().unwrap_or(0.0) / 1000.0;
        echo_figures().lock().unwrap().push(format!(
            "| {members} | {:.1} s of {:.1} s | {} | {:.1} | {:.1} | {:.1} | {} |",
            report["duration_s"].as_f64().unwrap_or(0.0),
            lines_started.elapsed().as_secs_f64(),
            report["messages"]["verified"],
            ms("p50"),
            ms("p99"),
            ms("max"),
            report["ok"]
        ));
    }
    let cpu_after = [cpu_of(&server_pids()), cpu_of(&holder_pids), cpu_of(&[engine.id()])];
    let cpu_per_line_ms: Vec<f64> =
        (0..3).map(|part| (cpu_after[part] - cpu_before[part]) / 1000.0 / f64::from(args.lines)).collect();
    let mut verified = 0u64;
    let mut failures = 0u64;
    for holder in &mut holders {
        writeln!(holder.stdin, "done").unwrap();
        let report = holder.line();
        let mut fields = report.split(' ').skip(1).map(|n| n.parse::<u64>().unwrap());
        verified += fields.next().unwrap();
        failures += fields.next().unwrap();
        let _ = holder.child.wait();
    }
    let rss_kib: u64 = std::iter::once(server.id())
        .chain(common::children(server.id()))
        .map(|pid| common::status_field(pid, "VmRSS:"))
        .sum();
    common::stop(&mut server);
    let _ = engine.kill();
    let _ = engine.wait();
    let mut breakdown = Breakdown::of(&std::fs::read_to_string(&trace_path).unwrap_or_default(), &sent);
    breakdown.cpu_per_line_ms = cpu_per_line_ms;
    breakdown.reach_ms = reach_ms.clone();
    breakdowns().lock().unwrap().push((members, breakdown));
    reach_ms.sort_by(f64::total_cmp);
    let pick = |q: f64| reach_ms[((reach_ms.len() - 1) as f64 * q).round() as usize];
    let expected = u64::from(members) * u64::from(args.lines);
    println!(
        "| {members} | {holder_count} | {connect_s:.1} | {:.1} | {:.1} | {:.1} | {verified} of {expected}{} | {:.0} |",
        pick(0.5),
        pick(0.99),
        pick(1.0),
        if failures > 0 { format!(", {failures} FAILED") } else { String::new() },
        rss_kib as f64 / 1024.0
    );
}

/// One member connection of a holder.
struct Member {
    stream: MioStream,
    /// An incomplete line (or WebSocket frame).
    tail: Vec<u8>,
    /// Which measured lines it got (bit N: line N).
    got: u64,
    synced: bool,
}

/// A holder process: opens `count` members (WebSocket clients if `websocket`), then reads
/// the room, answering the parent's questions on stdin ("synced?", "done") and reporting each
/// measured line once all its members have it.
fn holder(addr: &str, count: u32, sender: &str, sources: &[IpAddr], websocket: bool) {
    let target: SocketAddr = addr.parse().unwrap();
    let mut poll = Poll::new().unwrap();
    let mut members: Slab<Member> = Slab::with_capacity(count as usize);
    for index in 0..count as usize {
        let source = sources[index % sources.len()];
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        // Without IP_BIND_ADDRESS_NO_PORT, bind() picks the port at once by scanning the bind
        // table, which holds every holder's ports: at a million members that scan slowed
        // connects to ~50 a second. With it, the port is picked at connect, per destination.
        set_bind_address_no_port(&socket);
        socket.bind(&SocketAddr::new(source, 0).into()).unwrap();
        socket.connect(&target.into()).expect("connect a member");
        let mut early = Vec::new();
        if websocket {
            early = open_websocket(&socket, addr);
        }
        socket.set_nonblocking(true).unwrap();
        let mut stream = MioStream::from_std(socket.into());
        let entry = members.vacant_entry();
        poll.registry().register(&mut stream, Token(entry.key()), Interest::READABLE).unwrap();
        entry.insert(Member { stream, tail: early, got: 0, synced: false });
    }
    let mut stdout = std::io::stdout();
    writeln!(stdout, "connected {count}").unwrap();
    stdout.flush().unwrap();

    // The parent's commands arrive on stdin, read on a thread.
    let (commands, command) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if commands.send(line).is_err() {
                break;
            }
        }
        // The parent is gone: so is this holder.
        let _ = commands.send("exit".to_string());
    });

    let prefix = format!("{sender}: ");
    let mut events = Events::with_capacity(4096);
    let mut buffer = vec![0u8; 64 * 1024];
    let mut synced = 0u32;
    // Per measured line (at most 64): members that have it, and the latest arrival.
    let mut arrivals = [(0u32, 0u64); 64];
    let mut next_report = 0u64;
    let (mut verified, mut failures) = (0u64, 0u64);
    loop {
        poll.poll(&mut events, Some(Duration::from_millis(5))).unwrap();
        let now = monotonic_ns();
        for event in events.iter() {
            let Some(member) = members.get_mut(event.token().0) else { continue };
            loop {
                match member.stream.read(&mut buffer) {
                    Ok(0) => {
                        failures += 1;
                        break;
                    }
                    Ok(n) => {
                        // A holder must cost less per delivery than the server it measures:
                        // a short read drained the socket (edge-triggered: more raises a new
                        // edge), so it is the last, saving the read that would say EAGAIN.
                        let drained = n < buffer.len();
                        member.tail.extend_from_slice(&buffer[..n]);
                        while let Some(line) = next_line(&mut member.tail, websocket) {
                            let Some(text) = line.strip_prefix(prefix.as_bytes()) else {
                                failures += 1;
                                continue;
                            };
                            if text == b"sync" {
                                if !member.synced {
                                    member.synced = true;
                                    synced += 1;
                                }
                                continue;
                            }
                            // "L<n> <sent_ns>": counted once per member and line.
                            let parsed = std::str::from_utf8(text).ok().and_then(|text| {
                                let (number, sent) = text.strip_prefix('L')?.split_once(' ')?;
                                Some((number.parse::<u64>().ok()?, sent.parse::<u64>().ok()?))
                            });
                            match parsed {
                                Some((number, _)) if number < 64 && member.got & (1 << number) == 0 => {
                                    member.got |= 1 << number;
                                    verified += 1;
                                    let entry = &mut arrivals[number as usize];
                                    entry.0 += 1;
                                    entry.1 = entry.1.max(now);
                                }
                                _ => failures += 1,
                            }
                        }
                        if drained {
                            break;
                        }
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        failures += 1;
                        break;
                    }
                }
            }
        }
        while let Some(&(have, last_ns)) = arrivals.get(next_report as usize) {
            if have < count {
                break;
            }
            writeln!(stdout, "got {next_report} {last_ns}").unwrap();
            stdout.flush().unwrap();
            next_report += 1;
        }
        while let Ok(command) = command.try_recv() {
            match command.as_str() {
                "synced?" => {
                    writeln!(stdout, "{}", if synced == count { "synced" } else { "waiting" }).unwrap()
                }
                "done" => {
                    writeln!(stdout, "done {verified} {failures}").unwrap();
                    stdout.flush().unwrap();
                    return;
                }
                "exit" => return,
                _ => {}
            }
            stdout.flush().unwrap();
        }
    }
}

/// The next whole line of `tail`, taken out of it: up to a newline, or (`websocket`) the
/// payload of one frame (the server's are unmasked and whole: a room line is one text frame).
fn next_line(tail: &mut Vec<u8>, websocket: bool) -> Option<Vec<u8>> {
    if !websocket {
        let end = tail.iter().position(|&byte| byte == b'\n')?;
        let mut line: Vec<u8> = tail.drain(..=end).collect();
        line.pop();
        return Some(line);
    }
    let (length, header) = match *tail.get(1)? & 0x7f {
        126 => (usize::from(u16::from_be_bytes(tail.get(2..4)?.try_into().unwrap())), 4),
        127 => (u64::from_be_bytes(tail.get(2..10)?.try_into().unwrap()) as usize, 10),
        short => (usize::from(short), 2),
    };
    if tail.len() < header + length {
        return None;
    }
    let line = tail[header..header + length].to_vec();
    tail.drain(..header + length);
    Some(line)
}

/// The WebSocket opening handshake on a connected (blocking) socket; returns what came
/// after the server's answer (the start of its first frame, if any).
fn open_websocket(socket: &socket2::Socket, host: &str) -> Vec<u8> {
    let mut stream: &TcpStream = &TcpStream::from(socket.try_clone().unwrap());
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    while !answer.windows(4).any(|window| window == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "the server closed during the WebSocket handshake");
        answer.extend_from_slice(&chunk[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&answer));
    let end = answer.windows(4).position(|window| window == b"\r\n\r\n").unwrap() + 4;
    answer.split_off(end)
}

/// Sets `IP_BIND_ADDRESS_NO_PORT` (Linux 4.2+), which socket2 does not wrap.
fn set_bind_address_no_port(socket: &socket2::Socket) {
    use std::os::fd::AsRawFd;
    let enable: libc::c_int = 1;
    // SAFETY: the pointer and length describe a live c_int for the duration of the call, and
    // the descriptor belongs to `socket`, which outlives the call.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const enable).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Reach (p50 and the worst line) and CPU per delivery against members, from rows measured
/// one run each (the header names the columns).
fn draw_chart(csv: &std::path::Path, svg: &std::path::Path) {
    use evloop::load::chart::{Panel, Series, write_svg};
    let table = common::Table::read(csv);
    let series =
        |name: &str, field: &str| Series { name: name.to_string(), points: table.points("members", field) };
    let reach = Panel {
        title: "Time for a line to reach every member".to_string(),
        x_label: "members".to_string(),
        y_label: "ms".to_string(),
        log_x: true,
        log_y: true,
        series: vec![series("p50", "reach_p50_ms"), series("worst of the lines", "reach_max_ms")],
    };
    let cost = Panel {
        title: "CPU per delivery".to_string(),
        x_label: "members".to_string(),
        y_label: "µs".to_string(),
        log_x: true,
        log_y: false,
        series: vec![
            series("server (all workers)", "server_us_per_delivery"),
            series("holders (the members)", "holder_us_per_delivery"),
        ],
    };
    write_svg(svg, &[reach, cost]).expect("write the chart");
}
