//! TLS in the reactor (`tls://` listeners): refused without a certificate, then what clients
//! no one here wrote see: Python's `ssl` (TLS 1.2 and 1.3; ECDSA and RSA keys), `openssl s_client`, `curl`
//! fetching the chat page over https, Python `websockets` over wss, Chromium over wss, and
//! HAProxy passing TLS through in TCP mode with a PROXY v2 header in front. Then the rest:
//! rooms and files over TLS, abuse (plaintext, garbage, a handshake that never ends),
//! close_notify on the drain, certificate renewal on SIGUSR1, and the loader's `--tls`.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use util::haproxy::Haproxy;
use util::tls::TlsFiles;
use util::{ServerProcess, TestServer, connect, server_command};

/// Runs tests/tls/client.py `mode` with `args` under `python`; returns its stdout lines.
#[track_caller]
fn python(python: &std::path::Path, mode: &str, args: &[&str]) -> Vec<String> {
    let output = Command::new(python)
        .arg("tests/tls/client.py")
        .arg(mode)
        .args(args)
        .output()
        .expect("python3 (scripts/test installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    stdout.lines().map(String::from).collect()
}

fn python3() -> std::path::PathBuf {
    "python3".into()
}

/// A tls:// listener without its certificate, with a key that is not the certificate's, or
/// with a file that cannot be read, is refused at start: exit 2, one line naming the flag.
#[test]
fn refused_without_a_usable_certificate() {
    let files = TlsFiles::new("refused");
    let other = files.dir.join("other-key.pem");
    files.write_new_pair(&files.dir.join("other-cert.pem"), &other);
    let cert = files.cert.display().to_string();
    let cases: [(&[&str], &str); 4] = [
        (&[], "--tls-cert"),
        (&["--tls-cert", &cert], "--tls-key"),
        (&["--tls-cert", &cert, "--tls-key", other.to_str().unwrap()], "do not go together"),
        (
            &["--tls-cert", "/nonexistent.pem", "--tls-key", other.to_str().unwrap()],
            "--tls-cert /nonexistent.pem",
        ),
    ];
    for (flags, named) in cases {
        for workers in ["1", "2"] {
            let output = server_command(
                &[&["--listen", "echo=tls://127.0.0.1:0", "--workers", workers], flags].concat(),
            )
            .output()
            .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{flags:?}: {stderr}");
            let lines: Vec<&str> = stderr.lines().filter(|line| line.starts_with("evloop-server:")).collect();
            assert_eq!(lines.len(), 1, "{stderr}");
            assert!(lines[0].contains(named), "{flags:?} should name {named:?}: {}", lines[0]);
        }
    }
}

/// Python's ssl at TLS 1.2 and 1.3, openssl s_client, and curl (the chat page over https).
#[test]
fn clients_no_one_here_wrote() {
    let files = TlsFiles::new("clients");
    let server =
        TestServer::start_with(files.config(), &["echo=tls://127.0.0.1:0", "broadcast:ws=tls://127.0.0.1:0"]);
    let (echo, page) = (server.addr_of(0), server.addr_of(1));
    let port = echo.port().to_string();
    let lines = python(&python3(), "echo", &["127.0.0.1", &port, files.cert.to_str().unwrap()]);
    assert_eq!(lines, ["TLS 1.2 echo ok", "TLS 1.3 echo ok"]);

    let mut openssl = Command::new("openssl")
        .args(["s_client", "-quiet", "-connect", &echo.to_string(), "-CAfile", files.cert.to_str().unwrap()])
        .args(["-servername", "localhost", "-verify_return_error"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl (Debian's)");
    openssl.stdin.as_mut().unwrap().write_all(b"hello s_client\n").unwrap();
    let mut line = String::new();
    BufReader::new(openssl.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line, "hello s_client\n");
    let _ = openssl.kill();
    let _ = openssl.wait();

    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--cacert", files.cert.to_str().unwrap()])
        .args(["--resolve", &format!("localhost:{}:127.0.0.1", page.port())])
        .arg(format!("https://localhost:{}/", page.port()))
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(body.contains("new WebSocket("), "the chat page over https: {body}");
    assert!(server.stats().tls_handshakes >= 4);
}

/// Python websockets over wss://, and Chromium: the chat page over https joining the room
/// over wss (the test certificate accepted with a flag), with a line client in the room.
#[test]
fn websockets_over_tls() {
    let files = TlsFiles::new("wss");
    let server = TestServer::start_with(
        files.config(),
        &["echo:ws=tls://127.0.0.1:0", "broadcast=127.0.0.1:0", "broadcast:ws=tls://127.0.0.1:0"],
    );
    let port = server.addr_of(0).port().to_string();
    let lines = python(&util::venv_python(), "wss", &["127.0.0.1", &port, files.cert.to_str().unwrap()]);
    assert_eq!(lines, ["wss echo ok"]);

    let page = format!("https://127.0.0.1:{}/", server.addr_of(2).port());
    let output = Command::new("node")
        .args(["tests/browser/chat.mjs", &page, &server.addr_of(1).to_string(), "--insecure"])
        .output()
        .expect("node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("the pages see the line client's line ok"), "{stdout}");
}

/// An RSA key (made by `openssl req`, as most operators make theirs) serves TLS 1.2 and 1.3
/// too; the other tests use ECDSA P-256 (rcgen's).
#[test]
fn an_rsa_key_serves_too() {
    let files = TlsFiles::new("rsa");
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&files.key)
        .arg("-out")
        .arg(&files.cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl (Debian's)");
    assert!(status.success());
    assert!(std::fs::read_to_string(&files.key).unwrap().contains("BEGIN PRIVATE KEY"));
    let server = TestServer::start_with(files.config(), &["echo=tls://127.0.0.1:0"]);
    let port = server.addr().port().to_string();
    let lines = python(&python3(), "echo", &["127.0.0.1", &port, files.cert.to_str().unwrap()]);
    assert_eq!(lines, ["TLS 1.2 echo ok", "TLS 1.3 echo ok"]);
}

/// HAProxy in TCP mode passes TLS through with a PROXY v2 header in front: the header is
/// read before the TLS handshake, and the room names the real client.
#[test]
fn haproxy_passes_tls_through_with_a_proxy_header() {
    let files = TlsFiles::new("haproxy");
    let server = ServerProcess::start(
        server_command(
            &[
                &["--proxy-protocol", "--listen", "broadcast=tls://127.0.0.1:0"][..],
                &files.args().each_ref().map(String::as_str),
            ]
            .concat(),
        ),
        1,
    );
    let haproxy = Haproxy::start("tls", &server.addrs);
    // Two TLS clients through the balancer, by Python's ssl; the second prints what it
    // hears, the first speaks until it is heard.
    let script = r#"
import socket, ssl, sys, time
host, port, cafile = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=cafile)
def open_one():
    return ctx.wrap_socket(socket.create_connection((host, port), timeout=10), server_hostname="localhost")
speaker, listener = open_one(), open_one()
listener.settimeout(0.1)
for attempt in range(100):
    speaker.sendall(b"through the balancer %d\n" % attempt)
    try:
        line = listener.recv(200).decode()
        break
    except socket.timeout:
        continue
print(speaker.getsockname()[0] + ":" + str(speaker.getsockname()[1]))
print(line.strip())
"#;
    let output = Command::new("python3")
        .args(["-c", script, "127.0.0.1", &haproxy.addr().port().to_string(), files.cert.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[1].starts_with(&format!("{}: through the balancer", lines[0])),
        "the line names the client, not the balancer: {lines:?}"
    );
}

/// A room over TLS with a plain line member, each line encrypted for each TLS member; and a
/// file over TLS (the copying path, not sendfile), every byte checked.
#[test]
fn rooms_and_files_over_tls() {
    let files = TlsFiles::new("rooms");
    let data = files.dir.join("served");
    std::fs::create_dir_all(&data).unwrap();
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(data.join("big.bin"), &content).unwrap();
    let mut config = files.config();
    config.files = Some(data);
    let server = TestServer::start_with(
        config,
        &["broadcast=tls://127.0.0.1:0", "broadcast=127.0.0.1:0", "file=tls://127.0.0.1:0"],
    );
    let port = server.addr_of(2).port().to_string();
    let digest = {
        use std::fmt::Write as _;
        let output = Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        let mut output = output;
        output.stdin.take().unwrap().write_all(&content).unwrap();
        let mut text = String::new();
        output.stdout.take().unwrap().read_to_string(&mut text).unwrap();
        output.wait().unwrap();
        let mut hex = String::new();
        let _ = write!(hex, "{}", text.split(' ').next().unwrap());
        hex
    };
    let lines =
        python(&python3(), "file", &["127.0.0.1", &port, files.cert.to_str().unwrap(), "big.bin", "3000000"]);
    assert_eq!(lines, [format!("file {digest}")]);

    // The room: a line client hears a TLS member, and the other way.
    let room_port = server.addr_of(0).port();
    let script = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[3])
conn = ctx.wrap_socket(socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10), server_hostname="localhost")
print("connected", flush=True)
line = b""
while not line.endswith(b"\n"):
    line += conn.recv(1)
print(line.decode().strip(), flush=True)
conn.sendall(b"from TLS\n")
sys.stdin.readline()
"#;
    let mut member = Command::new("python3")
        .args(["-c", script, "127.0.0.1", &room_port.to_string(), files.cert.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut member_out = BufReader::new(member.stdout.take().unwrap());
    let mut line = String::new();
    member_out.read_line(&mut line).unwrap();
    assert_eq!(line, "connected\n");
    let mut plain = connect(server.addr_of(1));
    server.wait_for("both in the room", |stats| {
        stats.connections_open == 2 && stats.connections_preparing == 0
    });
    plain.send_line("from plain");
    line.clear();
    member_out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), format!("{}: from plain", plain.local_addr()));
    assert!(plain.line().ends_with(": from TLS"));
    member.stdin.take().unwrap().write_all(b"\n").unwrap();
    member.wait().unwrap();
}

/// Bytes that are not TLS, garbage after a ClientHello's first bytes, and a handshake never
/// finished: each closed (the last at --handshake-timeout), counted, and nobody else
/// affected.
#[test]
fn abuse_is_closed_and_counted() {
    let files = TlsFiles::new("abuse");
    let mut config = files.config();
    config.handshake_timeout = Duration::from_millis(300);
    let server = TestServer::start_with(config, &["echo=tls://127.0.0.1:0"]);
    let addr = server.addr();
    let port = addr.port().to_string();
    let mut plaintext = TcpStream::connect(addr).unwrap();
    plaintext.set_read_timeout(Some(util::READ_TIMEOUT)).unwrap();
    plaintext.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = plaintext.read_to_end(&mut answer);
    // At most a TLS alert (a record of type 21), never an echo.
    assert!(answer.is_empty() || answer[0] == 21, "{answer:?}");
    let mut garbage = TcpStream::connect(addr).unwrap();
    garbage.set_read_timeout(Some(util::READ_TIMEOUT)).unwrap();
    garbage.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff]).unwrap();
    let _ = garbage.read_to_end(&mut Vec::new());
    let mut truncated = TcpStream::connect(addr).unwrap();
    truncated.set_read_timeout(Some(util::READ_TIMEOUT)).unwrap();
    truncated.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
    let _ = truncated.read_to_end(&mut Vec::new());
    let stats = server.wait_for("all three closed", |stats| stats.connections_closed == 3);
    assert_eq!((stats.tls_failures, stats.closed_handshake_timeout), (2, 1), "{stats:?}");
    assert_eq!(stats.messages_in, 0);
    let lines = python(&python3(), "echo", &["127.0.0.1", &port, files.cert.to_str().unwrap()]);
    assert_eq!(lines.len(), 2, "TLS clients are served on");
}

/// The drain ends a TLS connection with close_notify: a clean end, not a truncation.
#[test]
fn the_drain_sends_close_notify() {
    let files = TlsFiles::new("drain");
    let server = TestServer::start_with(files.config(), &["echo=tls://127.0.0.1:0"]);
    let mut client = Command::new("python3")
        .args([
            "tests/tls/client.py",
            "drain",
            "127.0.0.1",
            &server.addr().port().to_string(),
            files.cert.to_str().unwrap(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(client.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    let stopping = std::thread::spawn(move || server.stop());
    client.stdin.take().unwrap().write_all(b"\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "close_notify ok\n");
    assert!(client.wait().unwrap().success());
    stopping.join().unwrap();
}

/// SIGUSR1 reloads the certificate for new handshakes; a connection already up keeps
/// working; a bad pair is refused with a log line and the old pair kept.
#[test]
fn sigusr1_renews_the_certificate() {
    let files = TlsFiles::new("renew");
    let (server, logs) = ServerProcess::start_logged(
        server_command(
            &[&["--listen", "echo=tls://127.0.0.1:0"][..], &files.args().each_ref().map(String::as_str)]
                .concat(),
        ),
        1,
        "info",
    );
    let port = server.addrs[0].port().to_string();
    let fingerprint = |cafile: &std::path::Path| {
        python(&python3(), "cert", &["127.0.0.1", &port, cafile.to_str().unwrap()])[0].clone()
    };
    let first = fingerprint(&files.cert);
    let old_cert = files.dir.join("old-cert.pem");
    std::fs::copy(&files.cert, &old_cert).unwrap();
    files.write_new_pair(&files.cert, &files.key);
    server.signal(libc::SIGUSR1);
    util::wait_for_log(&logs, "TLS certificate reloaded");
    let second = fingerprint(&files.cert);
    assert_ne!(first, second, "new handshakes use the new certificate");
    // A broken pair: refused, the one in use kept.
    std::fs::write(&files.key, "not a key").unwrap();
    server.signal(libc::SIGUSR1);
    util::wait_for_log(&logs, "TLS certificate not reloaded");
    assert_eq!(fingerprint(&files.cert), second);
}

/// The loader's --tls drives every codec over TLS, line and WebSocket, trusting the test
/// certificate with --tls-ca, reports its handshakes, and refuses a server it cannot trust.
#[test]
fn the_loader_speaks_tls() {
    let files = TlsFiles::new("loader");
    let server =
        TestServer::start_with(files.config(), &["echo=tls://127.0.0.1:0", "echo:ws=tls://127.0.0.1:0"]);
    let ca = files.cert.display().to_string();
    // --tls with a plain address; a wss:// target (as a browser would name it) implies it.
    let targets = [(server.addr_of(0).to_string(), "--tls"), (format!("wss://{}/", server.addr_of(1)), "")];
    for (target, flag) in targets {
        let output = Command::new(env!("CARGO_BIN_EXE_evloop-load"))
            .args([flag].into_iter().filter(|flag| !flag.is_empty()))
            .args(["--target", &target, "--tls-ca", &ca, "-c", "10", "-n", "2000", "--pipeline", "4"])
            .args(["--json", "--no-progress"])
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(report["ok"], true, "{target}: {report:#}");
        assert_eq!(report["messages"]["verified"], 2000);
        // Handshakes reported apart from the TCP connects: one per connection.
        assert_eq!(report["connections"]["tls"]["handshakes"], 10, "{report:#}");
        assert_eq!(report["connections"]["tls"]["latency_us"]["count"], 10, "{report:#}");
    }
    assert_eq!(server.stats().tls_handshakes, 20);
    let other = TlsFiles::new("loader-other");
    // The address as the server's startup line prints it: tls:// implies --tls.
    let output = Command::new(env!("CARGO_BIN_EXE_evloop-load"))
        .args(["--target", &format!("tls://{}", server.addr_of(0)), "--tls-ca", other.cert.to_str().unwrap()])
        .args(["-c", "2", "-n", "10", "--json", "--no-progress"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "an untrusted server fails the run");
}
