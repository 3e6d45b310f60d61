//! The fan-out benchmark behind docs/benchmarks.md ("Rooms over a backplane"): one room,
//! served by one reactor alone, then by 2 and 4 workers sharing it over Redis and over NATS,
//! at the same offered load, with every delivery verified by evloop-load. It reports
//! deliveries per second and the CPU time (user + system, from /proc) that the server
//! processes and the engine spent per delivery.
//!
//! Run:  cargo run --release --example fanout
//!       cargo run --release --example fanout -- --members 100 --seconds 3    (a taste)
//!
//! Needs `redis-server` and `nats-server` on PATH (scripts/test installs them).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clap::Parser;
use serde_json::Value;

mod common;

/// See the module documentation.
#[derive(Parser, Debug)]
struct Args {
    /// Room sizes (members, all of them loader connections)
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    members: Vec<u32>,
    /// Setups: single, or ENGINE:WORKERS with ENGINE redis or nats
    #[arg(long, value_delimiter = ',', default_value = "single,redis:2,redis:4,nats:2,nats:4")]
    setups: Vec<String>,
    /// Offered deliveries per second (the loader's line rate is this over members - 1)
    #[arg(long, default_value_t = 200_000)]
    deliveries: u32,
    /// Measured seconds per run
    #[arg(long, default_value_t = 5)]
    seconds: u32,
}

/// A pub/sub engine started for one run; killed on drop.
struct Engine {
    child: Child,
    url: String,
}

impl Engine {
    fn start(kind: &str) -> Engine {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
        let mut command = match kind {
            "redis" => {
                let mut command = Command::new("redis-server");
                command.args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
                command
            }
            "nats" => {
                let mut command = Command::new("nats-server");
                command.args(["-a", "127.0.0.1", "-p", &port]);
                command
            }
            other => panic!("unknown engine {other}"),
        };
        let child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start the engine");
        // Ready when it accepts connections.
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Engine { child, url: format!("{kind}://127.0.0.1:{port}") }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one run measured.
struct Run {
    deliveries_per_s: f64,
    server_us_per_delivery: f64,
    engine_us_per_delivery: f64,
    loader_us_per_delivery: f64,
    ok: bool,
}

fn main() {
    let args = Args::parse();
    common::build(&["--bin", "evloop-server", "--bin", "evloop-load"]);
    println!(
        "Offered {} deliveries/s, {} s per run; CPU is user + system of all server processes (parent and workers), of the engine, and of the loader, per verified delivery.\n",
        args.deliveries, args.seconds
    );
    println!(
        "| members | setup | deliveries/s | server µs/delivery | engine µs/delivery | loader µs/delivery | all verified |"
    );
    println!("|---|---|---|---|---|---|---|");
    for &members in &args.members {
        for setup in &args.setups {
            let run = measure(setup, members, &args);
            println!(
                "| {members} | {setup} | {:.0} | {:.3} | {:.3} | {:.3} | {} |",
                run.deliveries_per_s,
                run.server_us_per_delivery,
                run.engine_us_per_delivery,
                run.loader_us_per_delivery,
                if run.ok { "yes" } else { "NO" }
            );
        }
    }
}

fn measure(setup: &str, members: u32, args: &Args) -> Run {
    let (engine, workers) = match setup.split_once(':') {
        Some((engine, workers)) => (Some(Engine::start(engine)), workers.to_string()),
        None => (None, "1".to_string()),
    };
    let mut server = Command::new(common::binary("evloop-server"));
    server.args(["--listen", "broadcast=127.0.0.1:0", "--workers", &workers, "--max-output", "64M"]);
    if let Some(engine) = &engine {
        server.args(["--backplane", &engine.url]);
    }
    let (mut server, addr) = common::start_server(server);
    let server_pids = || {
        let mut pids = vec![server.id()];
        pids.extend(common::children(server.id()));
        pids
    };
    let server_ticks = |pids: &[u32]| pids.iter().map(|&pid| common::cpu_ticks(pid)).sum::<u64>();
    let engine_ticks = || engine.as_ref().map_or(0, |engine| common::cpu_ticks(engine.child.id()));
    let pids = server_pids();
    let (server_before, engine_before, loader_before) =
        (server_ticks(&pids), engine_ticks(), common::children_cpu_us());
    let rate = f64::from(args.deliveries) / f64::from(members - 1);
    let output = Command::new(common::binary("evloop-load"))
        .args(["--workload", "broadcast", "--target", &addr, "--json", "--no-progress"])
        .args([
            "-c",
            &members.to_string(),
            "--rate",
            &format!("{rate:.3}"),
            "-d",
            &format!("{}s", args.seconds),
        ])
        .args(["--reply-timeout", "10s"])
        .output()
        .expect("run evloop-load");
    let (server_after, engine_after) = (server_ticks(&pids), engine_ticks());
    let loader_us = common::children_cpu_us() - loader_before;
    common::stop(&mut server);
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("no report from the loader: {}", String::from_utf8_lossy(&output.stderr)));
    let seen = report["broadcast"]["deliveries_seen"].as_f64().unwrap_or(0.0).max(1.0);
    let ticks_us = |ticks: u64| ticks as f64 * 10_000.0;
    Run {
        deliveries_per_s: seen / report["duration_s"].as_f64().unwrap_or(1.0),
        server_us_per_delivery: ticks_us(server_after - server_before) / seen,
        engine_us_per_delivery: ticks_us(engine_after - engine_before) / seen,
        loader_us_per_delivery: loader_us as f64 / seen,
        ok: report["ok"] == true,
    }
}
