//! Rooms across hosts, measured (issue 26; docs/scaling.md): network namespaces as hosts
//! (tests/util/hosts.rs, needs root), two evloop servers on two hosts, the engine on others.
//!
//! ```text
//! cargo run --release --example hosts -- [--members 10000] [--lines 20] [--kills 10]
//! ```
//!
//! 1. Reach: one room of `--members` members spread over the two servers (half each, from
//!    a loader host), one sender, lines one at a time; the time for a line to reach every
//!    member, p50 and p99, through Redis and through a NATS cluster of three, with 0, 1 and
//!    20 ms added on every engine link by the latency relay.
//! 2. Failover: the NATS node server A is on is killed, `--kills` times (restarted between);
//!    a member of B sends a line every 5 ms, a member of A notes when each arrives: the
//!    failover time is the last line before the kill to the first after, and the lines in
//!    between are the ones the move cost (counted by A as gaps).

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/util/hosts.rs"]
#[allow(dead_code)] // the tests use more of it
mod hosts;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use hosts::{Hosts, Relay};
use serde_json::Value;

/// How long a test client waits for bytes (tests/util/hosts.rs reads it).
const READ_TIMEOUT: Duration = Duration::from_secs(10);

const SERVER_A: usize = 0;
const SERVER_B: usize = 1;
const NODES: [usize; 3] = [2, 3, 4];
const LOADER: usize = 5;

fn main() {
    let mut members = 10_000u32;
    let mut lines = 20u32;
    let mut kills = 10u32;
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        let value: u32 = words.next().and_then(|value| value.parse().ok()).expect("a number");
        match word.as_str() {
            "--members" => members = value,
            "--lines" => lines = value,
            "--kills" => kills = value,
            other => panic!("unknown flag {other}: --members N, --lines N, --kills N"),
        }
    }
    common::build(&["--bins"]);
    let hosts = Hosts::new(6);
    println!("| engine | added a link | reach p50 | reach p99 | lines | deliveries verified |");
    println!("|---|---|---|---|---|---|");
    for engine in ["redis", "nats"] {
        let mut started = start_engine(&hosts, engine);
        for delay_ms in [0u64, 1, 20] {
            // Each server's links go through a relay of their own, to the engine's node.
            let relays = [SERVER_A, SERVER_B].map(|server| {
                let node = if engine == "redis" { NODES[0] } else { NODES[server] };
                let port = if engine == "redis" { 6379 } else { 4222 };
                Relay::start(
                    hosts.gateway(),
                    (hosts.addr(node), port).into(),
                    Duration::from_millis(delay_ms),
                )
            });
            let servers = [SERVER_A, SERVER_B]
                .map(|host| Server::start(&hosts, host, &format!("{engine}://{}", relays[host].addr())));
            let report = load(&hosts, &servers, members, lines);
            let reach = &report["broadcast"]["reach_us"];
            println!(
                "| {engine} | {delay_ms} ms | {:.1} ms | {:.1} ms | {} | {} |",
                reach["p50"].as_f64().unwrap() / 1000.0,
                reach["p99"].as_f64().unwrap() / 1000.0,
                reach["count"],
                report["broadcast"]["deliveries_seen"]
            );
        }
        for child in &mut started {
            stop(child);
        }
    }
    if kills > 0 {
        println!();
        failover(&hosts, kills);
    }
}

/// The engine on its hosts: one Redis, or three NATS nodes clustered with routes.
fn start_engine(hosts: &Hosts, engine: &str) -> Vec<Child> {
    if engine == "redis" {
        let ip = hosts.addr(NODES[0]).to_string();
        let mut command = hosts.command(NODES[0], "redis-server");
        command.args([
            "--bind",
            &ip,
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ]);
        return vec![started(command, "eady to accept connections")];
    }
    let nodes: Vec<Child> = NODES.iter().map(|&node| start_nats(hosts, node)).collect();
    for &node in &NODES {
        wait_for_routes(hosts, node);
    }
    nodes
}

fn start_nats(hosts: &Hosts, node: usize) -> Child {
    let route = |index: usize| format!("nats://{}:6222", hosts.addr(index));
    let routes: Vec<String> =
        NODES.iter().filter(|&&other| other != node).map(|&other| route(other)).collect();
    let ip = hosts.addr(node).to_string();
    let mut command = hosts.command(node, "nats-server");
    command.args(["-a", &ip, "-p", "4222", "-m", "8222", "--cluster_name", "evloop"]);
    command.args(["--cluster", &route(node), "--routes", &routes.join(",")]);
    started(command, "Server is ready")
}

/// GET `path` from a NATS node's monitoring port.
fn monitor(hosts: &Hosts, node: usize, path: &str) -> String {
    let mut stream = hosts.connect_from(LOADER, (hosts.addr(node), 8222).into());
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

fn wait_for_routes(hosts: &Hosts, node: usize) {
    let started = Instant::now();
    while !monitor(hosts, node, "/routez").contains("\"num_routes\": 2") {
        assert!(started.elapsed() < READ_TIMEOUT, "NATS node {node} did not join the cluster");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `command` and waits for `ready` in its output (read on, and dropped, after).
fn started(command: Command, ready: &str) -> Child {
    hosts::start_ready(command, ready)
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// An evloop server on a host: a room, metrics, the backplane given.
struct Server {
    child: Child,
    room: SocketAddr,
    metrics: SocketAddr,
}

impl Server {
    fn start(hosts: &Hosts, host: usize, backplane: &str) -> Server {
        let ip = hosts.addr(host);
        let mut command = hosts.command(host, &common::binary("evloop-server"));
        command
            .args(["--listen", &format!("broadcast={ip}:0"), "--listen", &format!("metrics={ip}:0")])
            .args(["--backplane", backplane, "--backplane-ping", "1s"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = command.spawn().expect("evloop-server");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut addrs = Vec::new();
        for _ in 0..2 {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            // `<handler> listening on <addr> (<codec>)`
            addrs.push(line.split(' ').nth(3).unwrap().parse().expect("a startup line"));
        }
        let server = Server { child, room: addrs[0], metrics: addrs[1] };
        let started = Instant::now();
        while server.metric(hosts, "evloop_backplane_links_up") != 2.0 {
            assert!(started.elapsed() < Duration::from_secs(20), "links not up");
            thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn metric(&self, hosts: &Hosts, name: &str) -> f64 {
        let mut stream = hosts.connect_from(LOADER, self.metrics);
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// A closed-loop room run from the loader host: `members` over both servers, one sender.
fn load(hosts: &Hosts, servers: &[Server; 2], members: u32, lines: u32) -> Value {
    let mut command = hosts.command(LOADER, &common::binary("evloop-load"));
    for server in servers {
        command.args(["--target", &server.room.to_string()]);
    }
    let output = command
        .args(["--workload", "broadcast", "-c", &members.to_string(), "--active", "1", "-P", "1"])
        .args(["-n", &lines.to_string(), "--json", "--no-progress"])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("no report: {}", String::from_utf8_lossy(&output.stderr)));
    assert_eq!(report["ok"], true, "{report}");
    report
}

/// Kills the node server A is on, `kills` times, under a line every 5 ms from a member of B.
fn failover(hosts: &Hosts, kills: u32) {
    let mut nodes: Vec<Child> = NODES.iter().map(|&node| start_nats(hosts, node)).collect();
    for &node in &NODES {
        wait_for_routes(hosts, node);
    }
    let nats = |node: usize| format!("nats://{}:4222", hosts.addr(node));
    let a = Server::start(hosts, SERVER_A, &nats(NODES[0]));
    let b = Server::start(hosts, SERVER_B, &format!("{},{}", nats(NODES[1]), nats(NODES[2])));
    let mut sender = hosts.connect_from(LOADER, b.room);
    let listener = hosts.connect_from(LOADER, a.room);
    // When each line reached A's member, by its number.
    let arrivals: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let running = Arc::new(AtomicBool::new(true));
    {
        let arrivals = Arc::clone(&arrivals);
        thread::spawn(move || {
            for line in BufReader::new(listener).lines().map_while(Result::ok) {
                if let Some(number) = line.rsplit(' ').next().and_then(|n| n.parse().ok()) {
                    arrivals.lock().unwrap().push((number, Instant::now()));
                }
            }
        });
    }
    let sending = {
        let running = Arc::clone(&running);
        thread::spawn(move || {
            let mut number = 0u64;
            while running.load(Ordering::Relaxed) {
                writeln!(sender, "line {number}").unwrap();
                number += 1;
                thread::sleep(Duration::from_millis(5));
            }
        })
    };
    thread::sleep(Duration::from_secs(1));
    println!("| kill | node | failover (last line before → first after) | lines missed | A's gaps after |");
    println!("|---|---|---|---|---|");
    let mut times = Vec::new();
    for kill in 1..=kills {
        let ip = format!("\"ip\": \"{}\"", hosts.addr(SERVER_A));
        let index =
            (0..NODES.len()).find(|&i| monitor(hosts, NODES[i], "/connz").contains(&ip)).expect("A's node");
        let before = arrivals.lock().unwrap().len();
        let killed_at = Instant::now();
        stop(&mut nodes[index]);
        // Wait for lines again at A, then take the gap around the kill.
        let started = Instant::now();
        loop {
            let arrived = arrivals.lock().unwrap();
            if arrived.len() > before + 20
                && arrived.last().unwrap().1 > killed_at + Duration::from_millis(50)
            {
                break;
            }
            drop(arrived);
            assert!(started.elapsed() < Duration::from_secs(30), "lines did not come back after kill {kill}");
            thread::sleep(Duration::from_millis(20));
        }
        let arrived = arrivals.lock().unwrap().clone();
        let last_before =
            arrived.iter().rev().find(|(_, at)| *at <= killed_at).copied().expect("a line before");
        let first_after = arrived.iter().find(|(number, _)| *number > last_before.0).copied().unwrap();
        let longest = arrived
            .windows(2)
            .filter(|pair| pair[1].1 > killed_at)
            .map(|pair| (pair[1].1 - pair[0].1, pair[1].0 - pair[0].0 - 1))
            .max()
            .unwrap();
        let gap = longest.0.max(first_after.1 - last_before.1);
        times.push(gap);
        let gaps = a.metric(hosts, "evloop_backplane_gaps_total");
        println!("| {kill} | {} | {} ms | {} | {gaps} |", index + 1, gap.as_millis(), longest.1);
        nodes[index] = start_nats(hosts, NODES[index]);
        for &node in &NODES {
            wait_for_routes(hosts, node);
        }
        thread::sleep(Duration::from_millis(500));
    }
    running.store(false, Ordering::Relaxed);
    let _ = sending.join();
    times.sort();
    println!();
    println!(
        "failover over {kills} kills: median {} ms, worst {} ms",
        times[times.len() / 2].as_millis(),
        times.last().unwrap().as_millis()
    );
    drop((a, b));
    for node in &mut nodes {
        stop(node);
    }
}
