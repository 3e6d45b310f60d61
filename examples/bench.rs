//! The benchmark driver behind docs/benchmarks.md: evloop-server against the tokio baseline
//! (examples/tokio_echo.rs) under the same loader, interleaved A B B A so drift on a shared
//! machine hits both, server pinned to one core and loader to the other, medians of rounds.
//!
//! Run:  cargo run --release --example bench                       (the full table, ~10 min)
//!       cargo run --release --example bench -- --counts 100 --rounds 1 --seconds 3   (a taste)
//!
//! It builds the binaries it needs, and prints Markdown tables to paste into the docs.

use std::process::Command;
use std::time::Duration;

use clap::Parser;
use serde_json::Value;

mod common;

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
    common::build(&["--bin", "evloop-server", "--bin", "evloop-load", "--example", "tokio_echo"]);
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
            let runs = interleaved(&args, &loader, pinned);
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
        let runs = interleaved(&args, &loader, pinned);
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

/// `args.rounds` runs of `loader_args` against each server, interleaved A B, then B A:
/// whatever drifts during a round hits every server alike. Runs by server.
fn interleaved(args: &Args, loader_args: &[String], pinned: bool) -> Vec<Vec<Run>> {
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); args.servers.len()];
    for round in 0..args.rounds {
        let mut order: Vec<usize> = (0..args.servers.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for index in order {
            runs[index].push(measure(&args.servers[index], &args.evloop_args, loader_args, pinned));
        }
    }
    runs
}

/// Starts `server`, runs the loader against it with `loader_args`, stops the server.
fn measure(server: &str, evloop_args: &str, loader_args: &[String], pinned: bool) -> Run {
    let cpu = |cpu: u32| pinned.then_some(cpu);
    let command = match server {
        "tokio" => {
            let mut command = common::on_cpu(cpu(0), &common::binary("examples/tokio_echo"));
            command.arg("127.0.0.1:0");
            command
        }
        evloop => {
            let program = match evloop {
                "evloop" => common::binary("evloop-server"),
                other => {
                    other.strip_prefix("bin:").unwrap_or_else(|| panic!("unknown server {other}")).to_string()
                }
            };
            let mut command = common::on_cpu(cpu(0), &program);
            command.args(["--listen", "echo=127.0.0.1:0"]).args(evloop_args.split_whitespace());
            command
        }
    };
    let (mut child, addr) = common::start_server(command);
    let cpu_before = common::cpu_ticks(child.id());
    let loader_before = common::children_cpu_us();
    let output = common::on_cpu(cpu(1), &common::binary("evloop-load"))
        .args(["--target", &addr, "--json", "--no-progress"])
        .args(loader_args)
        .output()
        .expect("run evloop-load");
    let loader_cpu_us = common::children_cpu_us() - loader_before;
    let cpu_used = common::cpu_ticks(child.id()) - cpu_before;
    common::stop(&mut child);
    std::thread::sleep(Duration::from_millis(200)); // let the sockets' TIME_WAIT churn settle
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

fn median(runs: &[Run]) -> Run {
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| a.msgs_per_s.total_cmp(&b.msgs_per_s));
    sorted[sorted.len() / 2].clone()
}
