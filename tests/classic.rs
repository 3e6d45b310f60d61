//! The classic course's services and clients: daytime and time over TCP and UDP, and the
//! course's own Python clients (examples/clients/) against a server started on port 0.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use util::{ServerProcess, TestServer, server_command};

const SECONDS_1900_TO_1970: u64 = 2_208_988_800;

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Everything a TCP server sends before it closes.
fn read_until_closed(addr: SocketAddr) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(util::READ_TIMEOUT)).unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).expect("the server closes after its reply");
    bytes
}

/// The one datagram a UDP server answers an empty datagram with.
fn ask_udp(addr: SocketAddr) -> Vec<u8> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(util::READ_TIMEOUT)).unwrap();
    socket.send_to(b"", addr).unwrap();
    let mut buffer = [0; 1024];
    let (length, from) = socket.recv_from(&mut buffer).unwrap();
    assert_eq!(from, addr);
    buffer[..length].to_vec()
}

/// Checks a daytime line: `YYYY-MM-DDTHH:MM:SSZ\r\n`, within a few seconds of now.
#[track_caller]
fn assert_daytime(bytes: &[u8]) {
    let line = std::str::from_utf8(bytes).unwrap();
    assert_eq!(line.len(), 22, "{line:?}");
    assert!(line.ends_with("Z\r\n"), "{line:?}");
    let digits: String = line.chars().filter(char::is_ascii_digit).collect();
    assert_eq!(digits.len(), 14, "{line:?}");
    // Compare with the clock through the same civil arithmetic Python uses.
    let output = Command::new("python3")
        .args(["-c", "import sys,calendar,time; print(calendar.timegm(time.strptime(sys.argv[1].strip(), '%Y-%m-%dT%H:%M:%SZ')))", line])
        .output()
        .expect("python3");
    let seconds: u64 = String::from_utf8_lossy(&output.stdout).trim().parse().unwrap();
    assert!(seconds.abs_diff(unix_now()) <= 5, "{line:?} is not now");
}

/// Checks an RFC 868 reply: 4 bytes, big-endian seconds since 1900, within a few seconds.
#[track_caller]
fn assert_time(bytes: &[u8]) {
    let bytes: [u8; 4] = bytes.try_into().expect("exactly four bytes");
    let since_1900 = u64::from(u32::from_be_bytes(bytes));
    assert!((since_1900 - SECONDS_1900_TO_1970).abs_diff(unix_now()) <= 5, "{since_1900}");
}

/// daytime (RFC 867) and time (RFC 868), each over TCP (reply on connect, then close) and
/// UDP (any datagram answered).
#[test]
fn daytime_and_time_over_tcp_and_udp() {
    let server =
        TestServer::start(&["daytime=127.0.0.1:0,udp://127.0.0.1:0", "time=127.0.0.1:0,udp://127.0.0.1:0"]);
    let addr = |index: usize| match server.listen_addr(index) {
        evloop::ListenAddr::Tcp(addr) | evloop::ListenAddr::Udp(addr) => addr,
        other => panic!("{other}"),
    };
    assert_daytime(&read_until_closed(addr(0)));
    assert_daytime(&ask_udp(addr(1)));
    assert_time(&read_until_closed(addr(2)));
    assert_time(&ask_udp(addr(3)));
}

/// Runs a client from examples/clients with `args`; its stdout.
fn client(script: &str, args: &[&str]) -> String {
    let output = Command::new("python3")
        .arg(format!("{}/examples/clients/{script}", env!("CARGO_MANIFEST_DIR")))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("python3 (scripts/test installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{script}: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

/// The course's clients, unchanged, against the server's default listeners (on free ports
/// here): raw framing for those that send no newline and `recv(1024)` once, TCP and UDP.
#[test]
fn the_course_clients_work_against_the_defaults() {
    let mut command = server_command(&[]);
    command.env("EVLOOP_DEFAULT_PORTS", "0");
    let server = ServerProcess::start(command, 15);
    let find = |handler: &str, udp: bool, nth: usize| -> String {
        let line = server
            .startup_lines
            .iter()
            .filter(|line| line.starts_with(&format!("{handler} listening on ")))
            .filter(|line| line.contains("udp://") == udp)
            .nth(nth)
            .unwrap_or_else(|| panic!("no {handler} listener"));
        // `<handler> listening on <addr> (<codec>)`: the port of the fourth word.
        line.split(' ').nth(3).and_then(|addr| addr.rsplit(':').next()).unwrap().to_string()
    };
    // The raw listeners are the second of each handler's TCP listeners (after 7000-7002).
    assert_eq!(client("sum_client.py", &["127.0.0.1", &find("sum", false, 1)]), "Sum: 90\n");
    assert_eq!(
        client("uppercase_client.py", &["127.0.0.1", &find("uppercase", false, 1), "straße"]),
        "From server: STRASSE\n"
    );
    assert_eq!(
        client("uppercase_udp_client.py", &["127.0.0.1", &find("uppercase", true, 0)]),
        "From server: HELLO WORLD\n"
    );
    assert_eq!(
        client("echo_client.py", &["127.0.0.1", &find("echo", false, 1), "one", "two"]),
        "Echo: one\nEcho: two\n"
    );
    for udp in [false, true] {
        let flag: &[&str] = if udp { &["--udp"] } else { &[] };
        let mut args = flag.to_vec();
        let port = find("daytime", udp, 0);
        args.extend(["127.0.0.1", &port]);
        let daytime = client("daytime_client.py", &args);
        let line = daytime.strip_prefix("Daytime: ").unwrap_or_else(|| panic!("{daytime}"));
        assert_daytime(format!("{}\r\n", line.trim_end()).as_bytes());

        let mut args = flag.to_vec();
        let port = find("time", udp, 0);
        args.extend(["127.0.0.1", &port]);
        let time = client("time_client.py", &args);
        let seconds: u64 = time.strip_prefix("Time: ").unwrap().split(' ').next().unwrap().parse().unwrap();
        assert_time(&(seconds as u32).to_be_bytes());
    }
}

/// Two chat clients (select() over stdin and the socket) in the broadcast room: a line typed
/// into one appears at the other with the sender's address.
#[test]
fn chat_clients_talk_through_the_room() {
    let server = TestServer::start(&["broadcast=127.0.0.1:0"]);
    let port = server.addr().port().to_string();
    let start = || {
        let mut child = Command::new("python3")
            .arg(format!("{}/examples/clients/chat_client.py", env!("CARGO_MANIFEST_DIR")))
            .args(["127.0.0.1", &port])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut hello = String::new();
        stdout.read_line(&mut hello).unwrap();
        let name = hello.trim().strip_prefix("Connected as ").unwrap().to_string();
        (child, stdout, name)
    };
    let (mut alice, _alice_out, alice_name) = start();
    let (mut bob, mut bob_out, _) = start();
    server.wait_for("both in the room", |stats| stats.connections_open == 2);
    alice.stdin.as_mut().unwrap().write_all(b"hi bob\n").unwrap();
    let mut line = String::new();
    bob_out.read_line(&mut line).unwrap();
    assert_eq!(line, format!("{alice_name}: hi bob\n"));
    drop(alice.stdin.take()); // Ctrl-D: alice leaves
    assert!(alice.wait().unwrap().success());
    drop(bob.stdin.take());
    assert!(bob.wait().unwrap().success());
}

/// A course client against a line listener sends no newline and waits: after a second the
/// server logs, once, that such clients want the raw codec.
#[test]
fn a_stuck_line_client_gets_a_hint_in_the_log() {
    let (server, log) =
        ServerProcess::start_logged(server_command(&["--listen", "sum=127.0.0.1:0"]), 1, "info");
    let mut client = TcpStream::connect(server.addrs[0]).unwrap();
    client.write_all(b"50,40").unwrap();
    let hint = util::wait_for_log(&log, "no newline");
    assert!(hint.contains("--listen sum:raw=ADDR"), "{hint}");
}

/// A sender paused by backpressure mid-line is not a course client waiting for a reply: its
/// tail sits unchanged because the server stopped reading, so it gets no hint (issue 24: it
/// did, and the hint was then spent). A course client connecting after it still gets one.
#[test]
fn a_sender_paused_mid_line_gets_no_hint() {
    let command = server_command(&["--max-output", "65536", "--listen", "echo=127.0.0.1:0"]);
    let (server, log) = ServerProcess::start_logged(command, 1, "info");
    // Long lines that are never read back: the server's output passes --max-output, it stops
    // reading, and its last read most likely ended mid-line.
    let mut sender = TcpStream::connect(server.addrs[0]).unwrap();
    sender.set_write_timeout(Some(std::time::Duration::from_millis(500))).unwrap();
    let line = format!("{}\n", "x".repeat(3999));
    let mut written = 0usize;
    loop {
        assert!(written < 1 << 30, "the server never stopped reading");
        match sender.write(&line.as_bytes()[written % line.len()..]) {
            Ok(n) => written += n,
            // Nothing moved for half a second: the server has stopped reading it.
            Err(error)
                if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
            {
                break;
            }
            Err(error) => panic!("{error}"),
        }
    }
    let mut course_client = TcpStream::connect(server.addrs[0]).unwrap();
    course_client.write_all(b"hello").unwrap();
    let hint = util::wait_for_log(&log, "no newline");
    let course_peer = course_client.local_addr().unwrap().to_string();
    assert!(hint.contains(&format!("peer={course_peer} ")), "the hint is about the paused sender: {hint}");
    drop(sender);
}

/// The download client with no arguments prints its usage (exit 2), not a traceback (issue 36).
#[test]
fn the_file_client_without_arguments_prints_its_usage() {
    let script = format!("{}/examples/clients/file_client.py", env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("python3").arg(script).stdin(Stdio::null()).output().expect("python3");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with("usage: python3 examples/clients/file_client.py HOST PORT"), "{stderr}");
    assert!(!stderr.contains("Traceback"), "{stderr}");
}

/// The download client lists the directory and fetches a file intact.
#[test]
fn the_file_client_downloads() {
    let dir = std::env::temp_dir().join(format!("evloop-classic-files-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let content: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.join("lesson.bin"), &content).unwrap();
    let mut config = evloop::ServerConfig::default();
    config.files = Some(dir.clone());
    let server = TestServer::start_with(config, &["file=127.0.0.1:0"]);
    let port = server.addr().port().to_string();
    assert_eq!(client("file_client.py", &["127.0.0.1", &port]), "300000 lesson.bin\n");
    let out = dir.with_extension("downloaded");
    let saved = client("file_client.py", &["127.0.0.1", &port, "lesson.bin", out.to_str().unwrap()]);
    assert_eq!(saved, format!("Saved {}: 300000 bytes\n", out.display()));
    assert!(std::fs::read(&out).unwrap() == content);
    std::fs::remove_dir_all(dir).unwrap();
    std::fs::remove_file(out).unwrap();
}
