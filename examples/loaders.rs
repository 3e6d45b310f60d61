//! evloop-load beside the tools people load servers they did not write with, against the
//! same server in one run (issue 23): one `redis-server` pinned to CPU 0, and on CPU 1 in
//! turn `redis-benchmark` (which does not check replies) and `evloop-load` with the matching
//! flags (which checks every byte); then one `memcached` (one thread) with `memcslap`, when
//! Debian's libmemcached-tools has it, against `--preset memcached-get`.
//!
//! ```text
//! cargo run --release --example loaders -- [--rounds 3] [--requests 2000000]
//! ```
//!
//! Per case: requests per second (the median of the rounds), the loader's CPU time per
//! request (user and system, from the kernel's account of the finished child), and the
//! server's CPU share over the run (from /proc/PID/stat), which says whether it was the
//! server that was saturated. Runs alternate between the loaders so drift hits both.

#[path = "common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::CpuTime;
use serde_json::Value;

/// One case: how redis-benchmark names it and its flags, and evloop-load's flags for the same
/// requests and replies.
struct Case {
    name: &'static str,
    redis_benchmark: &'static [&'static str],
    evloop_load: &'static [&'static str],
}

const SET: &str = r"*3\r\n$3\r\nSET\r\n$16\r\nkey:__rand_int__\r\n$3\r\nxxx\r\n";
const GET: &str = r"*2\r\n$3\r\nGET\r\n$16\r\nkey:__rand_int__\r\n";

/// The cases, at 1 and 16 requests in flight per connection. redis-benchmark's keys, without
/// -r, are the literal `key:__rand_int__`, and its values 3 bytes of `x`: evloop-load sends
/// the same bytes.
fn cases() -> Vec<(Case, &'static str)> {
    let each: [(&str, &[&str], &[&str]); 3] = [
        ("PING (inline)", &["-t", "ping_inline"], &["--preset", "redis-ping"]),
        ("SET", &["-t", "set"], &["-m", SET, "--expect", r"+OK\r\n"]),
        ("GET", &["-t", "get"], &["-m", GET, "--expect", r"$3\r\nxxx\r\n"]),
    ];
    ["1", "16"]
        .into_iter()
        .flat_map(|pipeline| {
            each.map(|(name, redis_benchmark, evloop_load)| {
                (Case { name, redis_benchmark, evloop_load }, pipeline)
            })
        })
        .collect()
}

/// What one loader run gave: requests per second, and CPU per request of the loader and of
/// the server.
#[derive(Clone, Copy, Debug, Default)]
struct Run {
    per_s: f64,
    loader: CpuTime,
    server_share: f64,
}

struct Args {
    rounds: usize,
    requests: u64,
}

fn main() {
    let mut args = Args { rounds: 3, requests: 2_000_000 };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        let value = words.next().unwrap_or_else(|| panic!("{word} takes a value"));
        match word.as_str() {
            "--rounds" => args.rounds = value.parse().expect("--rounds N"),
            "--requests" => args.requests = value.parse().expect("--requests N"),
            other => panic!("unknown flag {other}: --rounds N, --requests N"),
        }
    }
    common::build(&["--bin", "evloop-load"]);
    redis(&args);
    memcached(&args);
}

/// Starts `program` on CPU 0 and waits until `port` takes connections.
fn start_on_cpu0(program: &str, flags: &[&str], port: u16) -> std::process::Child {
    let child = common::on_cpu(Some(0), program)
        .args(flags)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {program}: {error} (scripts/test installs it)"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{program} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn redis(args: &Args) {
    let port = free_port();
    let port_text = port.to_string();
    let mut server = start_on_cpu0(
        "redis-server",
        &["--port", &port_text, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        port,
    );
    let target = format!("127.0.0.1:{port}");
    println!(
        "Against one redis-server on CPU 0, 50 connections, {} requests a run, median of {} rounds",
        args.requests, args.rounds
    );
    println!();
    println!(
        "| case | in flight | redis-benchmark req/s | evloop-load req/s | ratio | redis-benchmark CPU µs/req (user+sys) | evloop-load CPU µs/req (user+sys) | Redis busy (rb / el) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let requests = args.requests.to_string();
    for (case, pipeline) in cases() {
        let mut theirs = Vec::new();
        let mut ours = Vec::new();
        for _ in 0..args.rounds {
            theirs.push(measure(server.id(), || {
                let output = common::on_cpu(Some(1), "redis-benchmark")
                    .args(["-p", &port_text, "-c", "50", "-n", &requests, "-P", pipeline, "--csv"])
                    .args(case.redis_benchmark)
                    .output()
                    .expect("redis-benchmark (scripts/test installs redis-tools)");
                redis_benchmark_rps(&String::from_utf8_lossy(&output.stdout))
            }));
            ours.push(measure(server.id(), || {
                evloop_load(&target, &["-c", "50", "-n", &requests, "-P", pipeline], case.evloop_load)
            }));
        }
        row(case.name, pipeline, args.requests as f64, &median(&theirs), &median(&ours));
    }
    common::stop(&mut server);
    println!();
}

fn memcached(args: &Args) {
    if Command::new("memcslap").arg("--help").output().is_err() {
        println!("memcslap is not installed (Debian's libmemcached-tools): no memcached comparison");
        return;
    }
    let port = free_port();
    let port_text = port.to_string();
    let mut server = start_on_cpu0(
        "memcached",
        &["-l", "127.0.0.1", "-p", &port_text, "-U", "0", "-t", "1", "-u", "root"],
        port,
    );
    let target = format!("127.0.0.1:{port}");
    println!("Against one memcached (-t 1) on CPU 0, 50 connections, median of {} rounds", args.rounds);
    println!();
    println!(
        "| case | in flight | memcslap req/s | evloop-load req/s | ratio | memcslap CPU µs/req (user+sys) | evloop-load CPU µs/req (user+sys) | memcached busy (ms / el) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let requests = (args.requests / 4).to_string();
    let mut theirs = Vec::new();
    let mut ours = Vec::new();
    for _ in 0..args.rounds {
        theirs.push(measure(server.id(), || {
            // memcslap: 50 threads, each --execute-number gets (after one set of that many
            // keys, which its CPU time includes); it prints the time the gets took.
            let per_thread = (args.requests / 4 / 50).to_string();
            let output = common::on_cpu(Some(1), "memcslap")
                .args([&format!("--servers=127.0.0.1:{port}"), "--concurrency=50", "--test=get"])
                .args([&format!("--execute-number={per_thread}"), "--flush"])
                .output()
                .expect("memcslap");
            let text = String::from_utf8_lossy(&output.stdout);
            let seconds: f64 = text
                .lines()
                .find(|line| line.starts_with("Time to get"))
                .and_then(|line| line.split_whitespace().rev().nth(1))
                .and_then(|seconds| seconds.parse().ok())
                .unwrap_or_else(|| panic!("no 'Time to get' in memcslap's output: {text}"));
            (args.requests / 4) as f64 / seconds
        }));
        ours.push(measure(server.id(), || {
            evloop_load(&target, &["-c", "50", "-n", &requests], &["--preset", "memcached-get"])
        }));
    }
    row("get", "1", (args.requests / 4) as f64, &median(&theirs), &median(&ours));
    common::stop(&mut server);
}

/// Runs `run` (a loader on CPU 1, which returns requests per second) and measures its CPU
/// time and the server's share of one CPU over it.
fn measure(server: u32, run: impl FnOnce() -> f64) -> (f64, CpuTime, f64) {
    let (server_before, loader_before, started) =
        (common::cpu_time(server), common::children_cpu_time(), Instant::now());
    let per_s = run();
    let loader = common::children_cpu_time().since(loader_before);
    let server_cpu = common::cpu_time(server).since(server_before);
    let share = server_cpu.total_us() / (started.elapsed().as_secs_f64() * 1e6);
    std::thread::sleep(Duration::from_millis(200)); // let TIME_WAIT churn settle between runs
    (per_s, loader, share)
}

/// evloop-load's throughput: `--json`, every reply verified or the run is void.
fn evloop_load(target: &str, common_flags: &[&str], case: &[&str]) -> f64 {
    let output = common::on_cpu(Some(1), &common::binary("evloop-load"))
        .args(["--target", target, "--json", "--no-progress"])
        .args(common_flags)
        .args(case)
        .output()
        .expect("evloop-load");
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("no report: {}", String::from_utf8_lossy(&output.stderr)));
    assert_eq!(report["ok"], true, "a reply did not verify: {report}");
    report["throughput"]["msgs_per_s"].as_f64().unwrap()
}

/// The requests per second of redis-benchmark's `--csv` line (`"PING_INLINE","123.45",...`).
fn redis_benchmark_rps(csv: &str) -> f64 {
    csv.lines()
        .filter(|line| !line.starts_with("\"test\""))
        .find_map(|line| line.split(',').nth(1).and_then(|field| field.trim_matches('"').parse().ok()))
        .unwrap_or_else(|| panic!("no figure in redis-benchmark's output: {csv}"))
}

/// The run with the median throughput (its CPU figures go with it).
fn median(runs: &[(f64, CpuTime, f64)]) -> Run {
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (per_s, loader, server_share) = sorted[sorted.len() / 2];
    Run { per_s, loader, server_share }
}

/// One table row; CPU per request is the run's CPU over the `requests` it was asked to make.
fn row(name: &str, pipeline: &str, requests: f64, theirs: &Run, ours: &Run) {
    let per_request = |run: &Run, requests: f64| {
        let cpu = run.loader;
        format!(
            "{:.2} ({:.2}+{:.2})",
            cpu.total_us() / requests,
            cpu.user_us / requests,
            cpu.system_us / requests
        )
    };
    println!(
        "| {name} | {pipeline} | {:.0} | {:.0} | {:.3} | {} | {} | {:.0}% / {:.0}% |",
        theirs.per_s,
        ours.per_s,
        ours.per_s / theirs.per_s,
        per_request(theirs, requests),
        per_request(ours, requests),
        theirs.server_share * 100.0,
        ours.server_share * 100.0
    );
}
