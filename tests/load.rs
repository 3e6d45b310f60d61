//! The real `evloop-load` binary against the real server, in short bounded runs, and
//! against deliberately wrong servers it must catch.

mod util;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::thread;

use serde_json::Value;
use util::TestServer;
use util::loader::{assert_all_verified, load};
use util::ports::RefusingPort;

/// Echo, ping-pong, a fixed number of messages: every one verified and counted.
#[test]
fn echo_run_verifies_every_reply() {
    let server = TestServer::start(&["echo=127.0.0.1:0"]);
    let target = server.addr().to_string();
    let (code, report) = load(&["--target", &target, "-c", "10", "-n", "3000"]);
    assert_all_verified(code, &report);
    assert_eq!(report["messages"]["verified"], 3000);
    assert_eq!(report["connections"]["established"], 10);
    assert!(report["throughput"]["msgs_per_s"].as_f64().unwrap() > 0.0);
    assert!(report["latency_us"]["p50"].as_f64().unwrap() > 0.0);
    assert_eq!(server.stats().messages_in, 3000, "the server saw exactly what the loader sent");
}

/// Uppercase, sum and the length codec, pipelined, over several threads.
#[test]
fn other_workloads_and_codecs_verify() {
    let server =
        TestServer::start(&["uppercase=127.0.0.1:0", "sum:length=127.0.0.1:0", "echo:length=127.0.0.1:0"]);
    let uppercase = server.addr_of(0).to_string();
    let (code, report) = load(&[
        "--target",
        &uppercase,
        "--workload",
        "uppercase",
        "-c",
        "8",
        "-n",
        "4000",
        "--pipeline",
        "8",
        "--threads",
        "2",
    ]);
    assert_all_verified(code, &report);
    let sum = server.addr_of(1).to_string();
    let (code, report) = load(&[
        "--target",
        &sum,
        "--workload",
        "sum",
        "--codec",
        "length",
        "-c",
        "5",
        "-n",
        "2000",
        "--size",
        "100",
    ]);
    assert_all_verified(code, &report);
    let echo = server.addr_of(2).to_string();
    let (code, report) =
        load(&["--target", &echo, "--codec", "length", "-c", "3", "-d", "300ms", "--size", "2000"]);
    assert_all_verified(code, &report);
}

/// Broadcast: every message reaches every other connection, and the report says so.
#[test]
fn broadcast_run_counts_deliveries() {
    let server = TestServer::start(&["broadcast=127.0.0.1:0"]);
    let target = server.addr().to_string();
    let (code, report) = load(&[
        "--target",
        &target,
        "--workload",
        "broadcast",
        "-c",
        "6",
        "--rate",
        "300",
        "-d",
        "500ms",
        "--threads",
        "2",
    ]);
    assert_all_verified(code, &report);
    let broadcast = &report["broadcast"];
    assert_eq!(broadcast["deliveries_expected"], broadcast["deliveries_seen"], "{report:#}");
    let sent = report["messages"]["sent"].as_u64().unwrap();
    assert_eq!(broadcast["deliveries_seen"].as_u64().unwrap(), sent * 5, "each message reached the 5 others");
}

/// Closed-loop broadcast (`--pipeline`): each sender keeps its lines in flight, and a line
/// is answered once every other member, on either thread, has it; the senders go on past
/// their first window only because lines are answered.
#[test]
fn closed_loop_broadcast_answers_lines_when_every_member_has_them() {
    let server = TestServer::start(&["broadcast=127.0.0.1:0"]);
    let target = server.addr().to_string();
    let (code, report) = load(&[
        "--target",
        &target,
        "--workload",
        "broadcast",
        "-c",
        "6",
        "--active",
        "2",
        "--pipeline",
        "4",
        "-d",
        "500ms",
        "--threads",
        "2",
    ]);
    assert_all_verified(code, &report);
    assert_eq!(report["mode"], "closed loop, pipeline 4", "{report:#}");
    let sent = report["messages"]["sent"].as_u64().unwrap();
    assert!(sent > 2 * 4, "only the first window went out: {report:#}");
    let broadcast = &report["broadcast"];
    assert_eq!(broadcast["deliveries_seen"].as_u64().unwrap(), sent * 5, "{report:#}");
    // What the server handled is what the loader says it sent, its sync lines included.
    let sync_lines = broadcast["sync_lines"].as_u64().unwrap();
    assert!(sync_lines >= 1, "{report:#}");
    assert_eq!(server.stats().messages_in, sent + sync_lines, "{report:#}");
}

/// Open loop: messages go out on schedule and both latency figures are reported.
#[test]
fn open_loop_reports_corrected_and_uncorrected_latency() {
    let server = TestServer::start(&["echo=127.0.0.1:0"]);
    let target = server.addr().to_string();
    let (code, report) = load(&["--target", &target, "-c", "4", "--rate", "2000", "-d", "500ms"]);
    assert_all_verified(code, &report);
    let sent = report["messages"]["sent"].as_u64().unwrap();
    assert_eq!(sent, 1000, "2000/s for 0.5 s is 1000 messages, sent on schedule");
    assert!(report["latency_uncorrected_us"]["p50"].as_f64().unwrap() > 0.0);
    assert!(report["schedule_lag_us"]["count"].as_u64().unwrap() == sent);
}

/// Connections spread over several source addresses all work.
#[test]
fn sources_spread_connections() {
    let server = TestServer::start(&["echo=127.0.0.1:0"]);
    let target = server.addr().to_string();
    let (code, report) =
        load(&["--target", &target, "-c", "9", "-n", "900", "--sources", "127.0.0.1,127.0.0.2-127.0.0.3"]);
    assert_all_verified(code, &report);
}

/// Several loader processes: each runs its part, all connect before any sends, and the
/// parent merges their tallies exactly.
#[test]
fn processes_split_and_merge() {
    let server = TestServer::start(&["echo=127.0.0.1:0"]);
    let target = server.addr().to_string();
    let (code, report) =
        load(&["--target", &target, "-c", "30", "--processes", "3", "--threads", "2", "-n", "3000"]);
    assert_all_verified(code, &report);
    assert_eq!(report["messages"]["verified"], 3000);
    assert_eq!(report["connections"]["established"], 30);
    assert_eq!(report["latency_us"]["count"], 3000, "histograms merged, not averaged");
    assert_eq!(server.stats().connections_accepted, 30);
}

/// --active: all connections come up, only some send.
#[test]
fn only_active_connections_send() {
    let server = TestServer::start(&["echo=127.0.0.1:0"]);
    let target = server.addr().to_string();
    let (code, report) =
        load(&["--target", &target, "-c", "40", "--active", "4", "--rate", "400", "-d", "500ms"]);
    assert_all_verified(code, &report);
    assert_eq!(report["connections"]["established"], 40);
    assert_eq!(report["messages"]["sent"], 200);
}

/// A sweep runs once per connection count and writes CSV and SVG.
#[test]
fn sweep_writes_csv_and_svg() {
    let server = TestServer::start(&["echo=127.0.0.1:0"]);
    let out = std::env::temp_dir().join(format!("evloop-sweep-test-{}", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_evloop-load"))
        .args([
            "--target",
            &server.addr().to_string(),
            "--sweep-connections",
            "1,4",
            "-d",
            "200ms",
            "--no-progress",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let csv = std::fs::read_to_string(out.with_extension("csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 3, "{csv}");
    assert!(rows[0].starts_with("connections,msgs_per_s,p50_us"));
    assert!(rows[1].starts_with("1,") && rows[2].starts_with("4,") && rows[2].ends_with(",true"), "{csv}");
    let svg = std::fs::read_to_string(out.with_extension("svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("p99 latency"));
    std::fs::remove_file(out.with_extension("csv")).unwrap();
    std::fs::remove_file(out.with_extension("svg")).unwrap();
    assert_eq!(server.stats().connections_accepted, 5);
}

/// A server that corrupts some replies: the loader reports mismatches, shows them, exits 1.
#[test]
fn wrong_server_is_caught() {
    let addr = serve_lines(
        |index, line| {
            if index % 7 == 3 { Some(format!("{line}?")) } else { Some(line.to_string()) }
        },
    );
    let (code, report) = load(&["--target", &addr.to_string(), "-c", "3", "-n", "300"]);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(report["ok"], false);
    let mismatches = report["errors"]["mismatch"].as_u64().unwrap();
    assert!(mismatches >= 30, "{report:#}");
    let first = &report["first_mismatches"][0];
    assert!(first["got"].as_str().unwrap().ends_with('?'), "{first}");
}

/// A server that answers out of order is caught too.
#[test]
fn reordering_server_is_caught() {
    let addr = serve_raw(|stream| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut stream = stream;
        let mut first = String::new();
        let mut second = String::new();
        while reader.read_line(&mut first).unwrap_or(0) > 0 && reader.read_line(&mut second).unwrap_or(0) > 0
        {
            if stream.write_all(second.as_bytes()).and_then(|()| stream.write_all(first.as_bytes())).is_err()
            {
                return;
            }
            first.clear();
            second.clear();
        }
    });
    let (code, report) = load(&[
        "--target",
        &addr.to_string(),
        "-c",
        "1",
        "-n",
        "100",
        "--pipeline",
        "2",
        "--reply-timeout",
        "1s",
    ]);
    assert_eq!(code, Some(1));
    assert!(report["errors"]["mismatch"].as_u64().unwrap() > 0, "{report:#}");
}

/// A server that swallows some requests: the missing replies are counted as lost.
#[test]
fn lost_replies_are_counted() {
    let addr = serve_lines(|index, line| (index % 10 != 5).then(|| line.to_string()));
    let (code, report) = load(&[
        "--target",
        &addr.to_string(),
        "-c",
        "2",
        "-n",
        "100",
        "--pipeline",
        "100",
        "--reply-timeout",
        "500ms",
    ]);
    assert_eq!(code, Some(1));
    assert_eq!(report["messages"]["lost"], 10, "{report:#}");
}

/// Nothing listening: connections are refused, counted by class, exit 1.
#[test]
fn refused_connections_are_reported() {
    let refusing = RefusingPort::new();
    let (code, report) = load(&["--target", &refusing.addr().to_string(), "-c", "3", "-n", "10"]);
    assert_eq!(code, Some(1));
    assert_eq!(report["connections"]["failed"], 3);
    assert_eq!(report["errors"]["refused"], 3);
}

/// The human report of a run with `args`: exit code and text.
fn load_text(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_evloop-load"))
        .args(args)
        .arg("--no-progress")
        .output()
        .expect("run evloop-load");
    (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Nothing listening: the report says so in its result line, not only in a count among
/// zeros (issue 24).
#[test]
fn a_server_that_is_down_is_named_in_the_result() {
    let refusing = RefusingPort::new();
    let target = refusing.addr().to_string();
    let (code, text) = load_text(&["--target", &target, "-c", "3", "-n", "10"]);
    assert_eq!(code, Some(1));
    let result = text.lines().last().unwrap();
    assert_eq!(
        result,
        format!(
            "result       FAILED: no connection was established: refused 3 times; is a server listening at {target}?"
        )
    );
}

/// A full server's `ERR server full` is a connection it turned away, not a wrong reply
/// (issue 24: it showed as established plus a mismatch).
#[test]
fn clients_turned_away_by_a_full_server_are_reported_as_such() {
    let mut config = evloop::ServerConfig::default();
    config.max_connections = Some(2);
    let server = TestServer::start_with(config, &["echo=127.0.0.1:0"]);
    let target = server.addr().to_string();
    let (code, report) = load(&["--target", &target, "-c", "5", "-d", "0.5s"]);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(report["errors"]["turned_away"], 3, "{report:#}");
    assert_eq!(report["errors"]["mismatch"], 0, "{report:#}");
    assert_eq!(report["messages"]["lost"], 0, "{report:#}");
    assert!(report["messages"]["verified"].as_u64().unwrap() > 0, "the two it took were served: {report:#}");
    let (_, text) = load_text(&["--target", &target, "-c", "5", "-d", "0.5s"]);
    assert!(text.contains("turned away 3"), "{text}");
    assert!(text.trim_end().ends_with("FAILED: the server turned 3 connections away (ERR server full): raise its --max-connections, or open fewer"), "{text}");
}

/// The warmup note only when there was a warmup; a short connect phase in a unit that
/// shows it (issue 24: "(warmup included; ...)" with none, and "in 0.00 s").
#[test]
fn the_report_mentions_a_warmup_only_when_there_was_one() {
    let server = TestServer::start(&["echo=127.0.0.1:0"]);
    let target = server.addr().to_string();
    let (code, text) = load_text(&["--target", &target, "-c", "2", "-n", "100"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains("warmup"), "{text}");
    assert!(!text.contains("in 0.00 s"), "{text}");
    let (code, text) = load_text(&["--target", &target, "-c", "2", "-d", "0.3s", "--warmup", "0.2s"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("(warmup included; "), "{text}");
}

/// The text spectrum counts the values in each step, as the JSON does (issue 24: the text
/// counted up to each step, the JSON within it).
#[test]
fn the_text_spectrum_counts_per_step_as_the_json_does() {
    let server = TestServer::start(&["echo=127.0.0.1:0"]);
    let target = server.addr().to_string();
    let (code, text) = load_text(&["--target", &target, "-c", "2", "-n", "1000", "--latency"]);
    assert_eq!(code, Some(0), "{text}");
    let counts: Vec<u64> = text
        .lines()
        .skip_while(|line| !line.starts_with("latency spectrum"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .map(|line| line.split_whitespace().last().unwrap().parse().unwrap())
        .collect();
    assert!(counts.len() > 5, "{text}");
    assert_eq!(counts.iter().sum::<u64>(), 1000, "{text}");
}

/// Bad usage: one line on stderr, exit 2.
#[test]
fn bad_usage_exits_2() {
    for args in [
        &["--workload", "nope"][..],
        &["--codec", "raw"],
        &["-c", "0"],
        &["--size", "4"],
        &["--rate", "-5"],
        &["-d", "1s", "-n", "5"],
        &["--sources", "127.0.0.9-127.0.0.1"],
        &["--workload", "broadcast", "-c", "1"],
        &["--workload", "broadcast", "-c", "4", "-P", "2", "--processes", "2"],
        &["-c", "5", "--active", "6"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_evloop-load")).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    }
}

/// A line server for the tests above: `reply(index, line)` decides each answer (`None`:
/// none). Serves every connection on its own thread until the test process ends.
fn serve_lines(reply: fn(u64, &str) -> Option<String>) -> SocketAddr {
    serve_raw(move |stream| {
        let reader = BufReader::new(stream.try_clone().unwrap());
        let mut stream = stream;
        for (index, line) in reader.lines().map_while(Result::ok).enumerate() {
            if let Some(answer) = reply(index as u64, &line) {
                if stream.write_all(format!("{answer}\n").as_bytes()).is_err() {
                    return;
                }
            }
        }
    })
}

fn serve_raw(serve: impl Fn(TcpStream) + Send + Sync + Copy + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            thread::spawn(move || serve(stream));
        }
    });
    addr
}

/// Against a port nobody listens on, nothing is measured: the report says 0 s, not the
/// duration asked for.
#[test]
fn a_refused_run_measures_nothing() {
    let refusing = RefusingPort::new();
    let (code, report) = load(&["--target", &refusing.addr().to_string(), "-c", "5", "-d", "5s"]);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(report["connections"]["failed"], 5, "{report:#}");
    assert_eq!(report["duration_s"], 0.0, "{report:#}");
}

/// The server stops mid-run: every connection's close is seen (also when the last reply and
/// the end of the stream come in one event), the measured window ends there, and the loader
/// ends without waiting out --reply-timeout.
#[test]
fn a_server_that_stops_mid_run_ends_the_run() {
    let server = TestServer::start(&["echo=127.0.0.1:0"]);
    let addr = server.addr().to_string();
    let mut loader = Command::new(env!("CARGO_BIN_EXE_evloop-load"))
        .args([
            "--target",
            &addr,
            "-c",
            "20",
            "-d",
            "60s",
            "--reply-timeout",
            "60s",
            "--json",
            "--no-progress",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    server.wait_for("traffic", |stats| stats.messages_in > 1000);
    drop(server); // drains and stops
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while loader.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "the loader waited for replies from a stopped server");
        thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut loader.stdout.take().unwrap(), &mut stdout).unwrap();
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["errors"]["closed"], 20, "{report:#}");
    assert!(report["duration_s"].as_f64().unwrap() < 30.0, "{report:#}");
}

/// A "room" that accepts its members but relays nothing: the loader stops waiting for them
/// to be in the room after --connect-timeout, runs, counts every line as lost, and ends.
#[test]
fn a_room_that_never_fills_still_ends() {
    let silent = serve_raw(|stream| {
        let _ = std::io::copy(&mut &stream, &mut std::io::sink());
    });
    let mut loader = Command::new(env!("CARGO_BIN_EXE_evloop-load"))
        .args(["--target", &silent.to_string(), "--workload", "broadcast", "-c", "3", "--rate", "100"])
        .args([
            "-d",
            "300ms",
            "--connect-timeout",
            "500ms",
            "--reply-timeout",
            "200ms",
            "--json",
            "--no-progress",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while loader.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "the loader waited for the room for ever");
        thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut loader.stdout.take().unwrap(), &mut stdout).unwrap();
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(loader.wait().unwrap().code(), Some(1), "{report:#}");
    assert!(report["messages"]["sent"].as_u64().unwrap() > 0, "{report:#}");
    assert_eq!(report["broadcast"]["deliveries_seen"], 0, "{report:#}");
    assert!(report["messages"]["lost"].as_u64().unwrap() > 0, "{report:#}");
}

/// `--workload file`: every file of the directory downloaded in turn, every byte checked
/// against the file's CRC-32.
#[test]
fn file_downloads_verify() {
    let dir = std::env::temp_dir().join(format!("evloop-load-files-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, size) in [("a.bin", 1_000_000usize), ("b.bin", 10), ("c.bin", 0)] {
        std::fs::write(dir.join(name), (0..size).map(|i| (i * 31 % 253) as u8).collect::<Vec<u8>>()).unwrap();
    }
    let mut config = evloop::ServerConfig::default();
    config.files = Some(dir.clone());
    let server = TestServer::start_with(config, &["file=127.0.0.1:0"]);
    let files = dir.display().to_string();
    let (code, report) = load(&[
        "--target",
        &server.addr().to_string(),
        "--workload",
        "file",
        "--files",
        &files,
        "-c",
        "3",
        "-n",
        "30",
    ]);
    assert_all_verified(code, &report);
    assert_eq!(report["messages"]["verified"], 30, "{report:#}");

    // A server whose files differ from the loader's copy is caught.
    let other = dir.with_extension("other");
    let _ = std::fs::remove_dir_all(&other);
    std::fs::create_dir_all(&other).unwrap();
    for name in ["a.bin", "b.bin", "c.bin"] {
        std::fs::copy(dir.join(name), other.join(name)).unwrap();
    }
    let mut changed = std::fs::read(other.join("a.bin")).unwrap();
    changed[500_000] ^= 1;
    std::fs::write(other.join("a.bin"), changed).unwrap();
    let others = other.display().to_string();
    let (code, report) = load(&[
        "--target",
        &server.addr().to_string(),
        "--workload",
        "file",
        "--files",
        &others,
        "-c",
        "1",
        "-n",
        "3",
    ]);
    assert_eq!(code, Some(1), "{report:#}");
    assert!(report["messages"]["failed"].as_u64().unwrap() >= 1, "{report:#}");
    std::fs::remove_dir_all(dir).unwrap();
    std::fs::remove_dir_all(other).unwrap();
}

/// What users of wrk and redis-benchmark expect: -t, -R and -P, a host name in --target,
/// p99.99, the full spectrum with --latency, and a schema version in the JSON.
#[test]
fn wrk_style_flags_host_names_and_the_spectrum() {
    let server = TestServer::start(&["echo=127.0.0.1:0"]);
    let target = format!("localhost:{}", server.addr().port());
    let (code, report) =
        load(&["--target", &target, "-c", "4", "-t", "2", "-P", "4", "-n", "2000", "--latency"]);
    assert_all_verified(code, &report);
    assert_eq!(report["schema"], 1);
    assert_eq!(report["threads"], 2);
    assert_eq!(report["mode"], "closed loop, pipeline 4");
    assert_eq!(report["target"], server.addr().to_string(), "the host name resolved");
    let latency = &report["latency_us"];
    assert!(latency["p99_99"].as_f64().unwrap() >= latency["p99_9"].as_f64().unwrap(), "{latency}");
    let spectrum = report["latency_spectrum"].as_array().expect("--latency adds the spectrum");
    assert!(spectrum.len() > 5);
    assert_eq!(spectrum.last().unwrap()["percentile"], 100.0);
    let total: u64 = spectrum.iter().map(|step| step["count"].as_u64().unwrap()).sum();
    assert_eq!(total, report["messages"]["measured"].as_u64().unwrap());

    let (code, report) = load(&["--target", &target, "-c", "2", "-R", "500", "-n", "100"]);
    assert_all_verified(code, &report);
    assert_eq!(report["mode"], "open loop at 500 msgs/s");
    assert!(report["latency_spectrum"].is_null(), "no spectrum unless asked");
}

/// The loader speaks WebSocket: echo and broadcast over `ws`, every reply verified, against
/// evloop and against Node's `ws` package (a server no one here wrote, under target/node).
#[test]
fn websocket_runs_verify_against_evloop_and_node() {
    let server = TestServer::start(&["echo:ws=127.0.0.1:0", "broadcast:ws=127.0.0.1:0"]);
    let echo = format!("ws://{}/", server.addr_of(0));
    let (code, report) = load(&["--target", &echo, "-c", "10", "-n", "2000", "--pipeline", "4"]);
    assert_all_verified(code, &report);
    assert_eq!(report["codec"], "ws");
    let room = format!("ws://{}/chat", server.addr_of(1));
    let (code, report) = load(&["--target", &room, "--workload", "broadcast", "-c", "5", "-n", "200"]);
    assert_all_verified(code, &report);
    assert_eq!(report["broadcast"]["deliveries_seen"], 200 * 4);

    for mode in ["echo", "broadcast"] {
        let mut node = Command::new("node")
            .args(["examples/baselines/ws_server.js", mode, "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("node (scripts/test installs it, and ws under target/node)");
        let mut line = String::new();
        BufReader::new(node.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line.trim().rsplit(' ').next().unwrap().to_string();
        let workload: &[&str] = if mode == "echo" { &[] } else { &["--workload", "broadcast"] };
        let (code, report) =
            load(&[&["--target", &format!("ws://{addr}/"), "-c", "5", "-n", "500"], workload].concat());
        let _ = node.kill();
        let _ = node.wait();
        assert_all_verified(code, &report);
    }
}

/// Runs evloop-load with `args` (plus `--no-progress`) to its end; a loader still running
/// after `limit` is killed and fails the test, which must not hang with it. Returns the
/// exit code and stdout.
#[track_caller]
fn run_within(limit: std::time::Duration, args: &[&str]) -> (Option<i32>, String) {
    let mut loader = Command::new(env!("CARGO_BIN_EXE_evloop-load"))
        .args(args)
        .arg("--no-progress")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = loader.stdout.take().unwrap();
    let output = thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text
    });
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = loader.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = loader.kill();
            let _ = loader.wait();
            panic!("evloop-load {args:?} still running after {limit:?}: killed");
        }
        thread::sleep(std::time::Duration::from_millis(20));
    };
    (status.code(), output.join().unwrap())
}

/// [`run_within`] with `--json`: the exit code and the report.
#[track_caller]
fn load_within(limit: std::time::Duration, args: &[&str]) -> (Option<i32>, Value) {
    let (code, stdout) = run_within(limit, &[args, &["--json"]].concat());
    let report =
        serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("not a report ({error}): {stdout}"));
    (code, report)
}

/// How long a run that waits out a 500 ms reply timeout may take before it counts as hung.
const HUNG_AFTER: std::time::Duration = std::time::Duration::from_secs(20);

/// A server that reads and never answers: a counted run (`-n`, more messages than
/// connections) ends once --reply-timeout passes with nothing heard, every request lost, and
/// says why. It used to wait for ever: only replies sent the next request.
#[test]
fn a_silent_server_ends_a_counted_run_at_the_reply_timeout() {
    let silent = serve_raw(|stream| {
        let _ = std::io::copy(&mut &stream, &mut std::io::sink());
    })
    .to_string();
    for (connections, messages) in [("1", "3"), ("2", "4"), ("50", "100")] {
        let started = std::time::Instant::now();
        let (code, report) = load_within(
            HUNG_AFTER,
            &["--target", &silent, "-c", connections, "-n", messages, "--reply-timeout", "500ms"],
        );
        assert_eq!(code, Some(1), "{report:#}");
        assert_eq!(report["ok"], false, "{report:#}");
        assert_eq!(report["messages"]["verified"], 0, "{report:#}");
        assert_eq!(report["messages"]["sent"], report["messages"]["lost"], "{report:#}");
        assert_eq!(report["errors"]["reply_timeout"].to_string(), connections, "{report:#}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "{report:#}");
    }
    let (code, text) =
        run_within(HUNG_AFTER, &["--target", &silent, "-c", "1", "-n", "3", "--reply-timeout", "500ms"]);
    assert_eq!(code, Some(1), "{text}");
    let result = text.lines().last().unwrap();
    assert!(result.starts_with("result       FAILED: replies timed out"), "{text}");
}

/// A wrong `--expect` against evloop's echo (the reply is shorter than expected, so the
/// rest of it never comes): the run ends, fails, and every request is accounted for.
#[test]
fn a_wrong_expectation_ends_the_run() {
    let server = util::ServerProcess::start(util::server_command(&["--listen", "echo=127.0.0.1:0"]), 1);
    let target = server.addrs[0].to_string();
    for (connections, messages) in [("1", "3"), ("2", "4"), ("50", "100")] {
        let (code, report) = load_within(
            HUNG_AFTER,
            &[
                "--target",
                &target,
                "-m",
                r"hi\n",
                "--expect",
                r"hi!\n",
                "-c",
                connections,
                "-n",
                messages,
                "--reply-timeout",
                "500ms",
            ],
        );
        assert_eq!(code, Some(1), "{report:#}");
        assert_eq!(report["ok"], false, "{report:#}");
        assert_eq!(report["messages"]["verified"], 0, "{report:#}");
        let messages = &report["messages"];
        let accounted = messages["failed"].as_u64().unwrap() + messages["lost"].as_u64().unwrap();
        assert_eq!(accounted, messages["sent"].as_u64().unwrap(), "{report:#}");
    }
}

/// `--active` fewer than the threads: a thread with no sending connection holds its idle
/// ones and ends with the others; the messages go to the threads that send (a counted run
/// used to wait for ever on the thread that could not send its share).
#[test]
fn a_thread_with_only_idle_connections_ends_a_counted_run() {
    let server = TestServer::start(&["echo=127.0.0.1:0"]);
    let target = server.addr().to_string();
    let (code, report) =
        load_within(HUNG_AFTER, &["--target", &target, "-c", "4", "--active", "1", "-t", "2", "-n", "50"]);
    assert_all_verified(code, &report);
    assert_eq!(report["messages"]["verified"], 50, "{report:#}");
    assert_eq!(server.stats().messages_in, 50);
}

/// A closed-loop room (`--pipeline`) that relays nothing: the senders give their lines up
/// after --reply-timeout and a counted run ends, every line lost.
#[test]
fn a_closed_loop_room_that_relays_nothing_ends_a_counted_run() {
    let silent = serve_raw(|stream| {
        let _ = std::io::copy(&mut &stream, &mut std::io::sink());
    })
    .to_string();
    let (code, report) = load_within(
        HUNG_AFTER,
        &["--target", &silent, "--workload", "broadcast", "-c", "3", "-P", "1", "-n", "10"]
            .into_iter()
            .chain(["--connect-timeout", "300ms", "--reply-timeout", "300ms"])
            .collect::<Vec<_>>(),
    );
    assert_eq!(code, Some(1), "{report:#}");
    assert!(report["messages"]["sent"].as_u64().unwrap() > 0, "{report:#}");
    assert_eq!(report["broadcast"]["deliveries_seen"], 0, "{report:#}");
    assert!(report["messages"]["lost"].as_u64().unwrap() > 0, "{report:#}");
}

/// The server answers a few requests, then closes every connection: the result line says
/// the server went away (it said only "FAILED" after "closed 3 ... lost 3").
#[test]
fn a_server_that_goes_away_mid_run_is_named_in_the_result() {
    let addr = serve_raw(|stream| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut stream = stream;
        let mut line = String::new();
        for _ in 0..5 {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || stream.write_all(line.as_bytes()).is_err() {
                return;
            }
        }
        // A clean close (FIN), then whatever still comes is read and dropped.
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    let (code, text) = run_within(
        HUNG_AFTER,
        &["--target", &addr.to_string(), "-c", "3", "-d", "2s", "--reply-timeout", "500ms"],
    );
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(
        text.lines().last().unwrap(),
        "result       FAILED: the server closed 3 connections mid-run; 3 never answered",
        "{text}"
    );
}

/// A reply shorter than `--expect` (evloop's echo of `hi\n` when `hi!\n` is expected): what
/// came is shown as a mismatch, at its first wrong byte, not counted as lost unseen.
#[test]
fn a_reply_shorter_than_expected_is_shown() {
    let server = util::ServerProcess::start(util::server_command(&["--listen", "echo=127.0.0.1:0"]), 1);
    let target = server.addrs[0].to_string();
    let args = [
        "--target",
        &target,
        "-m",
        r"hi\n",
        "--expect",
        r"hi!\n",
        "-c",
        "1",
        "-n",
        "3",
        "--reply-timeout",
        "500ms",
    ];
    let (code, report) = load_within(HUNG_AFTER, &args);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(report["errors"]["mismatch"], 1, "{report:#}");
    assert_eq!(report["errors"]["lost"], 0, "{report:#}");
    assert_eq!(report["errors"]["reply_timeout"], 1, "{report:#}");
    let mismatch = &report["first_mismatches"][0];
    assert_eq!(mismatch["expected"], "hi!\n", "{report:#}");
    assert_eq!(mismatch["got"], "hi\n", "{report:#}");
    assert_eq!(mismatch["offset"], 2, "{report:#}");
    let (_, text) = run_within(HUNG_AFTER, &args);
    assert_eq!(
        text.lines().last().unwrap(),
        "result       FAILED: replies timed out: 1 connection waited --reply-timeout for a reply that never came whole; 1 reply did not match (the first shown above)",
        "{text}"
    );
}

/// Sends `signal` to process `pid` (one this test started).
fn signal(pid: u32, signal: i32) {
    // SAFETY: kill() on the PID of a child of this test has no memory-safety preconditions.
    let result = unsafe { libc::kill(pid as i32, signal) };
    assert_eq!(result, 0, "kill failed");
}

/// Ctrl-C (SIGINT) stops a run: the loader prints the report so far, marked interrupted,
/// and exits 130 (it used to die with nothing printed).
#[test]
fn ctrl_c_prints_the_report_so_far() {
    let server = TestServer::start(&["echo=127.0.0.1:0"]);
    let target = server.addr().to_string();
    let mut loader = Command::new(env!("CARGO_BIN_EXE_evloop-load"))
        .args(["--target", &target, "-c", "4", "-d", "60s", "--json", "--no-progress"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    server.wait_for("traffic", |stats| stats.messages_in > 1000);
    signal(loader.id(), libc::SIGINT);
    let deadline = std::time::Instant::now() + HUNG_AFTER;
    let status = loop {
        if let Some(status) = loader.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = loader.kill();
            let _ = loader.wait();
            panic!("the loader ran on after SIGINT");
        }
        thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut loader.stdout.take().unwrap(), &mut stdout).unwrap();
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("no report: {stdout:?}"));
    assert_eq!(status.code(), Some(130), "{report:#}");
    assert_eq!(report["interrupted"], true, "{report:#}");
    assert_eq!(report["ok"], true, "every reply so far verified: {report:#}");
    assert!(report["messages"]["verified"].as_u64().unwrap() > 1000, "{report:#}");
    assert!(report["duration_s"].as_f64().unwrap() < 30.0, "the window ends at the stop: {report:#}");
}

/// A loader a script starts in the background (`&`, which makes it ignore SIGINT) still
/// stops on SIGINT and on SIGTERM, with its report (exit 130, 143).
#[test]
fn a_loader_in_the_background_of_a_script_stops_on_sigint_and_sigterm() {
    let server = TestServer::start(&["echo=127.0.0.1:0"]);
    let target = server.addr().to_string();
    for (name, number, code) in [("SIGINT", libc::SIGINT, 130), ("SIGTERM", libc::SIGTERM, 143)] {
        let before = server.stats().messages_in;
        let mut script = Command::new("sh")
            .args(["-c", r#""$0" "$@" & echo "$!"; wait "$!"; echo "exit $?""#])
            .arg(env!("CARGO_BIN_EXE_evloop-load"))
            .args(["--target", &target, "-c", "2", "-d", "60s", "--no-progress"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(script.stdout.take().unwrap()).lines();
        let pid: u32 = lines.next().unwrap().unwrap().trim().parse().unwrap();
        server.wait_for("traffic", |stats| stats.messages_in > before + 1000);
        signal(pid, number);
        let (done, output) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let _ = done.send(lines.map_while(Result::ok).collect::<Vec<String>>());
        });
        let Ok(output) = output.recv_timeout(HUNG_AFTER) else {
            signal(pid, libc::SIGKILL);
            let _ = script.wait();
            panic!("the loader ran on after {name}");
        };
        let _ = script.wait();
        assert_eq!(
            output.last().map(String::as_str),
            Some(format!("exit {code}").as_str()),
            "{name}: {output:?}"
        );
        assert!(output.iter().any(|line| line.starts_with("interrupted  ")), "{name}: {output:?}");
        assert!(
            output.iter().any(|line| line == "result       OK: every reply verified"),
            "{name}: {output:?}"
        );
    }
}
