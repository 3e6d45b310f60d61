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
//! - **tls**: evloop's own TLS (`tls://`) against HAProxy terminating TLS in front of evloop
//!   on plaintext (`haproxy`, sending a PROXY v2 header so room lines name the client: both
//!   processes on the server's cpu, their CPU added up), with
//!   a certificate made here (`openssl`, ECDSA P-256) and the loader's `--tls --insecure`:
//!   full handshakes (a connect storm of `--tls-handshakes` connections, one echo each: CPU
//!   per handshake, and the rate the loader saw), echo ping-pong and pipelined at
//!   `--tls-counts` and written a line at a time at `--depths`, fan-out per delivery at
//!   `--tls-members`, and memory per idle TLS
//!   connection (`--tls-idle` held idle; HAProxy needs two descriptors for each).
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
    /// What to measure: echo, each, fanout, latency, ws, tls
    #[arg(long, value_delimiter = ',', default_value = "echo,each,fanout,latency,ws,tls")]
    workloads: Vec<String>,
    /// tls: servers, evloop (its own TLS) and haproxy (terminating, evloop behind it)
    #[arg(long, value_delimiter = ',', default_value = "evloop,haproxy")]
    tls_servers: Vec<String>,
    /// tls: connection counts for echo
    #[arg(long, value_delimiter = ',', default_value = "100")]
    tls_counts: Vec<u32>,
    /// tls: room sizes
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    tls_members: Vec<u32>,
    /// tls: connections of the handshake storm
    #[arg(long, default_value_t = 5000)]
    tls_handshakes: u32,
    /// tls: connections held idle for the memory figure
    #[arg(long, default_value_t = 5000)]
    tls_idle: u32,
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
    /// Echo over TLS.
    TlsEcho,
    /// A room over TLS.
    TlsRoom,
}

impl Serves {
    fn websocket(self) -> bool {
        matches!(self, Serves::WsEcho | Serves::WsRoom)
    }

    fn tls(self) -> bool {
        matches!(self, Serves::TlsEcho | Serves::TlsRoom)
    }

    /// The same without TLS: what evloop serves behind a balancer that terminates it.
    fn plain(self) -> Serves {
        match self {
            Serves::TlsEcho => Serves::Echo,
            Serves::TlsRoom => Serves::Room,
            other => other,
        }
    }
}

/// A server under test: one process, or a balancer and the server behind it (stopped
/// together, their CPU time and memory added up).
struct Started {
    processes: Vec<std::process::Child>,
    /// Where the loader connects.
    addr: String,
    /// Files to remove once stopped (a balancer's configuration).
    files: Vec<std::path::PathBuf>,
}

impl Started {
    fn cpu_time(&self) -> CpuTime {
        self.processes.iter().map(|child| common::cpu_time(child.id())).fold(
            CpuTime::default(),
            |sum, cpu| CpuTime {
                user_us: sum.user_us + cpu.user_us,
                system_us: sum.system_us + cpu.system_us,
            },
        )
    }

    /// Resident memory, KiB.
    fn rss(&self) -> u64 {
        self.processes.iter().map(|child| common::status_field(child.id(), "VmRSS:")).sum()
    }

    fn stop(mut self) {
        for child in self.processes.iter_mut().rev() {
            common::stop(child);
        }
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
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
    let bench = Bench { args: &args, pinned, tls_files: std::sync::OnceLock::new() };
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
    if args.workloads.iter().any(|w| w == "tls") {
        bench.tls();
    }
}

struct Bench<'a> {
    args: &'a Args,
    pinned: bool,
    /// The tls workload's certificate and key (made once, on first use).
    tls_files: std::sync::OnceLock<TlsFiles>,
}

impl Bench<'_> {
    fn echo(&self) {
        println!("Echo, 64-byte lines:\n");
        self.echo_table(&self.args.servers, Serves::Echo, &self.args.counts);
        println!();
    }

    /// Echo rows, ping-pong and pipelined (`--pipelines`), at each of `counts` connections.
    fn echo_table(&self, servers: &[String], serves: Serves, counts: &[u32]) {
        println!(
            "| connections | mode | server | msgs/s | p50 / p99 µs | server user | server system | server CPU | loader CPU |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for &pipeline in &self.args.pipelines {
            for &count in counts {
                let loader =
                    self.loader_args(&["-c", &count.to_string(), "--pipeline", &pipeline.to_string()]);
                let runs = self.interleaved(servers, serves, &loader);
                let mode =
                    if pipeline == 1 { "ping-pong".to_string() } else { format!("pipeline {pipeline}") };
                self.print_rows(&format!("{} | {mode}", thousands(count as f64)), servers, &runs);
            }
        }
    }

    /// Fan-out rows per delivery: one room of each of `members`, one sender keeping
    /// `--in-flight` lines in flight.
    fn fanout_table(&self, servers: &[String], serves: Serves, members: &[u32]) {
        println!(
            "| members | server | deliveries/s | p50 / p99 µs | server user | server system | server CPU | loader CPU |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for &count in members {
            let loader = self.loader_args(&[
                "--workload",
                "broadcast",
                "-c",
                &count.to_string(),
                "--active",
                "1",
                "--pipeline",
                &self.args.in_flight.to_string(),
                "--reply-timeout",
                "10s",
            ]);
            let runs = self.interleaved(servers, serves, &loader);
            self.print_rows(&thousands(count as f64), servers, &runs);
        }
    }

    /// Memory rows: each server's RSS with `count` connections held idle.
    fn memory_table(&self, servers: &[String], serves: Serves, count: u32) {
        println!("| server | RSS before | RSS with {} idle | per connection |", thousands(f64::from(count)));
        println!("|---|---|---|---|");
        for server in servers {
            let (before, held) = self.idle_memory(server, serves, count);
            println!(
                "| {server} | {:.1} MiB | {:.1} MiB | {:.0} B |",
                before as f64 / 1024.0,
                held as f64 / 1024.0,
                (held.saturating_sub(before)) as f64 * 1024.0 / f64::from(count)
            );
        }
    }

    fn each(&self) {
        let count = self.args.each_connections;
        println!("Echo, 64-byte lines, each written on its own as replies come back, {count} connections:\n");
        self.each_table(&self.args.servers, Serves::Echo);
        println!();
    }

    /// Rows of echo with each line written on its own (`--write-each`), at each of
    /// `--depths` lines in flight over `--each-connections`.
    fn each_table(&self, servers: &[String], serves: Serves) {
        let count = self.args.each_connections.to_string();
        println!(
            "| in flight | server | msgs/s | p50 / p99 µs | server user | server system | server CPU | loader CPU |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for &depth in &self.args.depths {
            let loader = self.loader_args(&["-c", &count, "--pipeline", &depth.to_string(), "--write-each"]);
            let runs = self.interleaved(servers, serves, &loader);
            self.print_rows(&depth.to_string(), servers, &runs);
        }
    }

    fn fanout(&self) {
        println!(
            "Fan-out: one room, one sender keeping {} lines in flight, every member reading; per delivery:\n",
            self.args.in_flight
        );
        self.fanout_table(&self.args.fanout_servers, Serves::Room, &self.args.members);
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
        self.echo_table(servers, Serves::WsEcho, &self.args.ws_counts);
        println!(
            "\nWebSocket fan-out: one room, one sender keeping {} lines in flight; per delivery:\n",
            self.args.in_flight
        );
        self.fanout_table(servers, Serves::WsRoom, &self.args.ws_members);
        println!(
            "\nWebSocket memory: 10,000 connections, each through its handshake and one echo, held idle:\n"
        );
        self.memory_table(servers, Serves::WsEcho, 10_000);
        println!();
    }

    /// A server's RSS (KiB) before and while `count` connections (each through its
    /// handshakes and one echo) are held idle.
    fn idle_memory(&self, server: &str, serves: Serves, count: u32) -> (u64, u64) {
        let started = self.start(server, serves);
        let before = started.rss();
        let loader_program = self.args.loader.clone().unwrap_or_else(|| common::binary("evloop-load"));
        let mut loader = Command::new(loader_program)
            .args(["--target", &self.target(&started.addr, serves)])
            .args(self.loader_tls(serves))
            .args(["-c", &count.to_string(), "-n", &count.to_string()])
            .args(["--hold", "8s", "--connect-timeout", "60s", "--json", "--no-progress"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("run evloop-load");
        // Held from when every reply is in until the loader exits: look in the middle.
        std::thread::sleep(Duration::from_secs(2));
        let mut held = 0;
        for _ in 0..40 {
            held = held.max(started.rss());
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = loader.wait();
        started.stop();
        (before, held)
    }

    /// Where the loader connects for `serves` at `addr`.
    fn target(&self, addr: &str, serves: Serves) -> String {
        if serves.websocket() { format!("ws://{addr}/") } else { addr.to_string() }
    }

    /// The loader's TLS flags for `serves` (the bench's own certificate: not checked).
    fn loader_tls(&self, serves: Serves) -> Vec<&'static str> {
        if serves.tls() { vec!["--tls", "--insecure"] } else { Vec::new() }
    }

    /// The tls workload: evloop's own TLS against HAProxy terminating it.
    fn tls(&self) {
        let servers = &self.args.tls_servers;
        println!(
            "TLS (ECDSA P-256, TLS 1.3): evloop's own against HAProxy terminating in front of evloop \
             (both on the server's cpu, CPU added up).\n"
        );
        let count = self.args.tls_handshakes;
        println!("Full handshakes: {count} connections at once, one echo each; CPU per connection:\n");
        println!(
            "| server | handshakes/s (loader-bound) | handshake p50 / p99 µs | server user | server system | server CPU | handshakes/s per server core |"
        );
        println!("|---|---|---|---|---|---|---|");
        let loader = vec![
            "-c".to_string(),
            count.to_string(),
            "-n".to_string(),
            count.to_string(),
            "--connect-timeout".to_string(),
            "60s".to_string(),
        ];
        let runs = self.interleaved_reports(servers, Serves::TlsEcho, &loader);
        for (name, runs) in servers.iter().zip(&runs) {
            let pick = |figure: &dyn Fn(&(Value, CpuTime)) -> f64| {
                let mut values: Vec<f64> = runs.iter().map(figure).collect();
                values.sort_by(f64::total_cmp);
                values[values.len() / 2]
            };
            let tls = |run: &(Value, CpuTime), field: &str, inner: Option<&str>| {
                let value = &run.0["connections"]["tls"][field];
                inner.map_or(value, |inner| &value[inner]).as_f64().unwrap_or(0.0)
            };
            let user = pick(&|run| run.1.user_us / f64::from(count));
            let system = pick(&|run| run.1.system_us / f64::from(count));
            println!(
                "| {name} | {} | {:.0} / {:.0} | {user:.1} | {system:.1} | {:.1} | {} |",
                thousands(pick(&|run| tls(run, "per_s", None))),
                pick(&|run| tls(run, "latency_us", Some("p50"))),
                pick(&|run| tls(run, "latency_us", Some("p99"))),
                user + system,
                thousands(1e6 / (user + system)),
            );
        }
        println!("\nTLS echo, 64-byte lines over established sessions:\n");
        self.echo_table(servers, Serves::TlsEcho, &self.args.tls_counts);
        println!(
            "\nTLS echo, each line written on its own as replies come back, {} connections:\n",
            self.args.each_connections
        );
        self.each_table(servers, Serves::TlsEcho);
        println!(
            "\nTLS fan-out: one room, one sender keeping {} lines in flight; per delivery:\n",
            self.args.in_flight
        );
        self.fanout_table(servers, Serves::TlsRoom, &self.args.tls_members);
        let idle = self.args.tls_idle;
        println!("\nTLS memory: {idle} connections, each through its handshake and one echo, held idle:\n");
        self.memory_table(servers, Serves::TlsEcho, idle);
        println!();
    }

    /// The certificate and key of the tls workload, made on first use.
    fn tls_files(&self) -> &TlsFiles {
        self.tls_files.get_or_init(TlsFiles::make)
    }

    /// HAProxy terminating TLS in TCP mode on one thread, pinned to the server's cpu, in
    /// front of `backend`; ready once it accepts.
    fn start_haproxy(&self, backend: &str) -> (std::process::Child, String, std::path::PathBuf) {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = std::env::temp_dir().join(format!("evloop-bench-haproxy-{}.cfg", std::process::id()));
        // Two descriptors per connection: maxconn stays under half the file limit.
        std::fs::write(
            &config,
            format!(
                "global\n    nbthread 1\n    maxconn 9000\n\
                 defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n\
                 frontend front\n    bind 127.0.0.1:{port} ssl crt {}\n    default_backend back\n\
                 backend back\n    server evloop {backend} send-proxy-v2\n",
                self.tls_files().combined.display()
            ),
        )
        .unwrap();
        let child = common::on_cpu(self.pinned.then_some(0), "haproxy")
            .args(["-db", "-f", config.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start haproxy (scripts/test installs it)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "haproxy did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        (child, format!("127.0.0.1:{port}"), config)
    }

    /// Starts `server` serving `serves` (`haproxy`: evloop on plaintext behind it).
    fn start(&self, server: &str, serves: Serves) -> Started {
        if server == "haproxy" {
            // As deployed: the balancer names each client in a PROXY v2 header, so room lines
            // carry the client's address (the loader checks them), not the balancer's.
            let mut behind = self.server_command("evloop", serves.plain());
            behind.arg("--proxy-protocol");
            let (evloop, backend) = common::start_server(behind);
            let (haproxy, addr, config) = self.start_haproxy(&backend);
            return Started { processes: vec![evloop, haproxy], addr, files: vec![config] };
        }
        let (child, addr) = common::start_server(self.server_command(server, serves));
        Started { processes: vec![child], addr, files: Vec::new() }
    }

    /// Like `interleaved`, but each run's whole loader report and the server's CPU time.
    fn interleaved_reports(
        &self,
        servers: &[String],
        serves: Serves,
        loader_args: &[String],
    ) -> Vec<Vec<(Value, CpuTime)>> {
        let mut runs: Vec<Vec<(Value, CpuTime)>> = vec![Vec::new(); servers.len()];
        for round in 0..self.args.rounds {
            let mut order: Vec<usize> = (0..servers.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for index in order {
                let (report, server, _) = self.run_loader(&servers[index], serves, loader_args);
                runs[index].push((report, server));
            }
        }
        runs
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
                    Serves::TlsEcho => "echo=tls://127.0.0.1:0",
                    Serves::TlsRoom => "broadcast=tls://127.0.0.1:0",
                };
                let mut command = common::on_cpu(cpu(0), &program);
                command.args(["--listen", listen]).args(self.args.evloop_args.split_whitespace());
                if serves.tls() {
                    let files = self.tls_files();
                    command.arg("--tls-cert").arg(&files.cert).arg("--tls-key").arg(&files.key);
                }
                command
            }
        }
    }

    /// Starts `server`, runs the loader against it, stops the server; the loader's report,
    /// and the CPU time of the server and of the loader over the run.
    fn run_loader(&self, server: &str, serves: Serves, loader_args: &[String]) -> (Value, CpuTime, CpuTime) {
        let started = self.start(server, serves);
        let (server_before, loader_before) = (started.cpu_time(), common::children_cpu_time());
        let loader_program = self.args.loader.clone().unwrap_or_else(|| common::binary("evloop-load"));
        let output = common::on_cpu(self.pinned.then_some(1), &loader_program)
            .args(["--target", &self.target(&started.addr, serves), "--json", "--no-progress"])
            .args(self.loader_tls(serves))
            .args(loader_args)
            .output()
            .expect("run evloop-load");
        let loader = common::children_cpu_time().since(loader_before);
        let server_cpu = started.cpu_time().since(server_before);
        started.stop();
        std::thread::sleep(Duration::from_millis(200)); // let the sockets' TIME_WAIT churn settle
        let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
            panic!("no report from the loader: {}", String::from_utf8_lossy(&output.stderr))
        });
        assert_eq!(report["ok"], true, "a run against {server} failed verification: {report}");
        (report, server_cpu, loader)
    }

    /// Starts `server`, runs the loader against it, stops the server.
    fn measure(&self, server: &str, serves: Serves, loader_args: &[String]) -> Run {
        let (report, server_cpu, loader) = self.run_loader(server, serves, loader_args);
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

/// The tls workload's certificate and key (ECDSA P-256, by `openssl`), and both in one file
/// for HAProxy's `crt`; under target/, made once per run.
struct TlsFiles {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    combined: std::path::PathBuf,
}

impl TlsFiles {
    fn make() -> TlsFiles {
        let dir = std::path::PathBuf::from(common::binary("bench-tls"));
        std::fs::create_dir_all(&dir).unwrap();
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            combined: dir.join("combined.pem"),
        };
        let status = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"])
            .args([
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
            ])
            .arg("-keyout")
            .arg(&files.key)
            .arg("-out")
            .arg(&files.cert)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run openssl");
        assert!(status.success(), "openssl req failed");
        let combined =
            std::fs::read_to_string(&files.cert).unwrap() + &std::fs::read_to_string(&files.key).unwrap();
        std::fs::write(&files.combined, combined).unwrap();
        files
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
