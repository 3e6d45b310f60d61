//! The experiments behind docs/apparent-concurrency.md: the same handlers served by the
//! iterative, thread-per-connection and reactor models, measured side by side.
//!
//! Run:  cargo run --release --example models                    (both experiments, ~15 min)
//!       cargo run --release --example models -- --counts 1,10,100 --seconds 2 --work ''
//!       cargo run --release --example models -- --models fork --work '' --idle ''  (fork alone)
//!
//! 1. Connections: each model at 1 to 10,000 connections (closed loop, ping-pong): throughput,
//!    p99 latency, the server's peak memory and threads. Server on cpu 0, loader on cpu 1.
//! 2. `--work-us`: CPU work per message from 0 up, 100 connections: throughput of the reactor
//!    (one thread), the reactor with two workers, and threads, all free to use both cores
//!    (unpinned), and p99 latency at a fixed rate. Where the one thread saturates is where a
//!    single thread stops being enough.
//!
//! Writes docs/data/*.csv and docs/charts/*.svg (or under --out).

use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use evloop::load::chart::{Panel, Series, write_svg};
use serde_json::Value;

mod common;

/// See the module documentation.
#[derive(Parser, Debug)]
struct Args {
    /// Connection counts for experiment 1
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,1000,10000")]
    counts: Vec<u32>,
    /// Models for experiment 1; the rows of the models left out stay in models.csv as they
    /// were (e.g. `--models fork --work '' --idle ''` measures fork again, alone)
    #[arg(long, value_delimiter = ',', default_value = "iterative,threads,fork,reactor,select,poll")]
    models: Vec<String>,
    /// Measured seconds per run (after a 1 s warmup)
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Work per message (us) for experiment 2; empty to skip it
    #[arg(long, value_delimiter = ',', default_value = "0,20,50,100,200,500")]
    work: Vec<String>,
    /// The fixed rate (msgs/s) of experiment 2's latency runs
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Where docs/ is
    #[arg(long, default_value = "docs")]
    out: PathBuf,
    /// Measure nothing: redraw the charts from the CSV files already under --out
    #[arg(long)]
    charts_only: bool,
    /// Idle connections beside 100 busy ones, for experiment 3 (reactor, poll, select);
    /// empty to skip it
    #[arg(long, value_delimiter = ',', default_value = "0,100,1000,5000,10000")]
    idle: Vec<String>,
    /// Run only experiment 3
    #[arg(long)]
    idle_only: bool,
}

/// The models of experiment 1, in the order of models.csv.
const MODELS: [&str; 6] = ["iterative", "threads", "fork", "reactor", "select", "poll"];

/// What one run measured.
#[derive(Clone, Debug, Default)]
struct Measured {
    msgs_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    rss_mib: f64,
    threads: u64,
    verified: u64,
    lost: u64,
    connect_failed: u64,
    /// Replies that were wrong (for select past FD_SETSIZE: `ERR server full`).
    failed: u64,
    /// Server CPU (user + system, all its processes, the children it reaped included) per
    /// verified message, µs.
    cpu_us_per_msg: f64,
}

fn main() {
    let args = Args::parse();
    if args.charts_only {
        let read =
            |name: &str| std::fs::read_to_string(args.out.join("data").join(name)).expect("a CSV file");
        draw_models_chart(&args.out, &read("models.csv"));
        draw_work_chart(&args.out, &read("work.csv"), args.rate);
        draw_idle_chart(&args.out, &read("idle.csv"));
        return;
    }
    common::build(&["--bin", "evloop-server", "--bin", "evloop-load"]);
    std::fs::create_dir_all(args.out.join("data")).unwrap();
    std::fs::create_dir_all(args.out.join("charts")).unwrap();
    let idle: Vec<u32> =
        args.idle.iter().filter(|n| !n.is_empty()).map(|n| n.parse().expect("a count")).collect();
    if args.idle_only {
        return idle_experiment(&args, &idle);
    }
    connections_experiment(&args);
    if !idle.is_empty() {
        idle_experiment(&args, &idle);
    }
    let work: Vec<u64> =
        args.work.iter().filter(|w| !w.is_empty()).map(|w| w.parse().expect("work in us")).collect();
    if !work.is_empty() {
        work_experiment(&args, &work);
    }
}

fn connections_experiment(args: &Args) {
    let header = "model,connections,msgs_per_s,p50_ms,p99_ms,rss_mib,threads,verified,lost,connect_failed,cpu_us_per_msg\n";
    let earlier = std::fs::read_to_string(args.out.join("data/models.csv")).unwrap_or_default();
    let mut csv = String::from(header);
    for model in MODELS {
        if !args.models.iter().any(|wanted| wanted == model) {
            // Not measured this time: its rows from the last run, if any.
            for line in earlier.lines().skip(1).filter(|line| line.starts_with(&format!("{model},"))) {
                csv.push_str(line);
                csv.push('\n');
            }
            continue;
        }
        for &count in &args.counts {
            let server = start_server(&["--model", model, "--listen", "echo=127.0.0.1:0"], true);
            let loader = [
                "-c".to_string(),
                count.to_string(),
                "-d".to_string(),
                format!("{}s", args.seconds),
                "--warmup".to_string(),
                "1s".to_string(),
                "--connect-timeout".to_string(),
                "5s".to_string(),
                "--reply-timeout".to_string(),
                "2s".to_string(),
            ];
            let measured = measure(server, &loader, true);
            eprintln!("{model} {count}: {measured:?}");
            csv.push_str(&format!(
                "{model},{count},{:.0},{:.3},{:.3},{:.1},{},{},{},{},{:.3}\n",
                measured.msgs_per_s,
                measured.p50_ms,
                measured.p99_ms,
                measured.rss_mib,
                measured.threads,
                measured.verified,
                measured.lost,
                measured.connect_failed,
                measured.cpu_us_per_msg
            ));
        }
    }
    std::fs::write(args.out.join("data/models.csv"), &csv).unwrap();
    draw_models_chart(&args.out, &csv);
    print!("{csv}");
}

/// The rows of a CSV text, split into fields, without the header.
fn rows(csv: &str) -> Vec<Vec<&str>> {
    csv.lines().skip(1).filter(|line| !line.is_empty()).map(|line| line.split(',').collect()).collect()
}

/// One series per distinct value of column `key`, in first-seen order: (x, y) from columns
/// `x` and `y`.
fn series_by(rows: &[Vec<&str>], key: usize, x: usize, y: usize) -> Vec<Series> {
    let mut series: Vec<Series> = Vec::new();
    for row in rows {
        let point = (row[x].parse().unwrap(), row[y].parse().unwrap());
        match series.iter_mut().find(|series| series.name == row[key]) {
            Some(series) => series.points.push(point),
            None => series.push(Series { name: row[key].to_string(), points: vec![point] }),
        }
    }
    series
}

/// docs/charts/models.svg from docs/data/models.csv's text.
fn draw_models_chart(out: &std::path::Path, csv: &str) {
    let rows = rows(csv);
    let panel = |title: &str, y: &str, column: usize| Panel {
        title: title.to_string(),
        x_label: "connections".to_string(),
        y_label: y.to_string(),
        log_x: true,
        log_y: true,
        series: series_by(&rows, 0, 1, column),
    };
    write_svg(
        &out.join("charts/models.svg"),
        &[
            panel("Throughput (verified replies)", "msgs/s", 2),
            panel("p99 latency of verified replies", "ms", 4),
            panel("Server memory (peak RSS)", "MiB", 5),
            panel("Server threads and processes (peak)", "threads", 6),
            panel("Server CPU per verified message", "µs", 10),
        ],
    )
    .unwrap();
}

fn work_experiment(args: &Args, work: &[u64]) {
    let mut csv = String::from("server,work_us,msgs_per_s,p50_ms,p99_ms_at_rate\n");
    let servers: [(&str, &[&str]); 3] = [
        ("reactor", &["--listen", "echo=127.0.0.1:0"]),
        ("reactor (2 workers)", &["--workers", "2", "--listen", "echo=127.0.0.1:0"]),
        ("threads", &["--model", "threads", "--listen", "echo=127.0.0.1:0"]),
    ];
    for (name, server_args) in servers {
        for &us in work {
            let mut all_args: Vec<&str> = server_args.to_vec();
            let us_text = us.to_string();
            all_args.extend(["--work-us", &us_text]);
            let closed =
                ["-c", "100", "-d", &format!("{}s", args.seconds), "--warmup", "1s"].map(String::from);
            let saturated = measure(start_server(&all_args, false), &closed, false);
            let open = [
                "-c",
                "100",
                "--rate",
                &args.rate.to_string(),
                "-d",
                &format!("{}s", args.seconds),
                "--warmup",
                "1s",
            ]
            .map(String::from);
            let paced = measure(start_server(&all_args, false), &open, false);
            eprintln!(
                "{name} work={us}us: {:.0} msgs/s, p99 at {} msgs/s: {:.3} ms",
                saturated.msgs_per_s, args.rate, paced.p99_ms
            );
            csv.push_str(&format!(
                "{name},{us},{:.0},{:.3},{:.3}\n",
                saturated.msgs_per_s, saturated.p50_ms, paced.p99_ms
            ));
        }
    }
    std::fs::write(args.out.join("data/work.csv"), &csv).unwrap();
    draw_work_chart(&args.out, &csv, args.rate);
    print!("{csv}");
}

/// A started server and the address it listens on.
struct Server {
    child: Child,
    addr: String,
}

fn start_server(args: &[&str], pinned: bool) -> Server {
    let mut command = common::on_cpu(pinned.then_some(0), &common::binary("evloop-server"));
    command.args(args);
    let (child, addr) = common::start_server(command);
    Server { child, addr }
}

/// Runs the loader against `server` while sampling the server's (and its workers') memory
/// and threads, then stops the server.
fn measure(mut server: Server, loader_args: &[String], pinned: bool) -> Measured {
    let pid = server.child.id();
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(Mutex::new((0u64, 0u64)));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let pids: Vec<u32> = std::iter::once(pid).chain(common::children(pid)).collect();
                let rss: u64 = pids.iter().map(|&p| common::status_field(p, "VmRSS:")).sum();
                let threads: u64 = pids.iter().map(|&p| common::status_field(p, "Threads:")).sum();
                let mut peak = peak.lock().unwrap();
                *peak = (peak.0.max(rss), peak.1.max(threads));
                drop(peak);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let server_pids: Vec<u32> = std::iter::once(pid).chain(common::children(pid)).collect();
    // The server's processes (its workers included), and the children it has reaped: a
    // process per client (fork) spends its CPU in children, which reach the parent's
    // counters once they exit and are waited for.
    let cpu_ticks = |pids: &[u32]| {
        pids.iter().map(|&p| common::cpu_ticks(p)).sum::<u64>() + reaped_children_cpu_ticks(pid)
    };
    let cpu_before = cpu_ticks(&server_pids);
    let output = common::on_cpu(pinned.then_some(1), &common::binary("evloop-load"))
        .args(["--target", &server.addr, "--json", "--no-progress"])
        .args(loader_args)
        .output()
        .expect("run evloop-load");
    // The loader has closed its connections: the children that served them (fork) exit,
    // and are reaped, in a moment.
    let started_later = || common::children(pid).into_iter().any(|child| !server_pids.contains(&child));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while started_later() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let cpu_after = cpu_ticks(&server_pids);
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    common::stop(&mut server.child);
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    let (rss_kib, threads) = *peak.lock().unwrap();
    Measured {
        msgs_per_s: report["throughput"]["msgs_per_s"].as_f64().unwrap_or(0.0),
        p50_ms: report["latency_us"]["p50"].as_f64().unwrap_or(0.0) / 1000.0,
        p99_ms: report["latency_us"]["p99"].as_f64().unwrap_or(0.0) / 1000.0,
        rss_mib: rss_kib as f64 / 1024.0,
        threads,
        verified: report["messages"]["verified"].as_u64().unwrap_or(0),
        lost: report["messages"]["lost"].as_u64().unwrap_or(0),
        connect_failed: report["connections"]["failed"].as_u64().unwrap_or(0),
        failed: report["messages"]["failed"].as_u64().unwrap_or(0),
        // The whole run, warmup included, over every verified message (10 ms ticks).
        cpu_us_per_msg: (cpu_after - cpu_before) as f64 * 10_000.0
            / report["messages"]["verified"].as_f64().unwrap_or(0.0).max(1.0),
    }
}

/// CPU time of the children of `pid` that it has waited for (user plus system, in 10 ms
/// ticks): `cutime` and `cstime` of `/proc/PID/stat`.
fn reaped_children_cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(end) = stat.rfind(')') else { return 0 };
    let fields: Vec<&str> = stat[end + 2..].split(' ').collect();
    let ticks = |index: usize| fields.get(index).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    ticks(13) + ticks(14)
}

/// docs/charts/work.svg from docs/data/work.csv's text, whose latency runs were at `rate`.
fn draw_work_chart(out: &std::path::Path, csv: &str, rate: u32) {
    let rows = rows(csv);
    let panel = |title: String, y: &str, column: usize| Panel {
        title,
        x_label: "work per message (µs)".to_string(),
        y_label: y.to_string(),
        log_x: false,
        log_y: true,
        series: series_by(&rows, 0, 1, column),
    };
    write_svg(
        &out.join("charts/work.svg"),
        &[
            panel("Throughput, 100 connections, closed loop".to_string(), "msgs/s", 2),
            panel(format!("p99 latency at {rate} msgs/s"), "ms", 4),
        ],
    )
    .unwrap();
}

/// Experiment 3: 100 busy clients (ping-pong) among idle ones. The scanning models pay for
/// every connection every turn, busy or idle; epoll only for the ready ones.
fn idle_experiment(args: &Args, idle: &[u32]) {
    let mut csv = String::from("model,idle,msgs_per_s,p50_ms,cpu_us_per_msg,verified,failed\n");
    for model in ["reactor", "poll", "select"] {
        for &count in idle {
            let server = start_server(&["--model", model, "--listen", "echo=127.0.0.1:0"], true);
            let total = (100 + count).to_string();
            let loader =
                ["-c", &total, "--active", "100", "-d", &format!("{}s", args.seconds), "--warmup", "1s"]
                    .map(String::from);
            let loader = [&loader[..], &["--connect-timeout".to_string(), "5s".to_string()]].concat();
            let measured = measure(server, &loader, true);
            eprintln!("{model} idle={count}: {measured:?}");
            csv.push_str(&format!(
                "{model},{count},{:.0},{:.3},{:.3},{},{}\n",
                measured.msgs_per_s,
                measured.p50_ms,
                measured.cpu_us_per_msg,
                measured.verified,
                measured.failed
            ));
        }
    }
    std::fs::write(args.out.join("data/idle.csv"), &csv).unwrap();
    draw_idle_chart(&args.out, &csv);
    print!("{csv}");
}

/// docs/charts/idle.svg from docs/data/idle.csv's text.
fn draw_idle_chart(out: &std::path::Path, csv: &str) {
    // A run that turned clients away (select past FD_SETSIZE: `ERR server full`) served fewer
    // connections than its x says, so its point would read as select scaling better than poll:
    // the line ends at the last run that served everyone, and its legend says why (the table in
    // docs/apparent-concurrency.md has the runs left out and how many were turned away).
    let (served, turned_away): (Vec<Vec<&str>>, Vec<Vec<&str>>) =
        rows(csv).into_iter().partition(|row| row[6] == "0");
    let rows: Vec<Vec<&str>> = served
        .into_iter()
        .map(|mut row| {
            // Zero idle connections has no place on a log axis: it is drawn at 1.
            if row[1] == "0" {
                row[1] = "1";
            }
            row
        })
        .collect();
    let panel = |title: &str, y: &str, column: usize| Panel {
        title: title.to_string(),
        x_label: "idle connections beside 100 busy (none: drawn at 1)".to_string(),
        y_label: y.to_string(),
        log_x: true,
        log_y: false,
        series: series_by(&rows, 0, 1, column)
            .into_iter()
            .map(|mut series| {
                if turned_away.iter().any(|row| row[0] == series.name) {
                    let last = series.points.last().map_or(0.0, |point| point.0);
                    series.name =
                        format!("{} (not drawn past {last} idle: it turned clients away)", series.name);
                }
                series
            })
            .collect(),
    };
    write_svg(
        &out.join("charts/idle.svg"),
        &[panel("Throughput of the 100 busy clients", "msgs/s", 2), panel("Server CPU per message", "µs", 4)],
    )
    .unwrap();
}
