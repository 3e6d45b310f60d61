//! The metrics endpoint (`--listen metrics=ADDR`): Prometheus text that the real `promtool`
//! (package `prometheus`, installed by scripts/test) accepts, counters that move with
//! traffic, and proper answers to everything that is not `GET /metrics`.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};

use util::{TestServer, connect};

/// Sends `request` raw; the whole response, split into (head, body).
fn http(addr: SocketAddr, request: &[u8]) -> (String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(util::READ_TIMEOUT)).unwrap();
    stream.write_all(request).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("the server closes after its answer");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    (head.to_string(), body.to_string())
}

fn scrape(addr: SocketAddr) -> String {
    let (head, body) = http(addr, b"GET /metrics HTTP/1.1\r\nHost: evloop\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");
    assert!(head.contains(&format!("Content-Length: {}", body.len())), "{head}");
    body
}

/// The value of the sample `name` (with its labels, as written) in `text`.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .parse()
        .unwrap()
}

/// The output passes `promtool check metrics`, and the counters follow the traffic.
#[test]
fn promtool_accepts_it_and_counters_move() {
    let server = TestServer::start(&["echo=127.0.0.1:0", "metrics=127.0.0.1:0"]);
    let (echo, metrics) = (server.addr_of(0), server.addr_of(1));
    let before = scrape(metrics);
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (scripts/test installs prometheus)");
    check.stdin.take().unwrap().write_all(before.as_bytes()).unwrap();
    let checked = check.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    let mut client = connect(echo);
    for index in 0..10 {
        client.roundtrip(&format!("line {index}"), &format!("line {index}"));
    }
    let listener = format!("evloop_listener_connections_open{{handler=\"echo\",listen=\"{echo}\"}}");
    assert_eq!(sample(&scrape(metrics), &listener), 1.0);
    drop(client);
    server.wait_for("the echo client closed", |stats| stats.closed_by_client >= 1);
    let after = scrape(metrics);
    let moved = |name: &str| sample(&after, name) - sample(&before, name);
    // The scrapes between count too: each is one handled request and one reply.
    assert_eq!(moved("evloop_messages_received_total"), 10.0 + 2.0);
    assert!(moved("evloop_received_bytes_total") >= 10.0 * 7.0);
    assert!(moved("evloop_sent_bytes_total") >= 10.0 * 7.0);
    assert!(moved("evloop_connections_accepted_total") >= 2.0);
    assert!(moved("evloop_connections_closed_total{reason=\"client\"}") >= 1.0);
    assert!(moved("evloop_wakeups_total") > 0.0);
    assert_eq!(sample(&after, &listener), 0.0);
    assert_eq!(
        sample(&after, "evloop_events_per_wakeup_count"),
        sample(&after, "evloop_events_per_wakeup_bucket{le=\"+Inf\"}")
    );
}

/// Only `GET /metrics` is a scrape: other paths 404, other methods 405 (with Allow), garbage
/// 400; every answer closes the connection.
#[test]
fn everything_else_gets_a_proper_answer() {
    let server = TestServer::start(&["metrics=127.0.0.1:0"]);
    let addr = server.addr();
    let (head, _) = http(addr, b"GET / HTTP/1.1\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 404 Not Found"), "{head}");
    let (head, _) = http(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 405 Method Not Allowed") && head.contains("Allow: GET"), "{head}");
    let (head, _) = http(addr, b"\x00\x01 nonsense\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 400 Bad Request"), "{head}");
    // A request head cut over several writes is put together.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(util::READ_TIMEOUT)).unwrap();
    for part in [&b"GET /met"[..], b"rics HTTP/1.1\r\nHo", b"st: x\r\n\r\n"] {
        stream.write_all(part).unwrap();
        std::thread::yield_now();
    }
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
}

/// Under --workers, whichever worker a scrape reaches shows totals over all of them: 40
/// clients spread over two workers are all counted.
#[test]
fn workers_scrape_totals_over_all_workers() {
    let server = util::ServerProcess::start(
        util::server_command(&[
            "--workers",
            "2",
            "--listen",
            "echo=127.0.0.1:0",
            "--listen",
            "metrics=127.0.0.1:0",
        ]),
        2,
    );
    let (echo, metrics) = (server.addrs[0], server.addrs[1]);
    for index in 0..40 {
        connect(echo).roundtrip(&format!("hello {index}"), &format!("hello {index}"));
    }
    let deadline = std::time::Instant::now() + util::READ_TIMEOUT;
    loop {
        let text = scrape(metrics);
        let closed = sample(&text, "evloop_connections_closed_total{reason=\"client\"}");
        assert!(closed <= 40.0, "counted twice: {closed}");
        if closed == 40.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "totals stuck at {closed} of 40");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Under --workers 2 with 20 clients echoing flat out, 60 scrapes 50 ms apart never see a
/// counter go down, whichever worker answers, not even when a worker is killed and replaced
/// halfway (its counts stay in the totals); and once the clients stop, a scrape counts every
/// message they had an answer to.
#[test]
fn worker_totals_only_grow_and_are_current() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let (server, logs) = util::ServerProcess::start_logged(
        util::server_command(&[
            "--workers",
            "2",
            "--listen",
            "echo=127.0.0.1:0",
            "--listen",
            "metrics=127.0.0.1:0",
        ]),
        2,
        "info",
    );
    let (echo, metrics) = (server.addrs[0], server.addrs[1]);
    let mut worker_zero = None;
    while worker_zero.is_none() {
        let line = util::wait_for_log(&logs, "worker started; ");
        if line.contains("index=0 ") {
            let pid = line.split("pid=").nth(1).unwrap().trim().parse::<i32>().unwrap();
            worker_zero = Some(pid);
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..20)
        .map(|index| {
            let (stop, answered) = (stop.clone(), answered.clone());
            std::thread::spawn(move || {
                // A killed worker takes its clients' connections along: connect again.
                while !stop.load(Ordering::Relaxed) {
                    let Ok(stream) = TcpStream::connect(echo) else { continue };
                    stream.set_read_timeout(Some(util::READ_TIMEOUT)).unwrap();
                    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                    let mut writer = stream;
                    let mut line = String::new();
                    while !stop.load(Ordering::Relaxed) {
                        line.clear();
                        let sent = writer.write_all(format!("client {index}\n").as_bytes());
                        let read = sent.and_then(|()| std::io::BufRead::read_line(&mut reader, &mut line));
                        match read {
                            Ok(n) if n > 0 => {
                                assert_eq!(line, format!("client {index}\n"));
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => break,
                        }
                    }
                }
            })
        })
        .collect();
    let total = |text: &str| sample(text, "evloop_messages_received_total");
    let mut last = 0.0;
    for round in 0..60 {
        if round == 30 {
            // SAFETY: kill() on a worker of the server this test started.
            assert_eq!(unsafe { libc::kill(worker_zero.unwrap(), libc::SIGKILL) }, 0);
            util::wait_for_log(&logs, "worker restarted; index=0");
        }
        let now = total(&scrape(metrics));
        assert!(now >= last, "scrape {round}: messages received went down from {last} to {now}");
        last = now;
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    let answered = answered.load(Ordering::Relaxed) as f64;
    assert!(answered > 1000.0, "the clients kept the workers busy: {answered} answers");
    let now = total(&scrape(metrics));
    assert!(now >= last, "the last scrape went down from {last} to {now}");
    // Every message answered is counted (the scrapes themselves are messages too).
    assert!(now >= answered, "a scrape right after the traffic counts {now} of {answered} answered");
}
