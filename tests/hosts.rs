//! Rooms across real hosts (issue 26): network namespaces made by the test, evloop servers on
//! two hosts, the engine (Redis, or a NATS cluster of three) on hosts of its own, clients on
//! another; latency on the engine's links from a relay; a NATS node killed under a steady
//! room load; a host cut off from the engine for 5 s. Needs root (see util/hosts.rs).

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use util::hosts::{Hosts, Relay, Started};
use util::{READ_TIMEOUT, ServerProcess};

/// The engine, on host `index`.
enum EngineKind {
    Redis,
    Nats,
}

fn start_engine(hosts: &Hosts, index: usize, kind: &EngineKind) -> (Started, SocketAddr, &'static str) {
    let ip = hosts.addr(index).to_string();
    match kind {
        EngineKind::Redis => {
            let mut command = hosts.command(index, "redis-server");
            command.args(["--bind", &ip, "--port", "6379", "--save", "", "--appendonly", "no"]);
            command.args(["--protected-mode", "no"]);
            (Started::start(command, "eady to accept connections"), (hosts.addr(index), 6379).into(), "redis")
        }
        EngineKind::Nats => {
            let mut command = hosts.command(index, "nats-server");
            command.args(["-a", &ip, "-p", "4222"]);
            (Started::start(command, "Server is ready"), (hosts.addr(index), 4222).into(), "nats")
        }
    }
}

/// An evloop server on host `index`: a broadcast room and a metrics listener, on the host's
/// address, sharing the room over `backplane`.
fn start_server(hosts: &Hosts, index: usize, backplane: &str, extra: &[&str]) -> ServerProcess {
    let ip = hosts.addr(index);
    let mut command = hosts.command(index, env!("CARGO_BIN_EXE_evloop-server"));
    command
        .args(["--listen", &format!("broadcast={ip}:0"), "--listen", &format!("metrics={ip}:0")])
        .args(["--backplane", backplane])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    ServerProcess::start(command, 2)
}

/// A server's metrics, fetched from host `from` (any host that can reach it).
fn metrics(hosts: &Hosts, from: usize, server: &ServerProcess) -> Vec<(String, f64)> {
    let mut stream = hosts.connect_from(from, server.addrs[1]);
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn metric(metrics: &[(String, f64)], name: &str) -> f64 {
    metrics.iter().find(|(key, _)| key == name).map_or(0.0, |(_, value)| *value)
}

/// Waits until `server`'s metrics (read from host `from`) satisfy `done`; returns how long.
#[track_caller]
fn wait_for(
    hosts: &Hosts,
    from: usize,
    server: &ServerProcess,
    what: &str,
    done: impl Fn(&[(String, f64)]) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let now = metrics(hosts, from, server);
        if done(&now) {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{what}: not within 30 s; metrics: {now:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Members connected to the room (the metrics request itself is a connection too).
fn members(metrics: &[(String, f64)]) -> f64 {
    let room = "evloop_listener_connections_open{handler=\"broadcast\"";
    metrics.iter().filter(|(key, _)| key.starts_with(room)).map(|(_, value)| value).sum()
}

fn links_up(metrics: &[(String, f64)]) -> bool {
    metric(metrics, "evloop_backplane_links_up") == 2.0
}

/// The loader on host `index`, against `targets`, with `args`: its exit code and report.
fn load_from(hosts: &Hosts, index: usize, targets: &[SocketAddr], args: &[&str]) -> (Option<i32>, Value) {
    let mut command = hosts.command(index, env!("CARGO_BIN_EXE_evloop-load"));
    for target in targets {
        command.args(["--target", &target.to_string()]);
    }
    let output = command.args(args).args(["--json", "--no-progress"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = serde_json::from_str(&stdout)
        .unwrap_or_else(|_| panic!("no report: {stdout}\n{}", String::from_utf8_lossy(&output.stderr)));
    (output.status.code(), report)
}

/// Two servers on two hosts, one room, the engine on a third and the members on a fourth,
/// through Redis and through NATS, with 0, 1 and 20 ms added on every engine link: every
/// line reaches every member, in order, once; a line that crosses hosts goes to the engine
/// and back, so its reach grows by at least twice the link's latency. Then a narrow link
/// (1 Mbit/s into one server's host): slower, nothing lost.
#[test]
fn a_room_spans_two_hosts_through_each_engine_with_latency() {
    let hosts = Hosts::new(4);
    for kind in [EngineKind::Redis, EngineKind::Nats] {
        let (_engine, engine_addr, scheme) = start_engine(&hosts, 2, &kind);
        for delay_ms in [0u64, 1, 20] {
            let relay = Relay::start(hosts.gateway(), engine_addr, Duration::from_millis(delay_ms));
            let backplane = format!("{scheme}://{}", relay.addr());
            let servers =
                [start_server(&hosts, 0, &backplane, &[]), start_server(&hosts, 1, &backplane, &[])];
            for server in &servers {
                wait_for(&hosts, 3, server, "both backplane links up", links_up);
            }
            let targets = [servers[0].addrs[0], servers[1].addrs[0]];
            let (code, report) = load_from(
                &hosts,
                3,
                &targets,
                &["--workload", "broadcast", "-c", "10", "-P", "1", "-n", "100"],
            );
            assert_eq!(code, Some(0), "{scheme} {delay_ms} ms: {report:#}");
            assert_eq!(report["broadcast"]["deliveries_seen"], 100 * 9, "{report:#}");
            let reach = &report["broadcast"]["reach_us"];
            let floor_us = 2.0 * delay_ms as f64 * 1000.0;
            assert!(reach["p50"].as_f64().unwrap() >= floor_us, "{scheme} {delay_ms} ms: reach {reach}");
            eprintln!(
                "{scheme} +{delay_ms} ms a link: reach p50 {} µs, p99 {} µs",
                reach["p50"], reach["p99"]
            );
        }
    }
    // A narrow link into the second server's host (1 Mbit/s by tbf): slower, nothing lost.
    hosts.limit_rate(1, "1mbit");
    let (_engine, engine_addr, _) = start_engine(&hosts, 2, &EngineKind::Redis);
    let backplane = format!("redis://{engine_addr}");
    let servers = [start_server(&hosts, 0, &backplane, &[]), start_server(&hosts, 1, &backplane, &[])];
    for server in &servers {
        wait_for(&hosts, 3, server, "both backplane links up", links_up);
    }
    let targets = [servers[0].addrs[0], servers[1].addrs[0]];
    let narrow = ["--workload", "broadcast", "-c", "10", "-P", "4", "-n", "400", "--size", "1000"];
    let (code, report) = load_from(&hosts, 3, &targets, &narrow);
    assert_eq!(code, Some(0), "over 1 Mbit/s: {report:#}");
    assert_eq!(report["broadcast"]["deliveries_seen"], 400 * 9, "{report:#}");
    eprintln!("over 1 Mbit/s: {} s", report["duration_s"]);
}

/// Three NATS servers clustered with routes, one per host; server A is given only the first
/// and learns the others from its INFO, server B the other two. The first is killed under a
/// steady room load: A moves to a live node; lines of the move are delivered or counted as
/// gaps, never repeated or reordered (the loader checks each sender's order); afterwards,
/// nothing is lost.
#[test]
fn a_nats_cluster_node_killed_under_load() {
    let hosts = Hosts::new(6);
    let (a, b, client) = (0, 1, 5);
    let nodes = [2, 3, 4];
    let route = |index: usize| format!("nats://{}:6222", hosts.addr(index));
    let mut cluster: Vec<Started> = nodes
        .iter()
        .map(|&node| {
            let ip = hosts.addr(node).to_string();
            let routes: Vec<String> =
                nodes.iter().filter(|&&other| other != node).map(|&other| route(other)).collect();
            let mut command = hosts.command(node, "nats-server");
            command.args(["-a", &ip, "-p", "4222", "-m", "8222", "--cluster_name", "evloop"]);
            command.args(["--cluster", &route(node), "--routes", &routes.join(",")]);
            Started::start(command, "Server is ready")
        })
        .collect();
    // The cluster is whole once every node has a route to the two others (its /routez).
    for &node in &nodes {
        let started = Instant::now();
        loop {
            let mut stream = hosts.connect_from(client, (hosts.addr(node), 8222).into());
            stream.write_all(b"GET /routez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
            let mut text = String::new();
            stream.read_to_string(&mut text).unwrap();
            if text.contains("\"num_routes\": 2") {
                break;
            }
            assert!(started.elapsed() < READ_TIMEOUT, "NATS node {node} has no routes to the others: {text}");
            thread::sleep(Duration::from_millis(50));
        }
    }
    let nats = |index: usize| format!("nats://{}:4222", hosts.addr(index));
    let server_a = start_server(&hosts, a, &nats(nodes[0]), &["--backplane-ping", "1s"]);
    let server_b = start_server(
        &hosts,
        b,
        &format!("{},{}", nats(nodes[1]), nats(nodes[2])),
        &["--backplane-ping", "1s"],
    );
    for server in [&server_a, &server_b] {
        wait_for(&hosts, client, server, "both backplane links up", links_up);
    }
    let targets = [server_a.addrs[0], server_b.addrs[0]];
    let steady = ["--workload", "broadcast", "-c", "10", "-R", "200", "-d", "6s", "--reply-timeout", "3s"];
    let run = {
        let (loader, targets) = (hosts.command(client, env!("CARGO_BIN_EXE_evloop-load")), targets);
        thread::spawn(move || {
            let mut loader = loader;
            for target in targets {
                loader.args(["--target", &target.to_string()]);
            }
            loader.args(steady).args(["--json", "--no-progress"]).output().unwrap()
        })
    };
    thread::sleep(Duration::from_secs(2)); // into the steady load, then the fault
    cluster[0].kill();
    let killed = Instant::now();
    wait_for(&hosts, client, &server_a, "A back on a live node", |now| {
        links_up(now) && metric(now, "evloop_backplane_reconnects_total") >= 2.0
    });
    eprintln!("A moved to a live node {} ms after the kill", killed.elapsed().as_millis());
    let output = run.join().unwrap();
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["errors"]["mismatch"], 0, "nothing repeated or reordered: {report:#}");
    // Every delivery that did not come is a line a server knows it missed (5 members each).
    let gaps: f64 = [&server_a, &server_b]
        .iter()
        .map(|server| metric(&metrics(&hosts, client, server), "evloop_backplane_gaps_total"))
        .sum();
    let lost = report["errors"]["lost"].as_u64().unwrap();
    assert_eq!(lost as f64, gaps * 5.0, "lost deliveries are the servers' gaps, 5 members each: {report:#}");
    // After the move: zero loss.
    let (code, report) = load_from(
        &hosts,
        client,
        &targets,
        &["--workload", "broadcast", "-c", "10", "-R", "200", "-d", "2s"],
    );
    assert_eq!(code, Some(0), "{report:#}");
    drop(cluster);
}

/// A line client on a host: sends lines, reads lines.
struct Member {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Member {
    fn join(hosts: &Hosts, from: usize, server: &ServerProcess) -> Member {
        let stream = hosts.connect_from(from, server.addrs[0]);
        Member { reader: BufReader::new(stream.try_clone().unwrap()), writer: stream }
    }

    fn say(&mut self, line: &str) {
        self.writer.write_all(format!("{line}\n").as_bytes()).unwrap();
    }

    /// The next line's message (after the sender's address).
    fn hear(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line.trim_end().split_once(": ").map(|(_, message)| message.to_string()).unwrap_or(line)
    }
}

/// A host cut off from the engine (and every other host) for 5 s: its own members keep
/// chatting; the lines that could not cross are counted as gaps by the other server, those
/// that did cross arrive once and in order; the links come back by themselves.
#[test]
fn a_host_cut_off_from_the_engine_for_five_seconds() {
    let hosts = Hosts::new(3);
    let (_engine, engine_addr, _) = start_engine(&hosts, 2, &EngineKind::Redis);
    let backplane = format!("redis://{engine_addr}");
    let cut = start_server(&hosts, 0, &backplane, &["--backplane-ping", "1s"]);
    let other = start_server(&hosts, 1, &backplane, &["--backplane-ping", "1s"]);
    for (host, server) in [(0, &cut), (1, &other)] {
        wait_for(&hosts, host, server, "both backplane links up", links_up);
    }
    let (mut speaker, mut neighbour, mut remote) =
        (Member::join(&hosts, 0, &cut), Member::join(&hosts, 0, &cut), Member::join(&hosts, 1, &other));
    wait_for(&hosts, 0, &cut, "two members", |now| members(now) == 2.0);
    wait_for(&hosts, 1, &other, "one member", |now| members(now) == 1.0);
    speaker.say("before");
    assert_eq!((neighbour.hear(), remote.hear()), ("before".to_string(), "before".to_string()));

    hosts.set_link(0, false);
    let cut_at = Instant::now();
    let mut sent = 0;
    while cut_at.elapsed() < Duration::from_secs(5) {
        let line = format!("during {sent}");
        speaker.say(&line);
        assert_eq!(neighbour.hear(), line, "local members keep chatting");
        sent += 1;
        thread::sleep(Duration::from_millis(100));
    }
    hosts.set_link(0, true);
    let healed = wait_for(&hosts, 0, &cut, "links back by themselves", |now| {
        links_up(now) && metric(now, "evloop_backplane_reconnects_total") >= 2.0
    });
    eprintln!("links back {} ms after the link came up", healed.as_millis());
    speaker.say("after");
    assert_eq!(neighbour.hear(), "after");
    let mut crossed = Vec::new();
    loop {
        let message = remote.hear();
        if message == "after" {
            break;
        }
        crossed.push(message);
    }
    let numbers: Vec<u32> = crossed
        .iter()
        .map(|message| {
            message.strip_prefix("during ").and_then(|n| n.parse().ok()).expect("a line of the cut")
        })
        .collect();
    assert!(
        numbers.windows(2).all(|pair| pair[0] < pair[1]),
        "what crossed came once, in order: {numbers:?}"
    );
    let gaps = metric(&metrics(&hosts, 1, &other), "evloop_backplane_gaps_total");
    eprintln!("{sent} lines in the cut: {} crossed, {gaps} counted as gaps", crossed.len());
    assert_eq!(crossed.len() as f64 + gaps, f64::from(sent), "every line crossed or was counted as a gap");
}
