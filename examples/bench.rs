//! The benchmark driver behind docs/benchmarks.md ("Speed"): evloop-server against its
//! baselines under the same loader, in one interleaved run (A B C, then C B A, ...) so that
//! drift on a shared machine hits every server alike; server pinned to cpu 0, loader to cpu 1.
//!
//! - **echo**: 64-byte lines, ping-pong and pipelined, at each connection count. Baselines:
//!   `c`, a raw edge-triggered epoll server (examples/baselines/epoll_echo.c, built here with
//!   `cc`), and `tokio` (examples/tokio_echo.rs). Neither frames messages: they echo each read
//!   up to its last newline. evloop decodes every line, calls the handler and encodes the reply.
//! - **each** (the per-read cost): echo again, but the loader writes each line in a `write`
//!   of its own and refills a connection as each reply comes back (`evloop-load
//!   --write-each`), the way most clients write: the server finds a few lines per read
//!   instead of a batch of 16, so what it spends per read, not per message, shows. At 1, 4
//!   and 16 lines in flight (`--depths`) over 100 connections (`--each-connections`).
//! - **fan-out**: one room, one sender keeping 8 lines in flight (a line is answered once every
//!   other member has it), every member reading. Baseline: `mio` (examples/mio_fanout.rs).
//! - **latency**: echo at a fixed open-loop rate.
//! - **ws**: the same over WebSocket (`--codec ws`), evloop's `ws` codec against Node's `ws`
//!   package (examples/baselines/ws_server.js, installed by scripts/test): echo ping-pong
//!   and pipelined at `--ws-counts` connections, fan-out per delivery at `--ws-members`,
//!   and the server's memory per idle WebSocket connection (10,000 held idle).
//!
//! For each cell: throughput, latency, and the CPU time per message (echo: per reply; fan-out:
//! per delivery) of the server (`/proc/PID/stat`) and of the loader (`getrusage`), user and
//! system apart, over the whole run; each figure is the median of the rounds. CPU time per
//! message is the steady figure here: throughput swings 10-15% from run to run.
//!
//! Run:  cargo run --release --example bench                     (everything, ~25 min)
//!       cargo run --release --example bench -- --counts 100 --pipelines 16 --members 1000 \
//!           --rounds 1 --seconds 3                              (a taste)
//!       cargo run --release --example bench -- --servers bin:/tmp/before,evloop --workloads echo
//!                                                               (an A/B test of a change)
//!       cargo run --release --example bench -- --loader /tmp/load-before --workloads echo
//!                                                               (the same for the loader)
//!
//! It builds what it needs and prints Markdown tables to paste into the docs.

use std::process::Command;
use std::time::Duration;

use clap::Parser;
use serde_json::Value;

mod common;

use common::CpuTime;

/// Compares servers under evloop-load; see the module documentation.
#[derive(Parser, Debug)]
struct Args {
    /// What to measure: echo, each, fanout, latency, ws
    #[arg(long, value_delimiter = ',', default_value = "echo,each,fanout,latency,ws")]
    workloads: Vec<String>,
    /// ws: connection counts for echo
    #[arg(long, value_delimiter = ',', default_value = "100,10000")]
    ws_counts: Vec<u32>,
    /// ws: room sizes
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    ws_members: Vec<u32>,
    /// ws: servers, evloop and node (or bin:PATH)
    #[arg(long, value_delimiter = ',', default_value = "evloop,node")]
    ws_servers: Vec<String>,
    /// Each: lines in flight per connection, each written on its own
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    depths: Vec<u32>,
    /// Each: connections
    #[arg(long, default_value_t = 100)]
    each_connections: u32,
    /// Echo: connection counts
    #[arg(long, value_delimiter = ',', default_value = "100,1000,5000")]
    counts: Vec<u32>,
    /// Echo: pipeline depths (1 = ping-pong)
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    pipelines: Vec<u32>,
    /// Echo servers: evloop, c, tokio, or bin:PATH (another evloop-server build)
    #[arg(long, value_delimiter = ',', default_value = "evloop,c,tokio")]
    servers: Vec<String>,
    /// Fan-out: room sizes (members, all of them loader connections)
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    members: Vec<u32>,
    /// Fan-out: lines the sender keeps in flight
    #[arg(long, default_value_t = 8)]
    in_flight: u32,
    /// Fan-out servers: evloop, mio, or bin:PATH (another evloop-server build)
    #[arg(long, value_delimiter = ',', default_value = "evloop,mio")]
    fanout_servers: Vec<String>,
    /// Rounds per cell (medians are reported)
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Measured seconds per run (after a 1 s warmup)
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// Latency: the fixed open-loop rate (msgs/s, over 100 connections)
    #[arg(long, default_value_t = 50_000)]
    rate: u32,
    /// Extra arguments for evloop-server (e.g. --idle-timeout 60)
    #[arg(long, allow_hyphen_values = true, default_value = "")]
    evloop_args: String,
    /// The loader binary (default: this build's evloop-load); an older build gives a
    /// before/after of the loader itself
    #[arg(long)]
    loader: Option<String>,
}

/// What a run serves.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Serves {
    Echo,
    Room,
    /// Echo over WebSocket.
    WsEcho,
    /// A room over WebSocket.
    WsRoom,
}

impl Serves {
    fn websocket(self) -> bool {
        matches!(self, Serves::WsEcho | Serves::WsRoom)
    }
}

/// One measured run.
#[derive(Clone, Debug, Default)]
struct Run {
    msgs_per_s: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    uncorrected_p50_us: f64,
    uncorrected_p99_us: f64,
    /// CPU time per verified message (per delivery, fan-out).
    server: CpuTime,
    loader: CpuTime,
}

fn main() {
    let args = Args::parse();
    common::build(&[
        "--bin",
        "evloop-server",
        "--bin",
        "evloop-load",
        "--example",
        "tokio_echo",
        "--example",
        "mio_fanout",
    ]);
    build_c_baseline();
    let pinned = Command::new("taskset").arg("-V").output().is_ok();
    if !pinned {
        eprintln!("bench: taskset not found; running unpinned (results are noisier)");
    }
    println!(
        "Servers on cpu 0, loader on cpu 1; {} s measured after 1 s warmup; medians of {} rounds, interleaved.",
        args.seconds, args.rounds
    );
    println!("CPU: µs per message (echo: per reply; fan-out: per delivery), whole run, user + system.\n");
    let bench = Bench { args: &args, pinned };
    if args.workloads.iter().any(|w| w == "echo") {
        bench.echo();
    }
    if args.workloads.iter().any(|w| w == "each") {
        bench.each();
    }
    if args.workloads.iter().any(|w| w == "fanout") {
        bench.fanout();
    }
    if args.workloads.iter().any(|w| w == "latency") {
        bench.latency();
    }
    if args.workloads.iter().any(|w| w == "ws") {
        bench.websocket();
    }
}

struct Bench<'a> {
    args: &'a Args,
    pinned: bool,
}

impl Bench<'_> {
    fn echo(&self) {
        println!("Echo, 64-byte lines:\n");
        println!(
            "| connections | mode | server | msgs/s | p50 / p99 µs | server user | server system | server CPU | loader CPU |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for &pipeline in &self.args.pipelines {
            for &count in &self.args.counts {
                let loader =
                    self.loader_args(&["-c", &count.to_string(), "--pipeline", &pipeline.to_string()]);
                let runs = self.interleaved(&self.args.servers, Serves::Echo, &loader);
                let mode =
                    if pipeline == 1 { "ping-pong".to_string() } else { format!("pipeline {pipeline}") };
                self.print_rows(&format!("{} | {mode}", thousands(count as f64)), &self.args.servers, &runs);
            }
        }
        println!();
    }

    fn each(&self) {
        let count = self.args.each_connections;
        println!("Echo, 64-byte lines, each written on its own as replies come back, {count} connections:\n");
        println!(
            "| in flight | server | msgs/s | p50 / p99 µs | server user | server system | server CPU | loader CPU |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for &depth in &self.args.depths {
            let loader = self.loader_args(&[
                "-c",
                &count.to_string(),
                "--pipeline",
                &depth.to_string(),
                "--write-each",
            ]);
            let runs = self.interleaved(&self.args.servers, Serves::Echo, &loader);
            self.print_rows(&depth.to_string(), &self.args.servers, &runs);
        }
        println!();
    }

    fn fanout(&self) {
        println!(
            "Fan-out: one room, one sender keeping {} lines in flight, every member reading; per delivery:\n",
            self.args.in_flight
        );
        println!(
            "| members | server | deliveries/s | p50 / p99 µs | server user | server system | server CPU | loader CPU |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for &members in &self.args.members {
            let loader = self.loader_args(&[
                "--workload",
                "broadcast",
                "-c",
                &members.to_string(),
                "--active",
                "1",
                "--pipeline",
                &self.args.in_flight.to_string(),
                "--reply-timeout",
                "10s",
            ]);
            let runs = self.interleaved(&self.args.fanout_servers, Serves::Room, &loader);
            self.print_rows(&thousands(members as f64), &self.args.fanout_servers, &runs);
        }
        println!();
    }

    fn latency(&self) {
        println!("Echo latency at a fixed rate of {} msgs/s (open loop, 100 connections):\n", self.args.rate);
        println!(
            "| server | p50 µs | p90 µs | p99 µs | uncorrected p50 µs | uncorrected p99 µs | server CPU | loader CPU |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        let loader = self.loader_args(&["-c", "100", "--rate", &self.args.rate.to_string()]);
        let runs = self.interleaved(&self.args.servers, Serves::Echo, &loader);
        for (name, runs) in self.args.servers.iter().zip(&runs) {
            let run = medians(runs);
            println!(
                "| {name} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.3} | {:.3} |",
                run.p50_us,
                run.p90_us,
                run.p99_us,
                run.uncorrected_p50_us,
                run.uncorrected_p99_us,
                run.server.total_us(),
                run.loader.total_us()
            );
        }
        println!();
    }

    fn websocket(&self) {
        let servers = &self.args.ws_servers;
        println!("WebSocket echo, 64-byte text messages:\n");
        println!(
            "| connections | mode | server | msgs/s | p50 / p99 µs | server user | server system | server CPU | loader CPU |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for &pipeline in &self.args.pipelines {
            for &count in &self.args.ws_counts {
                let loader =
                    self.loader_args(&["-c", &count.to_string(), "--pipeline", &pipeline.to_string()]);
                let runs = self.interleaved(servers, Serves::WsEcho, &loader);
                let mode =
                    if pipeline == 1 { "ping-pong".to_string() } else { format!("pipeline {pipeline}") };
                self.print_rows(&format!("{} | {mode}", thousands(count as f64)), servers, &runs);
            }
        }
        println!(
            "\nWebSocket fan-out: one room, one sender keeping {} lines in flight; per delivery:\n",
            self.args.in_flight
        );
        println!(
            "| members | server | deliveries/s | p50 / p99 µs | server user | server system | server CPU | loader CPU |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for &members in &self.args.ws_members {
            let loader = self.loader_args(&[
                "--workload",
                "broadcast",
                "-c",
                &members.to_string(),
                "--active",
                "1",
                "--pipeline",
                &self.args.in_flight.to_string(),
                "--reply-timeout",
                "10s",
            ]);
            let runs = self.interleaved(servers, Serves::WsRoom, &loader);
            self.print_rows(&thousands(members as f64), servers, &runs);
        }
        println!(
            "\nWebSocket memory: 10,000 connections, each through its handshake and one echo, held idle:\n"
        );
        println!("| server | RSS before | RSS with 10,000 idle | per connection |");
        println!("|---|---|---|---|");
        for server in servers {
            let (before, held) = self.idle_memory(server, 10_000);
            println!(
                "| {server} | {:.1} MiB | {:.1} MiB | {:.0} B |",
                before as f64 / 1024.0,
                held as f64 / 1024.0,
                (held.saturating_sub(before)) as f64 * 1024.0 / 10_000.0
            );
        }
        println!();
    }

    /// A server's RSS (KiB) before and while `count` WebSocket connections are held idle.
    fn idle_memory(&self, server: &str, count: u32) -> (u64, u64) {
        let (mut child, addr) = common::start_server(self.server_command(server, Serves::WsEcho));
        let before = common::status_field(child.id(), "VmRSS:");
        let loader_program = self.args.loader.clone().unwrap_or_else(|| common::binary("evloop-load"));
        let mut loader = Command::new(loader_program)
            .args(["--target", &format!("ws://{addr}/"), "-c", &count.to_string(), "-n", &count.to_string()])
            .args(["--hold", "8s", "--connect-timeout", "60s", "--json", "--no-progress"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("run evloop-load");
        // Held from when every reply is in until the loader exits: look in the middle.
        std::thread::sleep(Duration::from_secs(2));
        let mut held = 0;
        for _ in 0..40 {
            held = held.max(common::status_field(child.id(), "VmRSS:"));
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = loader.wait();
        common::stop(&mut child);
        (before, held)
    }

    /// The loader's arguments: `specific`, then the run's length.
    fn loader_args(&self, specific: &[&str]) -> Vec<String> {
        let length = ["-d".to_string(), format!("{}s", self.args.seconds), "--warmup".into(), "1s".into()];
        specific.iter().map(|arg| arg.to_string()).chain(length).collect()
    }

    /// One row per server: the medians of its runs, then each run's throughput on stderr.
    fn print_rows(&self, cell: &str, servers: &[String], runs: &[Vec<Run>]) {
        for (name, runs) in servers.iter().zip(runs) {
            let run = medians(runs);
            println!(
                "| {cell} | {name} | {} | {:.0} / {:.0} | {:.3} | {:.3} | {:.3} | {:.3} ({:.3} user) |",
                thousands(run.msgs_per_s),
                run.p50_us,
                run.p99_us,
                run.server.user_us,
                run.server.system_us,
                run.server.total_us(),
                run.loader.total_us(),
                run.loader.user_us
            );
            let each: Vec<String> = runs.iter().map(|run| thousands(run.msgs_per_s)).collect();
            eprintln!("bench: {cell} | {name}: runs {}", each.join(", "));
        }
    }

    /// `rounds` runs of the loader with `loader_args` against each server, interleaved:
    /// A B C, then C B A, and so on. Runs by server.
    fn interleaved(&self, servers: &[String], serves: Serves, loader_args: &[String]) -> Vec<Vec<Run>> {
        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); servers.len()];
        for round in 0..self.args.rounds {
            let mut order: Vec<usize> = (0..servers.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for index in order {
                runs[index].push(self.measure(&servers[index], serves, loader_args));
            }
        }
        runs
    }

    /// The command that starts `server` serving `serves`.
    fn server_command(&self, server: &str, serves: Serves) -> Command {
        let cpu = |cpu: u32| self.pinned.then_some(cpu);
        let baseline = |name: &str| {
            let mut command = common::on_cpu(cpu(0), &common::binary(name));
            command.arg("127.0.0.1:0");
            command
        };
        match (server, serves) {
            ("tokio", Serves::Echo) => baseline("examples/tokio_echo"),
            ("c", Serves::Echo) => baseline("epoll_echo"),
            ("mio", Serves::Room) => baseline("examples/mio_fanout"),
            ("node", Serves::WsEcho | Serves::WsRoom) => {
                let mut command = common::on_cpu(cpu(0), "node");
                let mode = if serves == Serves::WsEcho { "echo" } else { "broadcast" };
                command.args(["examples/baselines/ws_server.js", mode, "127.0.0.1:0"]);
                command
            }
            (evloop, _) => {
                let program = match evloop {
                    "evloop" => common::binary("evloop-server"),
                    other => other
                        .strip_prefix("bin:")
                        .unwrap_or_else(|| panic!("no server {other} for this workload"))
                        .to_string(),
                };
                let listen = match serves {
                    Serves::Echo => "echo=127.0.0.1:0",
                    Serves::Room => "broadcast=127.0.0.1:0",
                    Serves::WsEcho => "echo:ws=127.0.0.1:0",
                    Serves::WsRoom => "broadcast:ws=127.0.0.1:0",
                };
                let mut command = common::on_cpu(cpu(0), &program);
                command.args(["--listen", listen]).args(self.args.evloop_args.split_whitespace());
                command
            }
        }
    }

    /// Starts `server`, runs the loader against it, stops the server.
    fn measure(&self, server: &str, serves: Serves, loader_args: &[String]) -> Run {
        let cpu = |cpu: u32| self.pinned.then_some(cpu);
        let command = self.server_command(server, serves);
        let (mut child, addr) = common::start_server(command);
        let (server_before, loader_before) = (common::cpu_time(child.id()), common::children_cpu_time());
        let loader_program = self.args.loader.clone().unwrap_or_else(|| common::binary("evloop-load"));
        let target = if serves.websocket() { format!("ws://{addr}/") } else { addr };
        let output = common::on_cpu(cpu(1), &loader_program)
            .args(["--target", &target, "--json", "--no-progress"])
            .args(loader_args)
            .output()
            .expect("run evloop-load");
        let loader = common::children_cpu_time().since(loader_before);
        let server_cpu = common::cpu_time(child.id()).since(server_before);
        common::stop(&mut child);
        std::thread::sleep(Duration::from_millis(200)); // let the sockets' TIME_WAIT churn settle
        let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
            panic!("no report from the loader: {}", String::from_utf8_lossy(&output.stderr))
        });
        assert_eq!(report["ok"], true, "a run against {server} failed verification: {report}");
        let latency = |key: &str, field: &str| report[key][field].as_f64().unwrap_or(0.0);
        // Every verified reply or delivery, warmup included, like the CPU time.
        let verified = report["messages"]["verified"].as_f64().unwrap_or(1.0).max(1.0);
        let per_message =
            |cpu: CpuTime| CpuTime { user_us: cpu.user_us / verified, system_us: cpu.system_us / verified };
        Run {
            msgs_per_s: report["throughput"]["msgs_per_s"].as_f64().unwrap_or(0.0),
            p50_us: latency("latency_us", "p50"),
            p90_us: latency("latency_us", "p90"),
            p99_us: latency("latency_us", "p99"),
            uncorrected_p50_us: latency("latency_uncorrected_us", "p50"),
            uncorrected_p99_us: latency("latency_uncorrected_us", "p99"),
            server: per_message(server_cpu),
            loader: per_message(loader),
        }
    }
}

/// Builds the C baseline next to the release binaries.
fn build_c_baseline() {
    let status = Command::new("cc")
        .args(["-O2", "-o", &common::binary("epoll_echo"), "examples/baselines/epoll_echo.c"])
        .status()
        .expect("run cc (the C baseline needs a C compiler)");
    assert!(status.success(), "building examples/baselines/epoll_echo.c failed");
}

/// Each figure's median over the runs (not one run's figures: CPU and throughput need not
/// peak together).
fn medians(runs: &[Run]) -> Run {
    let median = |figure: fn(&Run) -> f64| {
        let mut values: Vec<f64> = runs.iter().map(figure).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    Run {
        msgs_per_s: median(|run| run.msgs_per_s),
        p50_us: median(|run| run.p50_us),
        p90_us: median(|run| run.p90_us),
        p99_us: median(|run| run.p99_us),
        uncorrected_p50_us: median(|run| run.uncorrected_p50_us),
        uncorrected_p99_us: median(|run| run.uncorrected_p99_us),
        server: CpuTime {
            user_us: median(|run| run.server.user_us),
            system_us: median(|run| run.server.system_us),
        },
        loader: CpuTime {
            user_us: median(|run| run.loader.user_us),
            system_us: median(|run| run.loader.system_us),
        },
    }
}

/// `1234567.8` as `1,234,568`.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value);
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}
