//! The benchmark driver behind docs/benchmarks.md: evloop-server against the tokio baseline
//! (examples/tokio_echo.rs) under the same loader, interleaved A B B A so drift on a shared
//! machine hits both, server pinned to one core and loader to the other, medians of rounds.
//!
//! Run:  cargo run --release --example bench                       (the full table, ~10 min)
//!       cargo run --release --example bench -- --counts 100 --rounds 1 --seconds 3   (a taste)
//!
//! It builds the binaries it needs, and prints Markdown tables to paste into the docs.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clap::Parser;
use serde_json::Value;

/// Compares servers under evloop-load; see the module documentation.
#[derive(Parser, Debug)]
struct Args {
    /// Connection counts to measure
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000,10000")]
    counts: Vec<u32>,
    /// Pipeline depths to measure (1 = ping-pong)
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    pipelines: Vec<u32>,
    /// Servers to compare: evloop, tokio, or bin:PATH (another evloop-server build, for A/B
    /// tests of a change)
    #[arg(long, value_delimiter = ',', default_value = "evloop,tokio")]
    servers: Vec<String>,
    /// Rounds per cell (the median is reported)
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Measured seconds per run (after a 1 s warmup)
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// Also measure latency at this fixed open-loop rate (msgs/s, 100 connections); 0: skip
    #[arg(long, default_value_t = 50_000)]
    rate: u32,
    /// Extra arguments for evloop-server (e.g. --idle-timeout 60)
    #[arg(long, allow_hyphen_values = true, default_value = "")]
    evloop_args: String,
}

/// One measured run.
#[derive(Clone, Debug)]
struct Run {
    msgs_per_s: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    uncorrected_p50_us: f64,
    uncorrected_p99_us: f64,
    server_cpu_us_per_msg: f64,
    loader_cpu_us_per_msg: f64,
}

fn main() {
    let args = Args::parse();
    build();
    let pinned = Command::new("taskset").arg("-V").output().is_ok();
    if !pinned {
        eprintln!("bench: taskset not found; running unpinned (results are noisier)");
    }
    println!(
        "Servers on cpu 0, loader on cpu 1; {} s measured after 1 s warmup; median of {} rounds.\n",
        args.seconds, args.rounds
    );
    println!(
        "| connections | mode | {} | ratio | runs (msgs/s) |",
        args.servers.iter().map(|s| format!("{s} msgs/s (p50 / p99 us)")).collect::<Vec<_>>().join(" | ")
    );
    println!("|---|---|{}---|---|", "---|".repeat(args.servers.len()));
    for &pipeline in &args.pipelines {
        for &count in &args.counts {
            let mut runs: Vec<Vec<Run>> = vec![Vec::new(); args.servers.len()];
            for round in 0..args.rounds {
                // A B, then B A: whatever drifts during a round hits both servers alike.
                let mut order: Vec<usize> = (0..args.servers.len()).collect();
                if round % 2 == 1 {
                    order.reverse();
                }
                for index in order {
                    let loader = [
                        "-c".to_string(),
                        count.to_string(),
                        "--pipeline".to_string(),
                        pipeline.to_string(),
                        "-d".to_string(),
                        format!("{}s", args.seconds),
                        "--warmup".to_string(),
                        "1s".to_string(),
                    ];
                    runs[index].push(measure(&args.servers[index], &args.evloop_args, &loader, pinned));
                }
            }
            let medians: Vec<Run> = runs.iter().map(|runs| median(runs)).collect();
            let cells: Vec<String> = medians
                .iter()
                .map(|run| format!("{:.0} ({:.0} / {:.0})", run.msgs_per_s, run.p50_us, run.p99_us))
                .collect();
            for (name, run) in args.servers.iter().zip(&medians) {
                eprintln!(
                    "cpu per message, {name}, {count} connections, pipeline {pipeline}: server {:.2} us, loader {:.2} us",
                    run.server_cpu_us_per_msg, run.loader_cpu_us_per_msg
                );
            }
            let ratio = if medians.len() >= 2 {
                format!("{:.2}", medians[0].msgs_per_s / medians[1].msgs_per_s)
            } else {
                "-".to_string()
            };
            let all: Vec<String> = runs
                .iter()
                .zip(&args.servers)
                .map(|(runs, name)| {
                    format!(
                        "{name}: {}",
                        runs.iter()
                            .map(|run| format!("{:.0}", run.msgs_per_s))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
                .collect();
            let mode = if pipeline == 1 { "ping-pong".to_string() } else { format!("pipeline {pipeline}") };
            println!("| {count} | {mode} | {} | {ratio} | {} |", cells.join(" | "), all.join("; "));
        }
    }
    if args.rate > 0 {
        println!(
            "\nLatency at a fixed rate of {} msgs/s (open loop, 100 connections), median of {} rounds:\n",
            args.rate, args.rounds
        );
        println!(
            "| server | p50 us | p90 us | p99 us | uncorrected p50 us | uncorrected p99 us | server CPU us/msg | loader CPU us/msg |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); args.servers.len()];
        for round in 0..args.rounds {
            let mut order: Vec<usize> = (0..args.servers.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for index in order {
                let loader = [
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
                runs[index].push(measure(&args.servers[index], &args.evloop_args, &loader, pinned));
            }
        }
        for (name, runs) in args.servers.iter().zip(&runs) {
            let run = median(runs);
            println!(
                "| {name} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} |",
                run.p50_us,
                run.p90_us,
                run.p99_us,
                run.uncorrected_p50_us,
                run.uncorrected_p99_us,
                run.server_cpu_us_per_msg,
                run.loader_cpu_us_per_msg
            );
        }
    }
}

/// Builds the release binaries the runs use.
fn build() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--bin",
            "evloop-server",
            "--bin",
            "evloop-load",
            "--example",
            "tokio_echo",
        ])
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build failed");
}

fn binary(name: &str) -> String {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_string());
    match name {
        "tokio" => format!("{target}/release/examples/tokio_echo"),
        other => format!("{target}/release/{other}"),
    }
}

fn pinned_command(cpu: u32, program: &str, pinned: bool) -> Command {
    if pinned {
        let mut command = Command::new("taskset");
        command.args(["-c", &cpu.to_string(), program]);
        command
    } else {
        Command::new(program)
    }
}

/// Starts `server`, runs the loader against it with `loader_args`, stops the server.
fn measure(server: &str, evloop_args: &str, loader_args: &[String], pinned: bool) -> Run {
    let mut command = match server {
        "evloop" => {
            let mut command = pinned_command(0, &binary("evloop-server"), pinned);
            command.args(["--listen", "echo=127.0.0.1:0"]).args(evloop_args.split_whitespace());
            command
        }
        "tokio" => {
            let mut command = pinned_command(0, &binary("tokio"), pinned);
            command.arg("127.0.0.1:0");
            command
        }
        other => match other.strip_prefix("bin:") {
            Some(path) => {
                let mut command = pinned_command(0, path, pinned);
                command.args(["--listen", "echo=127.0.0.1:0"]).args(evloop_args.split_whitespace());
                command
            }
            None => panic!("unknown server {other}: expected evloop, tokio or bin:PATH"),
        },
    };
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("start the server");
    let addr = startup_addr(&mut child);
    let cpu_before = cpu_ticks(child.id());
    let loader_before = children_cpu_us();
    let output = pinned_command(1, &binary("evloop-load"), pinned)
        .args(["--target", &addr, "--json", "--no-progress"])
        .args(loader_args)
        .output()
        .expect("run evloop-load");
    let loader_cpu_us = children_cpu_us() - loader_before;
    let cpu_used = cpu_ticks(child.id()) - cpu_before;
    stop(&mut child);
    let report: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    assert_eq!(report["ok"], true, "a run failed verification: {report}");
    let latency = |key: &str, field: &str| report[key][field].as_f64().unwrap_or(0.0);
    let verified = report["messages"]["verified"].as_f64().unwrap_or(1.0).max(1.0);
    Run {
        msgs_per_s: report["throughput"]["msgs_per_s"].as_f64().unwrap_or(0.0),
        p50_us: latency("latency_us", "p50"),
        p90_us: latency("latency_us", "p90"),
        p99_us: latency("latency_us", "p99"),
        uncorrected_p50_us: latency("latency_uncorrected_us", "p50"),
        uncorrected_p99_us: latency("latency_uncorrected_us", "p99"),
        // Clock ticks are 10 ms; the whole run (warmup and connects included) over every
        // verified message: an upper bound, comparable between servers.
        server_cpu_us_per_msg: cpu_used as f64 * 10_000.0 / verified,
        loader_cpu_us_per_msg: loader_cpu_us as f64 / verified,
    }
}

fn startup_addr(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut line).expect("a startup line");
    line.trim().rsplit(' ').next().expect("an address").to_string()
}

fn stop(child: &mut Child) {
    // SAFETY: kill() on our own child's PID has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    if child.wait().is_err() {
        let _ = child.kill();
    }
    std::thread::sleep(Duration::from_millis(200)); // let the sockets' TIME_WAIT churn settle
}

/// CPU time (user + system, microseconds) of this process's children that have been waited
/// for: after a loader run, the loader's own cost.
fn children_cpu_us() -> u64 {
    // SAFETY: getrusage only writes into the struct we pass, which lives for the call.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let micros = |time: libc::timeval| time.tv_sec as u64 * 1_000_000 + time.tv_usec as u64;
    micros(usage.ru_utime) + micros(usage.ru_stime)
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(end) = stat.rfind(')') else { return 0 };
    let fields: Vec<&str> = stat[end + 2..].split(' ').collect();
    fields.get(11).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0)
        + fields.get(12).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0)
}

fn median(runs: &[Run]) -> Run {
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| a.msgs_per_s.total_cmp(&b.msgs_per_s));
    sorted[sorted.len() / 2].clone()
}
