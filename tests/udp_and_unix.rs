//! UDP and Unix-domain listeners beside TCP on the same reactor (the listener kinds; the
//! transports a connection runs over, plain and TLS, are tested in tls.rs).

mod util;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::Command;

use evloop::{ListenAddr, ServerConfig};
use util::{TestServer, connect, server_command};

/// A socket path unique to this test.
fn socket_path(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("evloop-{name}-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

fn udp_addr(server: &TestServer, index: usize) -> SocketAddr {
    match server.listen_addr(index) {
        ListenAddr::Udp(addr) => addr,
        other => panic!("not UDP: {other}"),
    }
}

/// Sends one datagram and returns the one reply.
#[track_caller]
fn exchange(socket: &UdpSocket, to: SocketAddr, datagram: &[u8]) -> String {
    socket.send_to(datagram, to).unwrap();
    let mut reply = [0; 70_000];
    let (length, from) = socket.recv_from(&mut reply).expect("a reply datagram");
    assert_eq!(from, to, "the reply comes from the listener's address");
    String::from_utf8(reply[..length].to_vec()).unwrap()
}

fn udp_client() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(util::READ_TIMEOUT)).unwrap();
    socket
}

/// echo, uppercase and sum over UDP: one datagram in, one datagram out, errors included.
#[test]
fn handlers_over_udp() {
    let mut config = ServerConfig::default();
    config.max_frame = 1000;
    let server = TestServer::start_with(
        config,
        &["echo=udp://127.0.0.1:0", "uppercase=udp://127.0.0.1:0", "sum=udp://127.0.0.1:0"],
    );
    let (echo, upper, sum) = (udp_addr(&server, 0), udp_addr(&server, 1), udp_addr(&server, 2));
    assert!(server.listen_addr(0).to_string().starts_with("udp://127.0.0.1:"));
    let client = udp_client();
    assert_eq!(exchange(&client, echo, b"hello\n"), "hello\n");
    assert_eq!(exchange(&client, upper, "straße".as_bytes()), "STRASSE");
    assert_eq!(exchange(&client, upper, b"\xff"), "ERR invalid UTF-8");
    assert_eq!(exchange(&client, sum, b"50,40"), "90");
    assert_eq!(exchange(&client, sum, b""), "ERR no integers");
    assert_eq!(exchange(&client, echo, &[b'x'; 1001]), "ERR datagram too long (max 1000 bytes)");
    // Each sender gets its own replies.
    let other = udp_client();
    assert_eq!(exchange(&other, echo, b"other"), "other");
    assert_eq!(exchange(&client, echo, b"mine"), "mine");
    let stats = server.stats();
    assert_eq!((stats.messages_in, stats.frame_errors, stats.messages_out), (7, 1, 8));
}

/// Unix-socket connections behave like TCP ones: handlers, codecs, half-close.
#[test]
fn handlers_over_unix_sockets() {
    let (echo_path, sum_path) = (socket_path("echo"), socket_path("sum-length"));
    let server = TestServer::start(&[
        &format!("uppercase=unix:{}", echo_path.display()),
        &format!("sum:length=unix:{}", sum_path.display()),
    ]);
    assert_eq!(server.listen_addr(0).to_string(), format!("unix:{}", echo_path.display()));
    let mut stream = UnixStream::connect(&echo_path).unwrap();
    stream.set_read_timeout(Some(util::READ_TIMEOUT)).unwrap();
    stream.write_all("straße\nlast".as_bytes()).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let lines: Vec<String> = BufReader::new(stream).lines().map(Result::unwrap).collect();
    assert_eq!(lines, ["STRASSE", "LAST"]);
    let mut sum = UnixStream::connect(&sum_path).unwrap();
    sum.set_read_timeout(Some(util::READ_TIMEOUT)).unwrap();
    sum.write_all(&[0, 0, 0, 5, b'5', b'0', b',', b'4', b'0']).unwrap();
    let mut reply = [0; 6];
    std::io::Read::read_exact(&mut sum, &mut reply).unwrap();
    assert_eq!(reply, [0, 0, 0, 2, b'9', b'0']);
}

/// TCP, UDP and Unix listeners side by side on one reactor.
#[test]
fn mixed_listeners_on_one_reactor() {
    let path = socket_path("mixed");
    let server = TestServer::start(&[
        "echo=127.0.0.1:0",
        "echo=udp://127.0.0.1:0",
        &format!("echo=unix:{}", path.display()),
    ]);
    let mut tcp = connect(server.addr_of(0));
    let udp = udp_client();
    let mut unix = BufReader::new(UnixStream::connect(&path).unwrap());
    for round in 0..20 {
        tcp.roundtrip(&format!("tcp {round}"), &format!("tcp {round}"));
        assert_eq!(
            exchange(&udp, udp_addr(&server, 1), format!("udp {round}").as_bytes()),
            format!("udp {round}")
        );
        unix.get_mut().write_all(format!("unix {round}\n").as_bytes()).unwrap();
        let mut line = String::new();
        unix.read_line(&mut line).unwrap();
        assert_eq!(line, format!("unix {round}\n"));
    }
    assert_eq!(server.stats().messages_in, 60);
}

/// One broadcast room offered over TCP and a Unix socket at once (one --listen, two
/// addresses). Unix clients are named by accept order.
#[test]
fn one_broadcast_room_over_tcp_and_unix() {
    let path = socket_path("room");
    let server = TestServer::start(&[&format!("broadcast=127.0.0.1:0,unix:{}", path.display())]);
    let mut tcp = connect(server.addr_of(0));
    let mut unix = BufReader::new(UnixStream::connect(&path).unwrap());
    unix.get_ref().set_read_timeout(Some(util::READ_TIMEOUT)).unwrap();
    server.wait_for("both members", |stats| stats.connections_open == 2);
    unix.get_mut().write_all(b"hello from unix\n").unwrap();
    tcp.expect("unix#1: hello from unix");
    tcp.send_line("hello from tcp");
    let mut line = String::new();
    unix.read_line(&mut line).unwrap();
    assert_eq!(line, format!("{}: hello from tcp\n", tcp.local_addr()));
}

/// A socket file left by a crashed server is replaced; one with a live server behind it,
/// or a path that is not a socket, is refused with the path named. A clean stop removes
/// the file.
#[test]
fn stale_live_and_foreign_socket_paths() {
    let path = socket_path("stale");
    drop(UnixListener::bind(&path).unwrap()); // the file stays: nobody listens on it
    assert!(path.exists());
    let server = TestServer::start(&[&format!("echo=unix:{}", path.display())]);
    let mut client = BufReader::new(UnixStream::connect(&path).unwrap());
    client.get_mut().write_all(b"replaced\n").unwrap();
    let mut line = String::new();
    client.read_line(&mut line).unwrap();
    assert_eq!(line, "replaced\n");
    drop(client);
    server.stop();
    assert!(!path.exists(), "the socket file is removed on a clean stop");

    let live = UnixListener::bind(&path).unwrap();
    let output = server_command(&["--listen", &format!("echo=unix:{}", path.display())]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("cannot listen on unix:{}", path.display())), "{stderr}");
    assert!(stderr.contains("live server"), "{stderr}");
    drop(live);
    std::fs::remove_file(&path).unwrap();

    std::fs::write(&path, "not a socket").unwrap();
    let output = server_command(&["--listen", &format!("echo=unix:{}", path.display())]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not a socket"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket", "someone else's file is left alone");
    std::fs::remove_file(&path).unwrap();
}

/// broadcast over UDP is refused at start-up, clearly, exit code 2.
#[test]
fn broadcast_over_udp_is_refused() {
    let output = server_command(&["--listen", "broadcast=udp://127.0.0.1:0"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("broadcast cannot run over UDP"), "{stderr}");
}

/// evloop-load drives UDP and Unix listeners with the same verification.
#[test]
fn loader_over_udp_and_unix() {
    let path = socket_path("load");
    let server = TestServer::start(&["sum=udp://127.0.0.1:0", &format!("uppercase=unix:{}", path.display())]);
    for args in [
        vec!["--target".to_string(), server.listen_addr(0).to_string(), "--workload".into(), "sum".into()],
        vec![
            "--target".to_string(),
            server.listen_addr(1).to_string(),
            "--workload".into(),
            "uppercase".into(),
        ],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_evloop-load"))
            .args(&args)
            .args(["-c", "5", "-n", "1000", "--pipeline", "4", "--json", "--no-progress"])
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(output.status.code(), Some(0), "{report:#}");
        assert_eq!(report["messages"]["verified"], 1000, "{report:#}");
    }
}

/// Over UDP a datagram that never comes back is a loss, counted, not a hang.
#[test]
fn loader_counts_lost_datagrams() {
    let lossy = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = lossy.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buffer = [0; 2048];
        let mut count = 0;
        while let Ok((length, from)) = lossy.recv_from(&mut buffer) {
            count += 1;
            if count % 10 != 0 {
                let _ = lossy.send_to(&buffer[..length], from);
            }
        }
    });
    let output = Command::new(env!("CARGO_BIN_EXE_evloop-load"))
        .args(["--target", &format!("udp://{addr}"), "-c", "2", "-n", "100", "--reply-timeout", "300ms"])
        .args(["--json", "--no-progress"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(1), "{report:#}");
    assert_eq!(report["messages"]["lost"], 10, "{report:#}");
    assert_eq!(report["messages"]["verified"], 90, "{report:#}");
}
