//! Load from many hosts: `evloop-load --agent` processes meeting a `--coordinate` run on a
//! real nats-server (a private port, or hosts of their own in network namespaces, a NATS
//! cluster among them), against a real server. The run is split exactly, started together,
//! and reported as one; an agent lost mid-run, too few agents, a coordinator gone and a NATS
//! node lost each end as the docs say.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use util::engines::Engine;
use util::hosts::{Hosts, Started};
use util::loader::assert_all_verified;
use util::tls::TlsFiles;
use util::{READ_TIMEOUT, ServerProcess, TestServer};

/// Longest a coordinated run in these tests may take before the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// An agent process, ready once it said `agent NAME ready`; killed on drop.
struct Agent {
    process: Started,
}

impl Agent {
    /// An agent on this host.
    fn start(url: &str, name: &str, extra: &[&str]) -> Agent {
        Agent::start_with(Command::new(env!("CARGO_BIN_EXE_evloop-load")), url, name, extra)
    }

    /// An agent on host `index`.
    fn start_on(hosts: &Hosts, index: usize, url: &str, name: &str, extra: &[&str]) -> Agent {
        Agent::start_with(hosts.command(index, env!("CARGO_BIN_EXE_evloop-load")), url, name, extra)
    }

    fn start_with(mut command: Command, url: &str, name: &str, extra: &[&str]) -> Agent {
        command.args(["--agent", url, "--agent-name", name]).args(extra);
        Agent { process: Started::start(command, &format!("agent {name} ready")) }
    }

    /// SIGKILL: no goodbye to anyone.
    fn kill(&mut self) {
        self.process.kill();
    }
}

/// A process started by a test, whose output is collected; killed on drop if still running.
struct Running {
    child: Child,
    output: mpsc::Receiver<(String, String)>,
}

impl Running {
    fn start(mut command: Command) -> Running {
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start");
        let (mut stdout, mut stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let (done, output) = mpsc::channel();
        thread::spawn(move || {
            let err = thread::spawn(move || {
                let mut text = String::new();
                let _ = stderr.read_to_string(&mut text);
                text
            });
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            let _ = done.send((text, err.join().unwrap_or_default()));
        });
        Running { child, output }
    }

    /// Waits (at most [`RUN_LIMIT`]) for it to end: its exit code, stdout and stderr.
    #[track_caller]
    fn finish(mut self) -> (Option<i32>, String, String) {
        let deadline = Instant::now() + RUN_LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let (stdout, stderr) = self.output.recv_timeout(READ_TIMEOUT).unwrap_or_default();
                return (status.code(), stdout, stderr);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let (stdout, stderr) = self.output.recv_timeout(READ_TIMEOUT).unwrap_or_default();
                panic!("still running after {RUN_LIMIT:?}\nstdout: {stdout}\nstderr: {stderr}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `evloop-load --coordinate URL --agents N` with `args` (plus --json --no-progress), started.
fn start_coordinator(mut command: Command, url: &str, agents: usize, args: &[&str]) -> Running {
    command.args(["--coordinate", url, "--agents", &agents.to_string()]).args(args);
    command.args(["--json", "--no-progress"]);
    Running::start(command)
}

/// A coordinated run to its end, from this host: exit code and report.
#[track_caller]
fn coordinate(url: &str, agents: usize, args: &[&str]) -> (Option<i32>, Value) {
    let coordinator = start_coordinator(Command::new(env!("CARGO_BIN_EXE_evloop-load")), url, agents, args);
    report_of(coordinator)
}

#[track_caller]
fn report_of(coordinator: Running) -> (Option<i32>, Value) {
    let (code, stdout, stderr) = coordinator.finish();
    let report = serde_json::from_str(&stdout)
        .unwrap_or_else(|error| panic!("not a JSON report ({error}): {stdout}\nstderr: {stderr}"));
    (code, report)
}

/// The `agents` list of a report.
#[track_caller]
fn agents_of(report: &Value) -> &Vec<Value> {
    report["agents"].as_array().unwrap_or_else(|| panic!("no agents list: {report:#}"))
}

fn u64_of(value: &Value) -> u64 {
    value.as_u64().unwrap_or_else(|| panic!("not a count: {value}"))
}

fn f64_of(value: &Value) -> f64 {
    value.as_f64().unwrap_or_else(|| panic!("not a number: {value}"))
}

/// Three agents, two loader processes each, run one counted run as one: every connection
/// and message goes to exactly one agent (-c and -n that do not divide evenly), the server
/// sees exactly -n, and the report's totals are the agents' sums, its latency merged from
/// their histograms (the count their sum, the max the largest, the median between theirs).
#[test]
fn a_run_split_over_agents_is_one_run() {
    let nats = Engine::nats(&[]);
    let server = TestServer::start(&["echo=127.0.0.1:0"]);
    let target = server.addr().to_string();
    let _agents = ["a", "b", "c"].map(|name| Agent::start(&nats.url(), name, &[]));
    let args = ["--target", &target, "-c", "31", "-n", "10001", "--processes", "2", "--pipeline", "4"];
    let (code, report) = coordinate(&nats.url(), 3, &args);
    assert_all_verified(code, &report);
    assert_eq!(report["messages"]["sent"], 10001, "{report:#}");
    assert_eq!(report["messages"]["verified"], 10001, "{report:#}");
    assert_eq!(report["connections"]["established"], 31, "{report:#}");
    assert_eq!(server.stats().messages_in, 10001, "the server saw exactly -n");
    let agents = agents_of(&report);
    let mut names: Vec<&str> = agents.iter().map(|agent| agent["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(names, ["a", "b", "c"]);
    let mut connections: Vec<u64> =
        agents.iter().map(|agent| u64_of(&agent["connections"]["established"])).collect();
    let mut messages: Vec<u64> = agents.iter().map(|agent| u64_of(&agent["messages"]["verified"])).collect();
    connections.sort_unstable();
    messages.sort_unstable();
    assert_eq!(connections, [10, 10, 11], "{report:#}");
    assert_eq!(messages, [3333, 3334, 3334], "{report:#}");
    for agent in agents {
        assert_eq!(agent["ok"], true, "{agent:#}");
        assert!(f64_of(&agent["clock_round_trip_us"]) > 0.0, "its clock was measured: {agent:#}");
    }
    let latency = &report["latency_us"];
    let counts: u64 = agents.iter().map(|agent| u64_of(&agent["latency_us"]["count"])).sum();
    assert_eq!(u64_of(&latency["count"]), counts, "{report:#}");
    assert_eq!(u64_of(&latency["count"]), 10001, "{report:#}");
    let largest = agents.iter().map(|agent| f64_of(&agent["latency_us"]["max"])).fold(0.0, f64::max);
    assert_eq!(f64_of(&latency["max"]), largest, "{report:#}");
    let medians: Vec<f64> = agents.iter().map(|agent| f64_of(&agent["latency_us"]["p50"])).collect();
    let p50 = f64_of(&latency["p50"]);
    assert!(medians.iter().any(|&m| m <= p50) && medians.iter().any(|&m| m >= p50), "{report:#}");
}

/// The same agents take one run after another: workloads and codecs (length-prefixed,
/// pipelined over threads; WebSocket; TLS; an open loop at a rate; the generic workload),
/// each verified whole.
#[test]
fn agents_run_every_workload_and_codec_one_run_after_another() {
    let nats = Engine::nats(&[]);
    let files = TlsFiles::new("agents");
    let server = TestServer::start_with(
        files.config(),
        &[
            "uppercase:length=127.0.0.1:0",
            "echo:ws=127.0.0.1:0",
            "echo=tls://127.0.0.1:0",
            "echo=127.0.0.1:0",
        ],
    );
    let _agents = ["one", "two"].map(|name| Agent::start(&nats.url(), name, &[]));
    let (uppercase, ws) = (server.addr_of(0).to_string(), format!("ws://{}/", server.addr_of(1)));
    let (tls, echo) = (format!("tls://{}", server.addr_of(2)), server.addr_of(3).to_string());
    let runs: [&[&str]; 5] = [
        &[
            "--target",
            &uppercase,
            "--workload",
            "uppercase",
            "--codec",
            "length",
            "-c",
            "8",
            "-P",
            "8",
            "-t",
            "2",
            "-n",
            "4000",
        ],
        &["--target", &ws, "-c", "6", "-n", "2000"],
        &["--target", &tls, "--insecure", "-c", "6", "-n", "2000"],
        &["--target", &echo, "-c", "10", "-R", "2000", "-d", "1s"],
        &["--target", &echo, "-m", "hello\\n", "--expect", "hello\\n", "-c", "4", "-n", "1000"],
    ];
    for args in runs {
        let (code, report) = coordinate(&nats.url(), 2, args);
        assert_all_verified(code, &report);
        let agents = agents_of(&report);
        assert_eq!(agents.len(), 2, "{report:#}");
        assert!(agents.iter().all(|agent| agent["ok"] == true), "{args:?}: {report:#}");
    }
    // The open loop: each agent sent half the rate; the merged run, all of it.
    let (_, report) = coordinate(&nats.url(), 2, runs[3]);
    let rate = f64_of(&report["throughput"]["msgs_per_s"]);
    assert!((1700.0..2300.0).contains(&rate), "about 2000 msgs/s in all: {report:#}");
    assert!(report["mode"].as_str().unwrap().contains("open loop at 2000"), "{report:#}");
}

/// A room spread over agents (two, two loader processes each), open loop: every line
/// reaches every other member, whichever agent sent it and whichever received it, and the
/// deliveries owed are the whole room's (each line to every member but its sender). A
/// closed-loop broadcast, whose lines are answered once every member has them, is refused
/// over agents, saying why.
#[test]
fn a_room_spread_over_agents() {
    let nats = Engine::nats(&[]);
    let server = TestServer::start(&["broadcast=127.0.0.1:0"]);
    let target = server.addr().to_string();
    let _agents = ["left", "right"].map(|name| Agent::start(&nats.url(), name, &[]));
    let args = [
        "--target",
        &target,
        "--workload",
        "broadcast",
        "-c",
        "40",
        "-R",
        "400",
        "-d",
        "2s",
        "--processes",
        "2",
    ];
    let (code, report) = coordinate(&nats.url(), 2, &args);
    assert_all_verified(code, &report);
    let lines = u64_of(&report["messages"]["sent"]);
    assert!(lines >= 700, "{report:#}");
    assert_eq!(u64_of(&report["broadcast"]["deliveries_expected"]), lines * 39, "{report:#}");
    assert_eq!(u64_of(&report["broadcast"]["deliveries_seen"]), lines * 39, "{report:#}");
    for agent in agents_of(&report) {
        assert_eq!(agent["ok"], true, "{agent:#}");
        // Each agent's 20 members heard every line but their own: its share of the room's.
        assert_eq!(
            u64_of(&agent["messages"]["verified"]),
            lines * 20 - u64_of(&agent["messages"]["sent"]),
            "{agent:#}"
        );
    }
    let mut command = Command::new(env!("CARGO_BIN_EXE_evloop-load"));
    command.args([
        "--coordinate",
        &nats.url(),
        "--agents",
        "2",
        "--target",
        &target,
        "--workload",
        "broadcast",
        "-c",
        "4",
        "-P",
        "2",
    ]);
    let (code, _, stderr) = Running::start(command).finish();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("a closed-loop broadcast (--pipeline, --step-members) runs in one loader process"),
        "{stderr}"
    );
}

/// The same room over loader processes on one host (`--processes`): the same sums, every
/// line verified in every process.
#[test]
fn a_room_spread_over_loader_processes() {
    let server = TestServer::start(&["broadcast=127.0.0.1:0"]);
    let target = server.addr().to_string();
    let (code, report) = util::loader::load(&[
        "--target",
        &target,
        "--workload",
        "broadcast",
        "-c",
        "30",
        "-R",
        "300",
        "-d",
        "2s",
        "--processes",
        "3",
    ]);
    assert_all_verified(code, &report);
    let lines = u64_of(&report["messages"]["sent"]);
    assert!(lines >= 500, "{report:#}");
    assert_eq!(u64_of(&report["broadcast"]["deliveries_seen"]), lines * 29, "{report:#}");
    assert_eq!(u64_of(&report["broadcast"]["deliveries_expected"]), lines * 29, "{report:#}");
}

/// Fewer agents than --agents within --connect-timeout: exit 1, saying how many came and
/// which, and nothing is sent.
#[test]
fn too_few_agents_is_a_failure_that_says_how_many_came() {
    let nats = Engine::nats(&[]);
    let server = TestServer::start(&["echo=127.0.0.1:0"]);
    let target = server.addr().to_string();
    let _agent = Agent::start(&nats.url(), "lonely", &[]);
    let mut command = Command::new(env!("CARGO_BIN_EXE_evloop-load"));
    command.args([
        "--coordinate",
        &nats.url(),
        "--agents",
        "3",
        "--target",
        &target,
        "--connect-timeout",
        "1s",
    ]);
    let started = Instant::now();
    let (code, stdout, stderr) = Running::start(command).finish();
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("only 1 of 3 agents came within --connect-timeout (1.0 s): lonely"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10), "it waited --connect-timeout, not more");
    assert_eq!(server.stats().connections_accepted, 0, "nothing was sent");
    // No NATS at all: said so.
    let unreachable = "nats://127.0.0.1:9";
    let mut command = Command::new(env!("CARGO_BIN_EXE_evloop-load"));
    command.args([
        "--coordinate",
        unreachable,
        "--agents",
        "1",
        "--target",
        &target,
        "--connect-timeout",
        "1s",
    ]);
    let (code, _, stderr) = Running::start(command).finish();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cannot reach NATS at nats://127.0.0.1:9"), "{stderr}");
}

/// An agent killed mid-run: the run ends with the other's results kept, that agent
/// `ok: false`, `lost`, and named; exit 1. Its loader processes go with it (their parent
/// gone), so its connections close.
#[test]
fn an_agent_killed_mid_run_is_lost_and_the_rest_is_kept() {
    let nats = Engine::nats(&[]);
    let server = TestServer::start(&["echo=127.0.0.1:0"]);
    let target = server.addr().to_string();
    let survivor = Agent::start(&nats.url(), "survivor", &[]);
    let mut victim = Agent::start(&nats.url(), "victim", &[]);
    let args = ["--target", &target, "-c", "10", "-d", "5s", "--agent-timeout", "1500ms"];
    let coordinator =
        start_coordinator(Command::new(env!("CARGO_BIN_EXE_evloop-load")), &nats.url(), 2, &args);
    server.wait_for("traffic from both agents", |stats| {
        stats.messages_in > 5000 && stats.connections_open == 10
    });
    victim.kill();
    server.wait_for("the victim's connections closed", |stats| stats.connections_open == 5);
    let (code, report) = report_of(coordinator);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(report["ok"], false, "{report:#}");
    let agents = agents_of(&report);
    let by_name = |name: &str| agents.iter().find(|agent| agent["name"] == name).unwrap();
    let (kept, lost) = (by_name("survivor"), by_name("victim"));
    assert_eq!(kept["ok"], true, "{report:#}");
    assert!(u64_of(&kept["messages"]["verified"]) > 1000, "{report:#}");
    assert_eq!(
        (lost["ok"].clone(), lost["lost"].clone()),
        (Value::Bool(false), Value::Bool(true)),
        "{report:#}"
    );
    assert!(lost["error"].as_str().unwrap().contains("no word from it for 1.5 s"), "{report:#}");
    // The totals are the survivor's: the victim's share is missing, not made up.
    assert_eq!(report["messages"]["verified"], kept["messages"]["verified"], "{report:#}");
    assert_eq!(report["latency_us"]["count"], kept["latency_us"]["count"], "{report:#}");
    drop(survivor);
}

/// A coordinator killed mid-run: its agent hears nothing for --agent-timeout, gives the run
/// up (its loader processes stopped, their connections closed), says so, and takes the
/// next run.
#[test]
fn an_agent_gives_up_a_run_whose_coordinator_is_gone() {
    let nats = Engine::nats(&[]);
    let server = TestServer::start(&["echo=127.0.0.1:0"]);
    let target = server.addr().to_string();
    let mut command = Command::new(env!("CARGO_BIN_EXE_evloop-load"));
    command.args(["--agent", &nats.url(), "--agent-name", "orphan"]);
    let mut agent = command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let (lines, said) = mpsc::channel();
    let stdout = agent.stdout.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let next_line = || said.recv_timeout(READ_TIMEOUT).expect("a line from the agent");
    assert_eq!(next_line(), "agent orphan ready");
    let args = ["--target", &target, "-c", "4", "-d", "60s", "--agent-timeout", "1s"];
    let mut coordinator =
        start_coordinator(Command::new(env!("CARGO_BIN_EXE_evloop-load")), &nats.url(), 1, &args);
    server.wait_for("traffic", |stats| stats.messages_in > 1000);
    let _ = coordinator.child.kill();
    let killed = Instant::now();
    let line = next_line();
    assert!(
        line.starts_with("agent orphan gave run ")
            && line.ends_with("up: no word from its coordinator for 1.0 s"),
        "{line}"
    );
    server.wait_for("its connections closed", |stats| stats.connections_open == 0);
    assert!(killed.elapsed() < Duration::from_secs(5), "given up within about --agent-timeout");
    let (code, report) = coordinate(&nats.url(), 1, &["--target", &target, "-c", "4", "-n", "1000"]);
    assert_all_verified(code, &report);
    assert!(next_line().starts_with("agent orphan finished run "));
    let _ = agent.kill();
    let _ = agent.wait();
}

/// Agents on hosts of their own (network namespaces): NATS on one, the server on another,
/// two agents each connecting from its own address (`--sources` given to the agent), the
/// coordinator in the test's own namespace. One run, split exactly, reported as one; then a
/// room over both hosts, each line sent on one host and heard on both.
#[test]
fn agents_on_their_own_hosts() {
    let hosts = Hosts::new(4);
    let (engine, server_host) = (0, 1);
    let nats = start_nats(&hosts, engine, &[]);
    let url = format!("nats://{}:4222", hosts.addr(engine));
    let server = start_server(&hosts, server_host);
    let target = server.addrs[0].to_string();
    let _agents: Vec<Agent> = (2..4)
        .map(|host| {
            let source = hosts.addr(host).to_string();
            Agent::start_on(&hosts, host, &url, &format!("host{host}"), &["--sources", &source])
        })
        .collect();
    let (code, report) = coordinate(&url, 2, &["--target", &target, "-c", "40", "-n", "20001", "-P", "4"]);
    assert_all_verified(code, &report);
    assert_eq!(report["messages"]["verified"], 20001, "{report:#}");
    let agents = agents_of(&report);
    assert_eq!(agents.len(), 2);
    for agent in agents {
        assert_eq!(agent["connections"]["established"], 20, "{agent:#}");
        let round_trip = f64_of(&agent["clock_round_trip_us"]);
        assert!(round_trip > 0.0 && round_trip < 100_000.0, "{agent:#}");
    }
    let room = server.addrs[1].to_string();
    let (code, report) = coordinate(
        &url,
        2,
        &["--target", &room, "--workload", "broadcast", "-c", "20", "-R", "200", "-d", "2s"],
    );
    assert_all_verified(code, &report);
    let lines = u64_of(&report["messages"]["sent"]);
    assert_eq!(u64_of(&report["broadcast"]["deliveries_seen"]), lines * 19, "{report:#}");
    drop(nats);
}

/// A NATS cluster of three, the agents on two of its nodes, the coordinator on the third:
/// the first agent's node is killed mid-run. That agent moves to a live node (well within
/// --agent-timeout), and the run ends whole: every agent ok, nothing lost.
#[test]
fn a_nats_node_lost_during_a_run() {
    let hosts = Hosts::new(6);
    let nodes = [0, 1, 2];
    let (server_host, agent_hosts) = (3, [4, 5]);
    let route = |index: usize| format!("nats://{}:6222", hosts.addr(index));
    let mut cluster: Vec<Started> = nodes
        .iter()
        .map(|&node| {
            let routes: Vec<String> =
                nodes.iter().filter(|&&other| other != node).map(|&other| route(other)).collect();
            start_nats(
                &hosts,
                node,
                &["--cluster_name", "evloop", "--cluster", &route(node), "--routes", &routes.join(",")],
            )
        })
        .collect();
    let client = |first: usize| {
        let order = [first, (first + 1) % 3, (first + 2) % 3];
        order.map(|node| format!("nats://{}:4222", hosts.addr(node))).join(",")
    };
    wait_for_routes(&hosts, &nodes);
    let server = start_server(&hosts, server_host);
    let target = server.addrs[0].to_string();
    let _agents: Vec<Agent> = agent_hosts
        .iter()
        .enumerate()
        .map(|(index, &host)| Agent::start_on(&hosts, host, &client(index), &format!("agent{index}"), &[]))
        .collect();
    let args = ["--target", &target, "-c", "20", "-d", "5s", "-R", "4000", "--agent-timeout", "4s"];
    let coordinator =
        start_coordinator(Command::new(env!("CARGO_BIN_EXE_evloop-load")), &client(2), 2, &args);
    thread::sleep(Duration::from_millis(2500));
    cluster[0].kill();
    let (code, report) = report_of(coordinator);
    assert_all_verified(code, &report);
    assert!(agents_of(&report).iter().all(|agent| agent["ok"] == true), "{report:#}");
    let rate = f64_of(&report["throughput"]["msgs_per_s"]);
    assert!(rate > 3500.0, "the run went on through the loss: {report:#}");
}

/// nats-server on host `index`, port 4222, with `extra` arguments; ready.
fn start_nats(hosts: &Hosts, index: usize, extra: &[&str]) -> Started {
    let mut command = hosts.command(index, "nats-server");
    command.args(["-a", &hosts.addr(index).to_string(), "-p", "4222", "-m", "8222"]).args(extra);
    Started::start(command, "Server is ready")
}

/// An echo server and a room on host `index`, on its own address.
fn start_server(hosts: &Hosts, index: usize) -> ServerProcess {
    let ip = hosts.addr(index);
    let mut command = hosts.command(index, env!("CARGO_BIN_EXE_evloop-server"));
    command
        .args(["--listen", &format!("echo={ip}:0"), "--listen", &format!("broadcast={ip}:0")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    ServerProcess::start(command, 2)
}

/// Waits until every node of the cluster has routes to the others (its /routez).
fn wait_for_routes(hosts: &Hosts, nodes: &[usize]) {
    for &node in nodes {
        let started = Instant::now();
        loop {
            let mut stream = hosts.connect_from(node, (hosts.addr(node), 8222).into());
            stream.write_all(b"GET /routez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
            let mut text = String::new();
            stream.read_to_string(&mut text).unwrap();
            if text.contains(&format!("\"num_routes\": {}", nodes.len() - 1)) {
                break;
            }
            assert!(started.elapsed() < READ_TIMEOUT, "NATS node {node} has no routes to the others: {text}");
            thread::sleep(Duration::from_millis(50));
        }
    }
}
