//! A soak: the server under every kind of load at once for a long while, checked for what
//! a short test cannot see: a slow leak of memory or descriptors, a line lost or reordered
//! after an hour of churn, counters that drift from what clients really did.
//!
//! `--workers 2` with a Redis backplane (started here on a private port) and a metrics
//! listener, and at once, for `--minutes`:
//! - pipelined echo (`evloop-load`, closed loop, 16 in flight),
//! - a busy room over both workers (`evloop-load --workload broadcast`: every member checks
//!   every line, in order),
//! - file downloads (`evloop-load --workload file`: every byte checked),
//! - connection churn (this driver: connect, one line, check the reply, close, again),
//! - slow readers in the room (tiny receive buffers, never read: the server must cut them),
//! - clients killed mid-line (half a line, then a reset).
//!
//! Every minute it samples the server's RSS and open descriptors (supervisor and workers);
//! at the end it compares the metrics' totals per listener with what the clients counted,
//! and writes the samples to a CSV and a chart.
//!
//! Run:  scripts/soak 30        (that is: cargo run --release --example soak -- --minutes 30)
//!
//! Needs `redis-server` on PATH (scripts/test installs it).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use evloop::load::chart::{Panel, Series, write_svg};
use serde_json::Value;

mod common;

/// See the module documentation.
#[derive(Parser, Debug)]
struct Args {
    /// How long to soak, in minutes
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,
    /// Seconds between samples of memory and descriptors
    #[arg(long, default_value_t = 60)]
    sample_secs: u64,
    /// Samples of the warmup, left out of the flatness check (the buffer pool and the
    /// kernel's socket buffers fill for the first 3-4 minutes of this load)
    #[arg(long, default_value_t = 4)]
    warmup_samples: usize,
    /// Where the samples go (CSV)
    #[arg(long, default_value = "docs/data/soak.csv")]
    csv: PathBuf,
    /// Where the chart goes (SVG)
    #[arg(long, default_value = "docs/charts/soak.svg")]
    chart: PathBuf,
}

/// What the driver's own clients did, counted as they went.
#[derive(Default)]
struct Counts {
    churn_connections: AtomicU64,
    churn_verified: AtomicU64,
    churn_failures: AtomicU64,
    killed: AtomicU64,
    slow_readers: AtomicU64,
    /// Scrapes of the metrics listener by the slow readers' thread (each is a message).
    scrapes: AtomicU64,
}

fn main() {
    let args = Args::parse();
    common::build(&["--bin", "evloop-server", "--bin", "evloop-load"]);
    let seconds = (args.minutes * 60.0).round() as u64;
    let files = make_files();
    let (mut redis, redis_port) = start_redis();

    let mut server = Command::new(common::binary("evloop-server"));
    server.args(["--workers", "2", "--backplane", &format!("redis://127.0.0.1:{redis_port}")]);
    server.args(["--files", files.to_str().unwrap(), "--max-output", "64K"]);
    for listen in ["echo", "echo", "echo", "broadcast", "file", "metrics"] {
        server.args(["--listen", &format!("{listen}=127.0.0.1:0")]);
    }
    let mut server = server.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("start the server");
    let mut startup = BufReader::new(server.stdout.take().unwrap());
    let addrs: Vec<String> = (0..6)
        .map(|_| {
            let mut line = String::new();
            startup.read_line(&mut line).expect("a startup line");
            line.split(' ').nth(3).unwrap().to_string() // `<handler> listening on <addr> (<codec>)`
        })
        .collect();
    let [echo, churn, killed, room, file, metrics] = <[String; 6]>::try_from(addrs).unwrap();
    println!(
        "Soak: {} min, --workers 2 over Redis; echo {echo}, churn {churn}, killed {killed}, room {room}, files {file}, metrics {metrics}\n",
        args.minutes
    );

    let duration = format!("{seconds}s");
    let loaders = [
        ("echo", vec!["--target", &echo, "-c", "20", "--pipeline", "16", "--size", "64"]),
        ("room", vec!["--target", &room, "--workload", "broadcast", "-c", "40", "--rate", "500"]),
        (
            "files",
            vec![
                "--target",
                &file,
                "--workload",
                "file",
                "--files",
                files.to_str().unwrap(),
                "-c",
                "4",
                "--rate",
                "50",
            ],
        ),
    ];
    let loaders: Vec<(&str, Child)> = loaders
        .into_iter()
        .map(|(name, loader_args)| {
            let child = Command::new(common::binary("evloop-load"))
                .args(&loader_args)
                .args(["-d", &duration, "--json", "--no-progress", "--reply-timeout", "30s"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("start evloop-load");
            (name, child)
        })
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    let clients = [
        spawn_churn(churn.parse().unwrap(), &stop, &counts),
        spawn_killed(killed.parse().unwrap(), &stop, &counts),
        spawn_slow_readers(room.parse().unwrap(), metrics.clone(), &stop, &counts),
    ];

    // Samples every --sample-secs until the loaders' time is up.
    let started = Instant::now();
    let mut samples: Vec<(f64, u64, u64, u64)> = Vec::new();
    println!("| minute | server RSS MiB | open descriptors | connections open |");
    println!("|---|---|---|---|");
    loop {
        let (rss, fds) = rss_and_fds(server.id());
        let open = scrape(&metrics)
            .iter()
            .filter(|(name, _)| name == "evloop_connections_open")
            .map(|(_, v)| *v)
            .sum();
        let minute = started.elapsed().as_secs_f64() / 60.0;
        println!("| {minute:.1} | {:.1} | {fds} | {open} |", rss as f64 / 1024.0);
        samples.push((minute, rss, fds, open));
        if started.elapsed().as_secs() + args.sample_secs >= seconds {
            break;
        }
        thread::sleep(Duration::from_secs(args.sample_secs));
    }

    let reports: Vec<(&str, Value)> = loaders
        .into_iter()
        .map(|(name, child)| {
            let output = child.wait_with_output().expect("wait for evloop-load");
            let report = serde_json::from_slice(&output.stdout).expect("a JSON report");
            (name, report)
        })
        .collect();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().expect("a client thread");
    }
    let received = scrape(&metrics);
    common::stop(&mut server);
    let _ = redis.kill();
    let _ = redis.wait();
    let _ = std::fs::remove_dir_all(&files);

    let mut failed = Vec::new();
    println!("\n| clients | what they did |");
    println!("|---|---|");
    let mut sent_in_all = 0;
    for (name, report) in &reports {
        let sent = report["messages"]["sent"].as_u64().unwrap_or(0);
        sent_in_all += sent + report["broadcast"]["sync_lines"].as_u64().unwrap_or(0);
        println!(
            "| {name} (evloop-load) | {sent} sent, {} verified, {} lost, {} mismatched{} |",
            report["messages"]["verified"],
            report["messages"]["lost"],
            report["messages"]["failed"],
            report["broadcast"]["deliveries_seen"]
                .as_u64()
                .map(|seen| format!(", {seen} deliveries"))
                .unwrap_or_default()
        );
        if report["ok"] != true {
            failed.push(format!("{name}: the loader's run failed: {}", report["errors"]));
        }
    }
    let churned =
        counts.churn_verified.load(Ordering::Relaxed) + counts.churn_failures.load(Ordering::Relaxed);
    sent_in_all += churned;
    println!(
        "| churn (this driver) | {} connections, {} replies verified, {} failed |",
        counts.churn_connections.load(Ordering::Relaxed),
        counts.churn_verified.load(Ordering::Relaxed),
        counts.churn_failures.load(Ordering::Relaxed)
    );
    if counts.churn_failures.load(Ordering::Relaxed) > 0 {
        failed.push("churn: some replies failed".to_string());
    }
    println!(
        "| killed mid-line (this driver) | {} connections reset after half a line (no message) |",
        counts.killed.load(Ordering::Relaxed)
    );
    let sample = |name: &str| -> u64 {
        received
            .iter()
            .filter(|(sample, _)| sample == name || sample.starts_with(&format!("{name}{{")))
            .map(|(_, value)| *value)
            .sum()
    };
    let slow_cut: u64 = received
        .iter()
        .filter(|(name, _)| {
            name.starts_with("evloop_connections_closed_total{") && name.contains("slow_consumer")
        })
        .map(|(_, value)| *value)
        .sum();
    println!(
        "| slow readers in the room (this driver) | {} connected, never reading; {slow_cut} let go as slow consumers |",
        counts.slow_readers.load(Ordering::Relaxed)
    );
    // Each scrape is one request on the metrics listener, the last one included.
    let scrapes = samples.len() as u64 + 1 + counts.scrapes.load(Ordering::Relaxed);
    let expected = sent_in_all + scrapes;
    let counted = sample("evloop_messages_received_total");
    println!(
        "\nevloop_messages_received_total {counted}; the clients sent {sent_in_all} and {scrapes} scrapes: {}",
        if counted == expected {
            "equal".to_string()
        } else {
            format!("differ by {}", counted as i64 - expected as i64)
        }
    );
    if counted != expected {
        failed.push(format!("the server counted {counted} messages, the clients {expected}"));
    }

    let measured = &samples[args.warmup_samples.min(samples.len().saturating_sub(1))..];
    let spread = |pick: fn(&(f64, u64, u64, u64)) -> u64| {
        let low = measured.iter().map(pick).min().unwrap_or(0) as f64;
        let high = measured.iter().map(pick).max().unwrap_or(0) as f64;
        if low > 0.0 { (high - low) / low } else { 0.0 }
    };
    let (rss_spread, fd_spread) = (spread(|s| s.1), spread(|s| s.2));
    println!(
        "\nAfter the warmup ({} samples left out): RSS within {:.1}%, descriptors within {:.1}% (goal: 5%)",
        args.warmup_samples,
        rss_spread * 100.0,
        fd_spread * 100.0
    );
    if rss_spread > 0.05 || fd_spread > 0.05 {
        failed.push("RSS or descriptors not flat within 5%".to_string());
    }

    write_samples(&args, &samples);
    if failed.is_empty() {
        println!("\nresult: OK");
    } else {
        println!("\nresult: FAILED\n  {}", failed.join("\n  "));
        std::process::exit(1);
    }
}

/// A directory of files to download: 40 of 64 KiB.
fn make_files() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("evloop-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("make the files directory");
    for index in 0..40u32 {
        let bytes: Vec<u8> = (0..64 * 1024u32).map(|i| (i.wrapping_mul(31) ^ index) as u8).collect();
        std::fs::write(dir.join(format!("file-{index}.bin")), bytes).expect("write a file");
    }
    dir
}

/// Redis on a free port; returns it once it accepts connections.
fn start_redis() -> (Child, u16) {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server (scripts/test installs it)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        thread::sleep(Duration::from_millis(20));
    }
    (child, port)
}

/// Connect, one line, check its echo, close; again, about 200 times a second.
fn spawn_churn(addr: SocketAddr, stop: &Arc<AtomicBool>, counts: &Arc<Counts>) -> thread::JoinHandle<()> {
    let (stop, counts) = (Arc::clone(stop), Arc::clone(counts));
    thread::spawn(move || {
        let mut index = 0u64;
        while !stop.load(Ordering::Relaxed) {
            index += 1;
            let line = format!("churn {index}\n");
            let verified = (|| -> std::io::Result<bool> {
                let mut stream = TcpStream::connect(addr)?;
                counts.churn_connections.fetch_add(1, Ordering::Relaxed);
                stream.set_read_timeout(Some(Duration::from_secs(10)))?;
                stream.write_all(line.as_bytes())?;
                let mut reply = vec![0; line.len()];
                stream.read_exact(&mut reply)?;
                Ok(reply == line.as_bytes())
            })();
            match verified {
                Ok(true) => counts.churn_verified.fetch_add(1, Ordering::Relaxed),
                _ => counts.churn_failures.fetch_add(1, Ordering::Relaxed),
            };
            thread::sleep(Duration::from_millis(5));
        }
    })
}

/// Half a line, then a reset (SO_LINGER 0), about 50 times a second.
fn spawn_killed(addr: SocketAddr, stop: &Arc<AtomicBool>, counts: &Arc<Counts>) -> thread::JoinHandle<()> {
    let (stop, counts) = (Arc::clone(stop), Arc::clone(counts));
    thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if let Ok(mut stream) = TcpStream::connect(addr) {
                let _ = stream.write_all(b"half a line, and then the client is kil");
                let socket = socket2::SockRef::from(&stream);
                let _ = socket.set_linger(Some(Duration::ZERO));
                drop(stream);
                counts.killed.fetch_add(1, Ordering::Relaxed);
            }
            thread::sleep(Duration::from_millis(20));
        }
    })
}

/// Four room members at a time that never read, with tiny receive buffers: the server must
/// let each go (a slow consumer: the kernel buffers a few MiB for it first, then the server
/// holds `--max-output`) without the room noticing. A reader cannot see that it was let go
/// (its receive window is shut, so the server's FIN never arrives): the server's count of
/// slow consumers says how many to replace, oldest first, so four are always in the room.
fn spawn_slow_readers(
    addr: SocketAddr,
    metrics: String,
    stop: &Arc<AtomicBool>,
    counts: &Arc<Counts>,
) -> thread::JoinHandle<()> {
    let (stop, counts) = (Arc::clone(stop), Arc::clone(counts));
    thread::spawn(move || {
        let mut readers: std::collections::VecDeque<TcpStream> = std::collections::VecDeque::new();
        let let_go_now = || {
            counts.scrapes.fetch_add(1, Ordering::Relaxed);
            slow_consumers_let_go(&metrics)
        };
        let mut let_go = let_go_now();
        while !stop.load(Ordering::Relaxed) {
            let now_let_go = let_go_now();
            for _ in let_go..now_let_go {
                readers.pop_front();
            }
            let_go = let_go.max(now_let_go);
            while readers.len() < 4 {
                let socket =
                    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
                let _ = socket.set_recv_buffer_size(4096);
                if socket.connect(&addr.into()).is_err() {
                    break;
                }
                let stream: TcpStream = socket.into();
                stream.set_nonblocking(true).unwrap();
                counts.slow_readers.fetch_add(1, Ordering::Relaxed);
                readers.push_back(stream);
            }
            thread::sleep(Duration::from_millis(200));
        }
    })
}

/// The server's count of slow consumers it has let go.
fn slow_consumers_let_go(metrics: &str) -> u64 {
    scrape(metrics)
        .iter()
        .filter(|(name, _)| {
            name.starts_with("evloop_connections_closed_total{") && name.contains("slow_consumer")
        })
        .map(|(_, value)| *value)
        .sum()
}

/// RSS (KiB) and open descriptors of the server: the supervisor and its workers.
fn rss_and_fds(pid: u32) -> (u64, u64) {
    let mut processes = vec![pid];
    processes.extend(common::children(pid));
    let rss = processes.iter().map(|&pid| common::status_field(pid, "VmRSS:")).sum();
    let fds = processes
        .iter()
        .map(|pid| std::fs::read_dir(format!("/proc/{pid}/fd")).map(|dir| dir.count() as u64).unwrap_or(0))
        .sum();
    (rss, fds)
}

/// The metrics listener's samples: (name with labels, value).
fn scrape(addr: &str) -> Vec<(String, u64)> {
    let Ok(mut stream) = TcpStream::connect(addr) else { return Vec::new() };
    let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: soak\r\n\r\n");
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_string(), value.parse::<f64>().ok()? as u64))
        })
        .collect()
}

/// The samples as CSV and as a chart of memory and descriptors over the run.
fn write_samples(args: &Args, samples: &[(f64, u64, u64, u64)]) {
    let mut csv = String::from("minute,rss_kib,open_fds,connections_open\n");
    for (minute, rss, fds, open) in samples {
        csv.push_str(&format!("{minute:.2},{rss},{fds},{open}\n"));
    }
    std::fs::write(&args.csv, csv).expect("write the CSV");
    let series = |name: &str, pick: fn(&(f64, u64, u64, u64)) -> f64| Series {
        name: name.to_string(),
        points: samples.iter().map(|sample| (sample.0, pick(sample))).collect(),
    };
    let panels = [
        Panel {
            title: format!(
                "Server RSS over a {:.0}-minute soak (--workers 2, every load at once)",
                args.minutes
            ),
            x_label: "minutes".to_string(),
            y_label: "MiB (supervisor and workers)".to_string(),
            log_x: false,
            log_y: false,
            series: vec![series("RSS", |s| s.1 as f64 / 1024.0)],
        },
        Panel {
            title: "Open descriptors and connections".to_string(),
            x_label: "minutes".to_string(),
            y_label: "count".to_string(),
            log_x: false,
            log_y: false,
            series: vec![
                series("open descriptors", |s| s.2 as f64),
                series("connections open", |s| s.3 as f64),
            ],
        },
    ];
    write_svg(&args.chart, &panels).expect("write the chart");
    println!("wrote {} and {}", args.csv.display(), args.chart.display());
}
