//! The connection-count benchmark behind docs/benchmarks.md ("Connections"): fill the server
//! with idle connections, check every one answers, measure what they cost, then measure a
//! few busy clients among them against the same few alone.
//!
//! Run:  cargo run --release --example scale -- --connections 100000 --workers 6 \
//!           --processes 6 --sources 127.0.0.1-127.0.0.20
//!
//! Steps, each bounded in time:
//! 1. start `evloop-server --workers W` and note each worker's memory;
//! 2. `evloop-load -c C -n C --hold H`: every connection up (connect rate = accept rate),
//!    each answers one verified echo, then all are held idle;
//! 3. while they are held: server RSS and kernel memory per connection, worker CPU while
//!    idle, listen-queue overflows;
//! 4. still held: `--active` clients at a fixed rate (p50/p90 latency among C idle ones);
//! 5. after: the same active clients alone, for comparison.
//!
//! Recipe for large counts (docs/benchmarks.md): about 6,000 connections per source address
//! keeps connect() fast; each process may hold ~19,900 sockets here.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::Value;

mod common;

/// See the module documentation.
#[derive(Parser, Debug)]
struct Args {
    /// Idle connections to hold
    #[arg(long, default_value_t = 10_000)]
    connections: u32,
    /// Server worker processes
    #[arg(long, default_value_t = 1)]
    workers: u32,
    /// Loader processes
    #[arg(long, default_value_t = 1)]
    processes: u32,
    /// Loader source addresses (e.g. 127.0.0.1-127.0.0.20)
    #[arg(long, default_value = "127.0.0.1-127.0.0.8")]
    sources: String,
    /// Seconds to hold the connections idle (memory and idle CPU are measured meanwhile)
    #[arg(long, default_value_t = 20)]
    hold: u32,
    /// Busy clients for the latency comparison (default: 1% of the connections, at least 1)
    #[arg(long)]
    active: Option<u32>,
    /// Their total rate, messages per second
    #[arg(long, default_value_t = 10_000)]
    rate: u32,
    /// Server idle timeout in seconds (to show the timer wheel at this count); 0: off
    #[arg(long, default_value_t = 0)]
    idle_timeout: u32,
    /// Append this run's figures as a CSV row to FILE (header written if the file is new)
    #[arg(long, value_name = "FILE")]
    record: Option<std::path::PathBuf>,
    /// Only draw the chart of a recorded CSV into SVG (memory and latency against
    /// connections), then exit: `--chart docs/data/scale.csv=docs/charts/scale.svg`
    #[arg(long, value_name = "CSV=SVG")]
    chart: Option<String>,
}

/// What one row measured: the fill (connect, verify, hold) and the busy clients.
struct Figures {
    established: u64,
    verified: u64,
    accept_per_s: f64,
    ready_s: f64,
    server_rss_b_per_conn: f64,
    kernel_b_per_conn: f64,
    idle_cpu_pct: f64,
    listen_overflows: u64,
    /// The busy clients' runs: among the idle connections, then alone.
    busy_among_idle: Busy,
    busy_alone: Busy,
}

/// A busy-client run's figures.
struct Busy {
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    sent: u64,
    verified: u64,
    errors: String,
}

impl Busy {
    fn of(report: &Value) -> Busy {
        let latency = |field: &str| report["latency_us"][field].as_f64().unwrap_or(0.0);
        Busy {
            p50_us: latency("p50"),
            p90_us: latency("p90"),
            p99_us: latency("p99"),
            sent: report["messages"]["sent"].as_u64().unwrap_or(0),
            verified: report["messages"]["verified"].as_u64().unwrap_or(0),
            errors: report["errors"].to_string(),
        }
    }
}

/// The columns `--record` writes.
const CSV_HEADER: &str = "connections,workers,processes,idle_timeout_s,established,verified,accept_per_s,ready_s,server_rss_b_per_conn,kernel_b_per_conn,idle_cpu_pct,listen_overflows,busy,rate,busy_p50_us,busy_p90_us,busy_p99_us,busy_sent,busy_verified,alone_p50_us,alone_p90_us,alone_p99_us,alone_sent,alone_verified";

fn main() {
    let args = Args::parse();
    if let Some(chart) = &args.chart {
        let (csv, svg) = chart.split_once('=').expect("--chart CSV=SVG");
        return draw_chart(std::path::Path::new(csv), std::path::Path::new(svg));
    }
    // The hold must outlast everything measured during it (1 s settle, the idle window of a
    // quarter of the hold, 6 s of busy clients), or closing connections would disturb them.
    assert!(args.hold >= 12, "--hold must be at least 12 seconds");
    let active = args.active.unwrap_or((args.connections / 100).max(1));
    common::build(&["--bin", "evloop-server", "--bin", "evloop-load"]);
    let figures = measure(&args, active);
    print_tables(&args, active, &figures);
    if let Some(path) = &args.record {
        record(path, &args, active, &figures);
    }
    assert_eq!(figures.verified, u64::from(args.connections), "every connection must answer");
}

fn measure(args: &Args, active: u32) -> Figures {
    let mut command = Command::new(common::binary("evloop-server"));
    command.args(["--workers", &args.workers.to_string(), "--listen", "echo=127.0.0.1:0"]);
    if args.idle_timeout > 0 {
        command.args(["--idle-timeout", &args.idle_timeout.to_string()]);
    }
    let (mut server, target) = common::start_server(command);
    // With --workers 1 the server is the reactor; with more, its children are.
    let workers = if args.workers > 1 { common::children(server.id()) } else { vec![server.id()] };
    assert_eq!(workers.len(), args.workers as usize, "worker pids");
    let rss_kib = || -> u64 { workers.iter().map(|&pid| common::status_field(pid, "VmRSS:")).sum() };
    let cpu_ticks = || -> u64 { workers.iter().map(|&pid| common::cpu_ticks(pid)).sum() };
    let (rss_before, kernel_before, overflows_before) = (rss_kib(), kernel_kib(), listen_overflows());

    // Fill, verify, hold.
    let mut fill = Command::new(common::binary("evloop-load"))
        .args(["--target", &target, "-c", &args.connections.to_string(), "-n", &args.connections.to_string()])
        .args(["--processes", &args.processes.to_string(), "--sources", &args.sources])
        .args(["--hold", &format!("{}s", args.hold), "--connect-timeout", "60s", "--reply-timeout", "60s"])
        .args(["--json", "--no-progress"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start evloop-load");
    let started = Instant::now();
    wait_for_line(&mut fill, "holding");
    let ready_s = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(1)); // let closing churn (none expected) settle
    let (rss_held, kernel_held, cpu_before) = (rss_kib(), kernel_kib(), cpu_ticks());
    let idle_window = Duration::from_secs(u64::from(args.hold / 4).max(1));
    std::thread::sleep(idle_window);
    let idle_ticks = cpu_ticks() - cpu_before;
    // A few busy clients among the idle ones.
    let among_idle = busy(&target, active, args.rate, args.sources.split(['-', ',']).next().unwrap());
    let fill_report = finish(fill);
    // The loader's exit closes every held connection; the comparison waits for that to end.
    wait_for_teardown();
    let alone = busy(&target, active, args.rate, "127.0.0.1");
    let listen_overflows = listen_overflows() - overflows_before;
    common::stop(&mut server);
    let connections = f64::from(args.connections);
    Figures {
        established: fill_report["connections"]["established"].as_u64().unwrap_or(0),
        verified: fill_report["messages"]["verified"].as_u64().unwrap_or(0),
        accept_per_s: fill_report["connections"]["connects_per_s"].as_f64().unwrap_or(0.0),
        ready_s,
        server_rss_b_per_conn: rss_held.saturating_sub(rss_before) as f64 * 1024.0 / connections,
        kernel_b_per_conn: kernel_held.saturating_sub(kernel_before) as f64 * 1024.0 / connections,
        idle_cpu_pct: idle_ticks as f64 / idle_window.as_secs_f64(),
        listen_overflows,
        busy_among_idle: Busy::of(&among_idle),
        busy_alone: Busy::of(&alone),
    }
}

fn print_tables(args: &Args, active: u32, figures: &Figures) {
    println!(
        "| connections | workers | loader processes | established | verified | accept rate /s | ready after s | server RSS B/conn | kernel B/conn (both ends) | idle CPU % | listen overflows |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} | {} | {:.0} | {:.1} | {:.0} | {:.0} | {:.2} | {} |",
        args.connections,
        args.workers,
        args.processes,
        figures.established,
        figures.verified,
        figures.accept_per_s,
        figures.ready_s,
        figures.server_rss_b_per_conn,
        figures.kernel_b_per_conn,
        figures.idle_cpu_pct,
        figures.listen_overflows
    );
    println!();
    println!(
        "| {active} busy clients at {} msgs/s | p50 us | p90 us | p99 us | sent | verified | failures |",
        args.rate
    );
    println!("|---|---|---|---|---|---|---|");
    let among = format!("among {} idle", args.connections);
    for (label, busy) in [(among.as_str(), &figures.busy_among_idle), ("alone", &figures.busy_alone)] {
        println!(
            "| {label} | {:.0} | {:.0} | {:.0} | {} | {} | {} |",
            busy.p50_us, busy.p90_us, busy.p99_us, busy.sent, busy.verified, busy.errors
        );
    }
}

/// Appends `figures` to the CSV at `path` (with a header if the file is new).
fn record(path: &std::path::Path, args: &Args, active: u32, figures: &Figures) {
    use std::io::Write as _;
    let new = !path.exists();
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("open --record");
    if new {
        writeln!(file, "{CSV_HEADER}").unwrap();
    }
    let busy = |busy: &Busy| {
        format!("{:.0},{:.0},{:.0},{},{}", busy.p50_us, busy.p90_us, busy.p99_us, busy.sent, busy.verified)
    };
    writeln!(
        file,
        "{},{},{},{},{},{},{:.0},{:.1},{:.0},{:.0},{:.2},{},{},{},{},{}",
        args.connections,
        args.workers,
        args.processes,
        args.idle_timeout,
        figures.established,
        figures.verified,
        figures.accept_per_s,
        figures.ready_s,
        figures.server_rss_b_per_conn,
        figures.kernel_b_per_conn,
        figures.idle_cpu_pct,
        figures.listen_overflows,
        active,
        args.rate,
        busy(&figures.busy_among_idle),
        busy(&figures.busy_alone),
    )
    .unwrap();
}

/// Draws memory per connection and busy-client latency against connections from a CSV
/// written by `--record` (rows with the idle timeout off).
fn draw_chart(csv: &std::path::Path, svg: &std::path::Path) {
    use evloop::load::chart::{Panel, Series, write_svg};
    let mut table = common::Table::read(csv);
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
    write_svg(svg, &[memory, latency]).expect("write the chart");
}

/// Runs `active` clients at `rate` for 5 s and returns the report.
fn busy(target: &str, active: u32, rate: u32, source: &str) -> Value {
    let output = Command::new(common::binary("evloop-load"))
        .args([
            "--target",
            target,
            "-c",
            &active.to_string(),
            "--rate",
            &rate.to_string(),
            "-d",
            "5s",
            "--warmup",
            "1s",
        ])
        .args(["--sources", source, "--json", "--no-progress"])
        .output()
        .expect("run evloop-load");
    serde_json::from_slice(&output.stdout).expect("a JSON report")
}

/// Waits (at most two minutes) until the kernel holds almost no TCP sockets and the machine
/// is quiet again: releasing a million sockets keeps the kernel busy for a while after the
/// last one is closed, and a comparison run during that would measure the cleanup.
fn wait_for_teardown() {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120)
        && !(tcp_sockets_in_use() < 1000 && machine_idle_fraction() > 0.9)
    {
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// TCP sockets the kernel holds (`/proc/net/sockstat`).
fn tcp_sockets_in_use() -> u64 {
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    sockstat
        .lines()
        .find(|line| line.starts_with("TCP:"))
        .and_then(|line| line.split_whitespace().nth(2)?.parse::<u64>().ok())
        .unwrap_or(0)
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
    (idle_after - idle_before) as f64 / (total_after - total_before).max(1) as f64
}

fn finish(child: Child) -> Value {
    let output = child.wait_with_output().expect("evloop-load finishes");
    serde_json::from_slice(&output.stdout).expect("a JSON report")
}

/// Waits for a stderr line containing `needle`, echoing the others; afterwards stderr is
/// still drained (and echoed) so the child never writes into a closed pipe.
fn wait_for_line(child: &mut Child, needle: &str) {
    let stderr = child.stderr.take().expect("piped stderr");
    let (found, seen) = std::sync::mpsc::channel();
    let needle = needle.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(&needle) {
                let _ = found.send(());
            } else {
                eprintln!("{line}");
            }
        }
    });
    seen.recv().expect("evloop-load ended before holding its connections");
}

/// Kernel memory that grows with sockets: slab caches (socket structures, dentries,
/// epoll items) plus TCP buffer pages, in KiB.
fn kernel_kib() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let slab = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("Slab:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    let tcp_pages = sockstat
        .lines()
        .find(|line| line.starts_with("TCP:"))
        .and_then(|line| {
            line.split_whitespace().skip_while(|word| *word != "mem").nth(1)?.parse::<u64>().ok()
        })
        .unwrap_or(0);
    slab + tcp_pages * 4
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
