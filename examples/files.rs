//! The file-transfer benchmark behind docs/benchmarks.md ("File transfer"): one large file
//! over loopback, against iperf3's single-stream throughput on the same machine as the
//! ceiling; then many clients fetching small files, files per second. Every byte evloop
//! sends is checked by evloop-load (CRC-32 against the file).
//!
//! Run:  cargo run --release --example files
//!       (needs iperf3: apt-get install iperf3)

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use clap::Parser;
use serde_json::Value;

mod common;

/// See the module documentation.
#[derive(Parser, Debug)]
struct Args {
    /// Measured seconds per run
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// The large file's size, MiB
    #[arg(long, default_value_t = 256)]
    large_mib: usize,
    /// Small files: how many, and how big (bytes)
    #[arg(long, default_value_t = 1000)]
    small_count: usize,
    #[arg(long, default_value_t = 4096)]
    small_bytes: usize,
    /// Clients fetching small files
    #[arg(long, default_value_t = 100)]
    clients: u32,
}

fn main() {
    let args = Args::parse();
    common::build(&["--bin", "evloop-server", "--bin", "evloop-load"]);
    let root = std::env::temp_dir().join(format!("evloop-files-bench-{}", std::process::id()));
    let (large, small) = (root.join("large"), root.join("small"));
    std::fs::create_dir_all(&large).unwrap();
    std::fs::create_dir_all(&small).unwrap();
    std::fs::write(large.join("large.bin"), noise(args.large_mib << 20, 1)).unwrap();
    for index in 0..args.small_count {
        std::fs::write(small.join(format!("{index:05}.bin")), noise(args.small_bytes, index as u64 + 2))
            .unwrap();
    }

    let iperf = iperf3_gbit_per_s(args.seconds);
    let one = load(&large, 1, args.seconds);
    let mib = |report: &Value| report["throughput"]["mib_per_s"].as_f64().unwrap_or(0.0);
    println!("| run | throughput | verified |");
    println!("|---|---|---|");
    println!("| iperf3, one TCP stream ({} s) | {iperf:.1} Gbit/s | – |", args.seconds);
    println!(
        "| evloop, one client, {} MiB file over and over | {:.1} Gbit/s ({:.0} MiB/s) | {} |",
        args.large_mib,
        mib(&one) * 8.0 * 1.048_576 / 1000.0,
        mib(&one),
        one["ok"]
    );
    let many = load(&small, args.clients, args.seconds);
    println!(
        "| evloop, {} clients, {} files of {} B | {:.0} files/s ({:.0} MiB/s) | {} |",
        args.clients,
        args.small_count,
        args.small_bytes,
        many["throughput"]["msgs_per_s"].as_f64().unwrap_or(0.0),
        mib(&many),
        many["ok"]
    );
    std::fs::remove_dir_all(root).unwrap();
}

/// Bytes that do not compress or repeat.
fn noise(size: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// iperf3's received throughput for one TCP stream on loopback.
fn iperf3_gbit_per_s(seconds: u32) -> f64 {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let mut server = Command::new("iperf3")
        .args(["-s", "-1", "-B", "127.0.0.1", "-p", &port])
        .stdout(Stdio::null())
        .spawn()
        .expect("iperf3 (apt-get install iperf3)");
    std::thread::sleep(Duration::from_millis(300));
    let output = Command::new("iperf3")
        .args(["-c", "127.0.0.1", "-p", &port, "-t", &seconds.to_string(), "--json"])
        .output()
        .expect("run iperf3");
    let _ = server.wait();
    let report: Value = serde_json::from_slice(&output.stdout).expect("iperf3's JSON");
    report["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9
}

/// evloop-server serving `dir`, evloop-load downloading from it: the loader's report.
fn load(dir: &Path, clients: u32, seconds: u32) -> Value {
    let files: PathBuf = dir.to_path_buf();
    let mut server = Command::new(common::binary("evloop-server"));
    server.args(["--listen", "file=127.0.0.1:0", "--files", files.to_str().unwrap()]);
    let (mut server, addr) = common::start_server(server);
    let output = Command::new(common::binary("evloop-load"))
        .args([
            "--workload",
            "file",
            "--files",
            files.to_str().unwrap(),
            "--target",
            &addr,
            "--json",
            "--no-progress",
        ])
        .args(["-c", &clients.to_string(), "-d", &format!("{seconds}s"), "--warmup", "1s"])
        .output()
        .expect("run evloop-load");
    common::stop(&mut server);
    serde_json::from_slice(&output.stdout).expect("the loader's report")
}
