//! `evloop-load` against servers no one here wrote (issue 23): Redis, memcached, HAProxy
//! answering HTTP, openbsd-inetd's built-in echo and Node's `ws`, each started on a private
//! port (or in a network namespace of its own) and every reply checked; and servers of
//! the test's own that answer wrong once in 10,000, caught at the offset.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::thread;

use serde_json::Value;
use util::engines::Engine;
use util::haproxy::Haproxy;
use util::loader::{assert_all_verified, load};
use util::ports::{self, Protocol};

/// The engine's address as a loader target (`127.0.0.1:PORT`).
fn target_of(engine: &Engine) -> String {
    engine.url().trim_start_matches("redis://").to_string()
}

/// Redis: PING ping-pong and pipelined, SET/GET pipelined, over threads and processes, every
/// reply checked byte for byte; the preset is the same run as the flags it stands for.
#[test]
fn redis_answers_every_preset_and_flag() {
    let redis = Engine::redis_tcp(&[]);
    let target = target_of(&redis);
    let (code, report) = load(&["--target", &target, "--preset", "redis-ping", "-c", "20", "-n", "5000"]);
    assert_all_verified(code, &report);
    assert_eq!(report["workload"], "generic");
    assert_eq!(report["codec"], "raw");
    assert!(report["mode"].as_str().unwrap().contains(r"messages 'PING\r\n'"), "{report:#}");
    assert_eq!(report["messages"]["verified"], 5000);

    let (code, report) = load(&[
        "--target",
        &target,
        "-m",
        r"PING\r\n",
        "--expect",
        r"+PONG\r\n",
        "-c",
        "8",
        "-P",
        "16",
        "-t",
        "2",
        "-n",
        "20000",
    ]);
    assert_all_verified(code, &report);
    assert_eq!(report["messages"]["verified"], 20000);

    let (code, report) = load(&[
        "--target",
        &target,
        "--preset",
        "redis-set-get",
        "-c",
        "10",
        "-P",
        "16",
        "-n",
        "20000",
        "--processes",
        "2",
    ]);
    assert_all_verified(code, &report);
    assert_eq!(report["messages"]["verified"], 20000);

    // Replies framed by a codec: the line codec cuts Redis's \r\n lines; a prefix checks them.
    let (code, report) = load(&[
        "--target",
        &target,
        "--codec",
        "line",
        "-m",
        "PING",
        "--expect-prefix",
        "+PO",
        "-c",
        "4",
        "-n",
        "400",
    ]);
    assert_all_verified(code, &report);

    // A marker times replies without checking them.
    let (code, report) =
        load(&["--target", &target, "-m", r"PING\r\n", "--latency-marker", "PONG", "-c", "4", "-n", "400"]);
    assert_all_verified(code, &report);
    assert!(report["mode"].as_str().unwrap().contains("replies not checked"), "{report:#}");

    // A wrong expectation is a mismatch on every reply, with its offset.
    let (code, report) =
        load(&["--target", &target, "-m", r"PING\r\n", "--expect", r"+PANG\r\n", "-c", "1", "-n", "3"]);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(report["errors"]["mismatch"], 3);
    let offsets: Vec<u64> = report["first_mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [2, 9, 16], "the 'A' of each +PANG, 7 bytes apart");
}

/// A private memcached on a free port (as root it must be told which user to run as). It
/// cannot bind port 0 and say which it got: it is trusted once it holds the port it was given.
struct Memcached {
    child: Child,
    port: u16,
}

impl Memcached {
    fn start() -> Memcached {
        ports::start_on_a_free_port("memcached", Protocol::Tcp, |port| {
            let mut child = Command::new("memcached")
                .args(["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0", "-u", "root"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("memcached (scripts/test installs it)");
            ports::wait_held(&mut child, port, Protocol::Tcp)?;
            Ok(Memcached { child, port })
        })
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// memcached: the key stored once per connection (-1, its STORED awaited), then `get` over
/// and over, pipelined; a first answer that differs fails the connection, at its offset.
#[test]
fn memcached_serves_the_get_preset() {
    let memcached = Memcached::start();
    let target = format!("127.0.0.1:{}", memcached.port);
    let (code, report) =
        load(&["--target", &target, "--preset", "memcached-get", "-c", "10", "-P", "8", "-n", "10000"]);
    assert_all_verified(code, &report);
    assert_eq!(report["messages"]["verified"], 10000);

    let (code, report) = load(&[
        "--target",
        &target,
        "-1",
        r"set k 0 0 1\r\nx\r\n",
        "--first-expect",
        r"STORED!\r\n",
        "-m",
        r"get k\r\n",
        "--expect",
        r"VALUE k 0 1\r\nx\r\nEND\r\n",
        "-c",
        "2",
        "-n",
        "10",
    ]);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(report["connections"]["failed"], 2, "{report:#}");
    let first = &report["first_mismatches"][0];
    assert_eq!(first["offset"], 6, "{first}");
    assert_eq!(first["got"], "STORED\r\n", "{first}");
}

/// HAProxy answering HTTP itself: 200 on `/`, 404 elsewhere. http-get keeps the connection
/// alive and checks each status line; a 404 is a mismatch.
#[test]
fn haproxy_http_answers_the_get_preset() {
    let haproxy = Haproxy::with_config("http-get", |port| {
        format!(
            "global\n    maxconn 1000\ndefaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
             frontend front\n    bind 127.0.0.1:{port}\n\
             \x20   http-request return status 200 content-type text/plain string \"hello from haproxy\" if {{ path / }}\n\
             \x20   http-request return status 404 content-type text/plain string \"no\"\n"
        )
    });
    let target = haproxy.addr().to_string();
    let (code, report) = load(&["--target", &target, "--preset", "http-get", "/", "-c", "10", "-n", "5000"]);
    assert_all_verified(code, &report);
    assert_eq!(report["messages"]["verified"], 5000);
    let (code, report) =
        load(&["--target", &target, "--preset", "http-get", "/missing", "-c", "1", "-n", "5"]);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(report["errors"]["mismatch"], 5, "{report:#}");
    assert!(report["first_mismatches"][0]["got"].as_str().unwrap().starts_with("HTTP/1.1 404"), "{report:#}");
}

/// A port someone else holds is not taken for the child's (the test above once did: its
/// readiness check connected, HAProxy had not bound the port, and all 10 connections were
/// then refused): HAProxy told to bind a port this test listens on is not called ready.
#[test]
fn a_child_on_a_port_held_by_another_is_not_trusted() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = std::env::temp_dir().join(format!("evloop-haproxy-{}-taken.cfg", std::process::id()));
    std::fs::write(
        &config,
        format!("defaults\n    mode tcp\n    timeout client 5s\nfrontend front\n    bind 127.0.0.1:{port}\n"),
    )
    .unwrap();
    let mut haproxy = Command::new("haproxy")
        .args(["-db", "-f", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("haproxy (scripts/test installs it)");
    let verdict = ports::wait_held(&mut haproxy, port, Protocol::Tcp);
    let _ = std::fs::remove_file(&config);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "the port answers (a connect check would pass)"
    );
    let why = verdict.expect_err("HAProxy does not hold a port this test listens on");
    assert!(why.contains("another process") || why.contains("exited"), "{why}");
    assert!(haproxy.try_wait().unwrap().is_some(), "a child not trusted is stopped");
}

/// openbsd-inetd's built-in echo (a process per connection). Built-in services listen on
/// their official port only (7), so inetd runs in a network namespace of its own, where
/// port 7 is private, and the loader joins it (both need root, as tests here run).
#[test]
fn inetd_builtin_echo_echoes_every_line() {
    let config = std::env::temp_dir().join(format!("evloop-inetd-{}.conf", std::process::id()));
    std::fs::write(&config, "echo stream tcp nowait root internal\n").unwrap();
    let mut inetd = Command::new("unshare")
        .args(["--net", "sh", "-c", "ip link set lo up && exec inetd -d \"$0\""])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare (util-linux)");
    let mut log = BufReader::new(inetd.stderr.take().unwrap());
    // inetd -d names each service it adds; it listens on the TCP one before it adds tcp6.
    let mut line = String::new();
    while !line.contains("ADD: echo proto=tcp6") {
        line.clear();
        if log.read_line(&mut line).unwrap() == 0 {
            let _ = inetd.wait();
            panic!("inetd did not start in its namespace (this test needs root, for unshare --net)");
        }
    }
    thread::spawn(move || std::io::copy(&mut log, &mut std::io::sink()));
    let namespace = format!("--net=/proc/{}/ns/net", inetd.id());
    let run = |args: &[&str]| -> (Option<i32>, Value) {
        let output = Command::new("nsenter")
            .arg(&namespace)
            .arg(env!("CARGO_BIN_EXE_evloop-load"))
            .args(["--target", "127.0.0.1:7"])
            .args(args)
            .args(["--json", "--no-progress"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        (output.status.code(), serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("{stdout}")))
    };
    let generic = run(&[
        "-m",
        r"hello, inetd\r\n",
        "--expect",
        r"hello, inetd\r\n",
        "-c",
        "10",
        "-P",
        "4",
        "-n",
        "4000",
    ]);
    let echo = run(&["--workload", "echo", "-c", "10", "-n", "2000"]);
    let _ = inetd.kill();
    let _ = inetd.wait();
    let _ = std::fs::remove_file(&config);
    assert_all_verified(generic.0, &generic.1);
    assert_eq!(generic.1["messages"]["verified"], 4000);
    assert_all_verified(echo.0, &echo.1);
}

/// Node's `ws` package as an echo server: the generic workload over WebSocket frames.
#[test]
fn node_ws_echoes_generic_messages() {
    let mut node = Command::new("node")
        .args(["examples/baselines/ws_server.js", "echo", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("node (scripts/test installs it, and ws under target/node)");
    let mut line = String::new();
    BufReader::new(node.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().rsplit(' ').next().unwrap().to_string();
    let target = format!("ws://{addr}/");
    let (code, report) = load(&[
        "--target", &target, "-m", "first", "-m", "second", "--expect", "first", "--expect", "second", "-c",
        "5", "-P", "4", "-n", "2000",
    ]);
    let _ = node.kill();
    let _ = node.wait();
    assert_all_verified(code, &report);
    assert_eq!(report["codec"], "ws");
}

/// A PING server of the test's own that answers `+PUNG` to request `wrong` of each
/// connection, and `+PONG` to every other.
fn ping_server_wrong_at(wrong: u64) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut stream = stream;
                let mut line = Vec::new();
                for index in 0u64.. {
                    line.clear();
                    if reader.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let answer: &[u8] = if index == wrong { b"+PUNG\r\n" } else { b"+PONG\r\n" };
                    if stream.write_all(answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr.to_string()
}

/// One wrong answer in 10,000 is caught: one mismatch, at the offset of its wrong byte,
/// and nothing else lost (a wrong answer of the right length costs that reply only).
#[test]
fn one_wrong_answer_in_ten_thousand_is_caught_at_its_offset() {
    let target = ping_server_wrong_at(7_777);
    let (code, report) =
        load(&["--target", &target, "--preset", "redis-ping", "-c", "1", "-P", "16", "-n", "10000"]);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(report["errors"]["mismatch"], 1, "{report:#}");
    assert_eq!(report["messages"]["verified"], 9_999, "{report:#}");
    assert_eq!(report["errors"]["lost"], 0, "{report:#}");
    let mismatch = &report["first_mismatches"][0];
    assert_eq!(mismatch["connection"], 0);
    assert_eq!(mismatch["offset"], 7_777 * 7 + 2, "{mismatch}");
    assert_eq!(mismatch["got"], "+PUNG\r\n");
}

/// Step-up: rooms of 10, 20, 30 members against evloop's broadcast handler, a row each
/// with its p95 reach; a limit no room can meet holds none and exits 1.
#[test]
fn step_up_grows_the_room_until_the_limit() {
    let server = util::TestServer::start(&["broadcast=127.0.0.1:0"]);
    let out = std::env::temp_dir().join(format!("evloop-step-{}", std::process::id()));
    let step = |limit: &str| {
        Command::new(env!("CARGO_BIN_EXE_evloop-load"))
            .args(["--target", &server.addr().to_string(), "--workload", "broadcast", "--step-members", "10"])
            .args(["--limit-p95", limit, "-c", "30", "-n", "300", "--out", out.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let output = step("10s");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    let rows: Vec<&str> = stdout.lines().collect();
    assert!(rows[0].starts_with("members,reach_p50_us,reach_p95_us"), "{stdout}");
    let members: Vec<&str> = rows[1..].iter().map(|row| row.split(',').next().unwrap()).collect();
    assert_eq!(members, ["10", "20", "30"], "{stdout}");
    for row in &rows[1..] {
        let fields: Vec<&str> = row.split(',').collect();
        assert!(fields[2].parse::<f64>().unwrap() > 0.0, "a p95 reach: {row}");
        assert_eq!(fields.last(), Some(&"true"), "{row}");
    }
    assert!(stderr.contains("largest room held under p95 10s: 30 members"), "{stderr}");
    let csv = std::fs::read_to_string(out.with_extension("csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    let mut svg = String::new();
    std::fs::File::open(out.with_extension("svg")).unwrap().read_to_string(&mut svg).unwrap();
    assert!(svg.contains("<svg") && svg.contains("members"), "an SVG chart");

    let output = step("0.000001");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(stdout.lines().count(), 2, "stops at the first room over the limit: {stdout}");
    assert!(stderr.contains("no room held under p95 1µs"), "{stderr}");
    let _ = std::fs::remove_file(out.with_extension("csv"));
    let _ = std::fs::remove_file(out.with_extension("svg"));
}

/// The generic workload's flags that cannot work: one line on stderr, exit 2.
#[test]
fn generic_flags_that_cannot_work_exit_2() {
    for args in [
        &["-m", "PING"][..],
        &["-m", r"\q", "--expect", "x"],
        &["-m", "a", "-m", "b", "-m", "c", "--expect", "a", "--expect", "b"],
        &["-m", "PING", "--expect-prefix", "+"],
        &["-m", "PING", "--expect", "x", "--latency-marker", "x"],
        &["--preset", "redis-ping", "-m", "x"],
        &["--preset", "mysql"],
        &["--preset", "http-get", "no-slash"],
        &["--first-expect", "x", "-m", "a", "--expect", "a"],
        &["--workload", "generic"],
        &["--workload", "echo", "-m", "a", "--expect", "a"],
        &["--workload", "echo", "--step-members", "10", "--limit-p95", "1s"],
        &["--workload", "broadcast", "--step-members", "10"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_evloop-load")).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    }
}
