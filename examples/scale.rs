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

/// The columns `--record` writes.
const CSV_HEADER: &str = "connections,workers,processes,idle_timeout_s,established,verified,accept_per_s,ready_s,server_rss_b_per_conn,kernel_b_per_conn,idle_cpu_pct,listen_overflows,busy,rate,busy_p50_us,busy_p90_us,busy_p99_us,alone_p50_us,alone_p90_us,alone_p99_us";

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
    build();
    let mut server_args = vec![
        "--workers".to_string(),
        args.workers.to_string(),
        "--listen".to_string(),
        "echo=127.0.0.1:0".to_string(),
    ];
    if args.idle_timeout > 0 {
        server_args.extend(["--idle-timeout".to_string(), args.idle_timeout.to_string()]);
    }
    let mut server = Command::new(binary("evloop-server"))
        .args(&server_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start evloop-server");
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap()).read_line(&mut line).expect("a startup line");
    let target = line.trim().rsplit(' ').next().unwrap().to_string();
    // With --workers 1 the server is the reactor; with more, its children are.
    let workers = if args.workers > 1 { children(server.id()) } else { vec![server.id()] };
    assert_eq!(workers.len(), args.workers as usize, "worker pids");
    let rss_before: u64 = workers.iter().map(|&pid| rss_kib(pid)).sum();
    let kernel_before = kernel_kib();
    let overflows_before = listen_overflows();

    // Fill, verify, hold.
    let mut fill = Command::new(binary("evloop-load"))
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
    let ready_after = started.elapsed();
    std::thread::sleep(Duration::from_secs(1)); // let closing churn (none expected) settle
    let rss_held: u64 = workers.iter().map(|&pid| rss_kib(pid)).sum();
    let kernel_held = kernel_kib();
    let cpu_before: u64 = workers.iter().map(|&pid| cpu_ticks(pid)).sum();
    let idle_window = Duration::from_secs(u64::from(args.hold / 4).max(1));
    std::thread::sleep(idle_window);
    let idle_cpu: u64 = workers.iter().map(|&pid| cpu_ticks(pid)).sum::<u64>() - cpu_before;
    // A few busy clients among the idle ones.
    let busy_among_idle = busy(&target, active, args.rate, args.sources.split(['-', ',']).next().unwrap());
    let fill_report = finish(fill);
    // The loader's exit closes every held connection; the comparison waits for that to end.
    wait_for_teardown();
    let alone = busy(&target, active, args.rate, "127.0.0.1");
    let overflows = listen_overflows() - overflows_before;
    stop(&mut server);

    let connections = f64::from(args.connections);
    let established = fill_report["connections"]["established"].as_u64().unwrap_or(0);
    println!(
        "| connections | workers | loader processes | established | verified | accept rate /s | ready after s | server RSS B/conn | kernel B/conn (both ends) | idle CPU % | listen overflows |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} | {} | {:.0} | {:.1} | {:.0} | {:.0} | {:.2} | {} |",
        args.connections,
        args.workers,
        args.processes,
        established,
        fill_report["messages"]["verified"],
        fill_report["connections"]["connects_per_s"].as_f64().unwrap_or(0.0),
        ready_after.as_secs_f64(),
        (rss_held.saturating_sub(rss_before)) as f64 * 1024.0 / connections,
        (kernel_held.saturating_sub(kernel_before)) as f64 * 1024.0 / connections,
        idle_cpu as f64 / idle_window.as_secs_f64(),
        overflows
    );
    println!();
    println!(
        "| {active} busy clients at {} msgs/s | p50 us | p90 us | p99 us | sent | verified | failures |",
        args.rate
    );
    println!("|---|---|---|---|---|---|---|");
    for (label, report) in
        [(format!("among {} idle", args.connections), &busy_among_idle), ("alone".to_string(), &alone)]
    {
        let latency = &report["latency_us"];
        println!(
            "| {label} | {:.0} | {:.0} | {:.0} | {} | {} | {} |",
            latency["p50"].as_f64().unwrap_or(0.0),
            latency["p90"].as_f64().unwrap_or(0.0),
            latency["p99"].as_f64().unwrap_or(0.0),
            report["messages"]["sent"],
            report["messages"]["verified"],
            report["errors"]
        );
    }
    if let Some(path) = &args.record {
        let new = !path.exists();
        let mut file =
            std::fs::OpenOptions::new().create(true).append(true).open(path).expect("open --record");
        use std::io::Write as _;
        if new {
            writeln!(file, "{CSV_HEADER}").unwrap();
        }
        let latency = |report: &Value, field: &str| report["latency_us"][field].as_f64().unwrap_or(0.0);
        writeln!(
            file,
            "{},{},{},{},{},{},{:.0},{:.1},{:.0},{:.0},{:.2},{},{},{},{:.0},{:.0},{:.0},{:.0},{:.0},{:.0}",
            args.connections,
            args.workers,
            args.processes,
            args.idle_timeout,
            established,
            fill_report["messages"]["verified"],
            fill_report["connections"]["connects_per_s"].as_f64().unwrap_or(0.0),
            ready_after.as_secs_f64(),
            (rss_held.saturating_sub(rss_before)) as f64 * 1024.0 / connections,
            (kernel_held.saturating_sub(kernel_before)) as f64 * 1024.0 / connections,
            idle_cpu as f64 / idle_window.as_secs_f64(),
            overflows,
            active,
            args.rate,
            latency(&busy_among_idle, "p50"),
            latency(&busy_among_idle, "p90"),
            latency(&busy_among_idle, "p99"),
            latency(&alone, "p50"),
            latency(&alone, "p90"),
            latency(&alone, "p99"),
        )
        .unwrap();
    }
    assert_eq!(fill_report["ok"], true, "every connection must answer: {fill_report}");
}

/// Draws memory per connection and busy-client latency against connections from a CSV
/// written by `--record` (rows with the idle timeout off).
fn draw_chart(csv: &std::path::Path, svg: &std::path::Path) {
    use evloop::load::chart::{Panel, Series, write_svg};
    let text = std::fs::read_to_string(csv).expect("read the CSV");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
    let column =
        |name: &str| header.iter().position(|c| *c == name).unwrap_or_else(|| panic!("no column {name}"));
    let rows: Vec<Vec<f64>> = lines
        .map(|line| line.split(',').map(|cell| cell.parse::<f64>().unwrap_or(0.0)).collect())
        .filter(|row: &Vec<f64>| row[column("idle_timeout_s")] == 0.0)
        .collect();
    let series = |name: &str, field: &str| Series {
        name: name.to_string(),
        points: rows.iter().map(|row| (row[column("connections")], row[column(field)])).collect(),
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
        y_label: "us".to_string(),
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
    let output = Command::new(binary("evloop-load"))
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

/// Waits (at most two minutes) until the kernel holds almost no TCP sockets.
fn wait_for_teardown() {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        let sockstat = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
        let in_use = sockstat
            .lines()
            .find(|line| line.starts_with("TCP:"))
            .and_then(|line| line.split_whitespace().nth(2)?.parse::<u64>().ok())
            .unwrap_or(0);
        if in_use < 1000 {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
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

fn build() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let status = Command::new(cargo)
        .args(["build", "--release", "--bin", "evloop-server", "--bin", "evloop-load"])
        .status()
        .expect("run cargo build");
    assert!(status.success());
}

fn binary(name: &str) -> String {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_string());
    format!("{target}/release/{name}")
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|child| child.parse().ok())
        .collect()
}

fn status_field(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    status_field(pid, "VmRSS:")
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

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(end) = stat.rfind(')') else { return 0 };
    let fields: Vec<&str> = stat[end + 2..].split(' ').collect();
    fields.get(11).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0)
        + fields.get(12).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0)
}

fn stop(server: &mut Child) {
    // SAFETY: kill() on our own child's PID has no memory-safety preconditions.
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    let _ = server.wait();
}
