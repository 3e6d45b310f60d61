//! The `ws` codec: the handshake and its refusals, the chat page, frames and close codes
//! (with a client written by hand, which can send what no library would), a room shared
//! by WebSocket and line clients, keepalive pings, and Python's `websockets` (a real client,
//! installed by scripts/test into target/venv) for what a library user sees.

mod util;

use std::io::Read;
use std::time::Duration;

use evloop::ServerConfig;
use util::ws::{WsClient, http, upgrade_request};
use util::{TestServer, connect};

/// `GET /` is the chat page (self-contained: no external assets); other paths 404, other
/// methods 405; each answer closes the connection.
#[test]
fn the_chat_page_and_other_requests() {
    let server = TestServer::start(&["broadcast:ws=127.0.0.1:0"]);
    let addr = server.addr();
    let (status, headers, mut reader) = http(addr, &format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n"));
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(headers.iter().any(|header| header.starts_with("Content-Type: text/html")), "{headers:?}");
    let mut page = String::new();
    reader.read_to_string(&mut page).unwrap();
    assert!(page.contains("new WebSocket("), "the page opens a socket");
    assert!(!page.contains("src=\"http") && !page.contains("href=\"http"), "no external assets");
    let (status, _, _) = http(addr, &format!("GET /favicon.ico HTTP/1.1\r\nHost: {addr}\r\n\r\n"));
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, headers, _) =
        http(addr, &format!("POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n"));
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    assert!(headers.contains(&"Allow: GET".to_string()), "{headers:?}");
    // None of them joined the room or met the handler.
    let stats = server.wait_for("the three closed", |stats| stats.connections_closed == 3);
    assert_eq!(stats.messages_in, 0);
}

/// Upgrades that must be refused are, with the status that says why: another site's page
/// (403), another version (426), no key (400). Same-host pages and clients without an
/// Origin are let in; `ws_origins` widens the list.
#[test]
fn handshake_refusals() {
    let server = TestServer::start(&["echo:ws=127.0.0.1:0"]);
    let addr = server.addr();
    let status = |extra: &str| http(addr, &upgrade_request(addr, "/any/path", extra)).0;
    assert_eq!(status(""), "HTTP/1.1 101 Switching Protocols");
    assert_eq!(status(&format!("Origin: http://{addr}\r\n")), "HTTP/1.1 101 Switching Protocols");
    assert_eq!(status("Origin: https://evil.example\r\n"), "HTTP/1.1 403 Forbidden");
    let version = upgrade_request(addr, "/", "").replace("Version: 13", "Version: 8");
    let (status_line, headers, _) = http(addr, &version);
    assert_eq!(status_line, "HTTP/1.1 426 Upgrade Required");
    assert!(headers.contains(&"Sec-WebSocket-Version: 13".to_string()));
    let no_key =
        upgrade_request(addr, "/", "").replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "");
    assert_eq!(http(addr, &no_key).0, "HTTP/1.1 400 Bad Request");

    let mut config = ServerConfig::default();
    config.ws_origins = "https://chat.example".parse().unwrap();
    let wide = TestServer::start_with(config, &["echo:ws=127.0.0.1:0"]);
    let origin = |origin: &str| {
        http(wide.addr(), &upgrade_request(wide.addr(), "/", &format!("Origin: {origin}\r\n"))).0
    };
    assert_eq!(origin("https://chat.example"), "HTTP/1.1 101 Switching Protocols");
    assert_eq!(origin("https://evil.example"), "HTTP/1.1 403 Forbidden");
}

/// Echo over WebSocket: text and binary messages come back in frames of their kind, a
/// message in fragments with a ping between them comes back whole (the ping answered
/// first), and a close is answered with the same code.
#[test]
fn echo_frames_fragments_and_control_frames() {
    let server = TestServer::start(&["echo:ws=127.0.0.1:0"]);
    let mut client = WsClient::connect(server.addr());
    client.send_text("hello");
    assert_eq!(client.text(), "hello");
    client.send_frame(0x82, &[0, 159, 146, 150], true);
    let frame = client.frame();
    assert_eq!((frame.opcode, frame.payload), (0x2, vec![0, 159, 146, 150]));
    client.send_frame(0x01, b"frag", true);
    client.send_frame(0x89, b"are you there", true);
    client.send_frame(0x00, b"men", true);
    client.send_frame(0x80, b"ted", true);
    let pong = client.frame();
    assert_eq!((pong.opcode, pong.text()), (0xA, "are you there".to_string()));
    assert_eq!(client.text(), "fragmented");
    client.send_frame(0x88, &[0x03, 0xe8, b'b', b'y', b'e'], true);
    client.expect_close(1000);
    let stats = server.wait_for("the close", |stats| stats.connections_closed == 1);
    assert_eq!(stats.messages_in, 3);
}

/// What a client gets wrong closes it with the RFC's code: 1002 for protocol errors, 1007
/// for text that is not UTF-8 (at the first bad byte, before the frame is even complete),
/// 1009 for a message over --max-frame (at its header).
#[test]
fn protocol_errors_close_with_their_codes() {
    let mut config = ServerConfig::default();
    config.max_frame = 1000;
    let server = TestServer::start_with(config, &["echo:ws=127.0.0.1:0"]);
    let addr = server.addr();
    // (what, the frame's first byte, its payload, masked, the code expected)
    let cases: [(&str, u8, &[u8], bool, u16); 9] = [
        ("unmasked", 0x81, b"hi", false, 1002),
        ("reserved bits", 0xC1, b"hi", true, 1002),
        ("reserved opcode", 0x83, b"", true, 1002),
        ("fragmented ping", 0x09, b"", true, 1002),
        ("long ping", 0x89, &[b'x'; 126], true, 1002),
        ("stray continuation", 0x80, b"x", true, 1002),
        ("close code 1005", 0x88, &[0x03, 0xed], true, 1002),
        ("one-byte close", 0x88, &[0x03], true, 1002),
        ("bad UTF-8", 0x81, &[b'a', 0xff, b'b'], true, 1007),
    ];
    for (name, first, payload, masked, code) in cases {
        let mut client = WsClient::connect(addr);
        client.send_frame(first, payload, masked);
        let frame = client.frame();
        assert_eq!(frame.close_code(), code, "{name}: {:?}", String::from_utf8_lossy(&frame.payload[2..]));
    }
    // Too big: the header alone, and the server refuses before the payload comes.
    let mut client = WsClient::connect(addr);
    client.send_raw(&[0x82, 0x80 | 126, 0x03, 0xe9, 1, 2, 3, 4]);
    assert_eq!(client.frame().close_code(), 1009);
    // Fail fast: an invalid sequence in the first part of a text frame whose rest never comes.
    let mut client = WsClient::connect(addr);
    client.send_raw(&[0x81, 0x80 | 100, 0, 0, 0, 0, 0xce, 0xba, 0xf4, 0x90]);
    assert_eq!(client.frame().close_code(), 1007);
}

/// A room mixes codecs: a WebSocket client and a line client of the same room (two
/// listeners, one room) each get the other's lines, framed for their own codec.
#[test]
fn a_room_of_websocket_and_line_clients() {
    let server = TestServer::start(&["broadcast=127.0.0.1:0", "broadcast:ws=127.0.0.1:0"]);
    let (line_addr, ws_addr) = (server.addr_of(0), server.addr_of(1));
    let mut browser = WsClient::connect(ws_addr);
    let mut terminal = connect(line_addr);
    server.wait_for("both served", |stats| stats.connections_open == 2 && stats.connections_preparing == 0);
    browser.send_text("hello from the browser");
    let line = terminal.line();
    assert!(line.ends_with(": hello from the browser"), "{line}");
    terminal.send_line("hello from nc");
    let text = browser.text();
    assert_eq!(text, format!("{}: hello from nc", terminal.local_addr()));
}

/// A WebSocket connection is not in its room before its handshake: it hears nothing, and
/// it is cut at --handshake-timeout.
#[test]
fn no_room_line_before_the_handshake() {
    let mut config = ServerConfig::default();
    config.handshake_timeout = Duration::from_millis(300);
    let server = TestServer::start_with(config, &["broadcast=127.0.0.1:0", "broadcast:ws=127.0.0.1:0"]);
    let mut half = std::net::TcpStream::connect(server.addr_of(1)).unwrap();
    half.set_read_timeout(Some(util::READ_TIMEOUT)).unwrap();
    std::io::Write::write_all(&mut half, b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n").unwrap();
    let mut listener = connect(server.addr_of(0));
    let mut sender = connect(server.addr_of(0));
    server.wait_for("one preparing", |stats| stats.connections_preparing == 1 && stats.connections_open == 3);
    sender.send_line("not for the half-open one");
    listener.expect(&format!("{}: not for the half-open one", sender.local_addr()));
    let mut rest = Vec::new();
    let _ = half.read_to_end(&mut rest);
    assert!(rest.is_empty(), "a connection before its handshake got {:?}", String::from_utf8_lossy(&rest));
    server.wait_for("cut at its deadline", |stats| stats.closed_handshake_timeout == 1);
}

/// Keepalive: a client that answers pings stays; one that does not is closed with 1001
/// after two intervals of silence.
#[test]
fn quiet_clients_are_pinged_and_the_silent_closed() {
    let mut config = ServerConfig::default();
    config.ws_ping = Some(Duration::from_millis(200));
    let server = TestServer::start_with(config, &["echo:ws=127.0.0.1:0"]);
    let mut answering = WsClient::connect(server.addr());
    let mut silent = WsClient::connect(server.addr());
    // The answering client answers every ping, on a thread of its own, and hands on the rest.
    let (texts, received) = std::sync::mpsc::channel();
    let mut answering_reader = WsClient::from_stream(answering.stream().try_clone().unwrap());
    let answerer = std::thread::spawn(move || {
        let mut pings = 0;
        loop {
            let frame = answering_reader.frame();
            match frame.opcode {
                0x9 => {
                    pings += 1;
                    answering_reader.send_frame(0x8A, &frame.payload, true);
                }
                0x1 => {
                    texts.send(frame.text()).unwrap();
                    return pings;
                }
                other => panic!("the answering client got opcode {other}: {frame:?}"),
            }
        }
    });
    assert_eq!(silent.frame().opcode, 0x9, "the silent one is pinged");
    silent.expect_close(1001);
    drop(silent);
    let stats = server.wait_for("the silent one closed", |stats| stats.closed_ping_timeout == 1);
    assert_eq!(stats.connections_open, 1);
    answering.send_text("still here");
    assert_eq!(received.recv_timeout(util::READ_TIMEOUT).unwrap(), "still here");
    assert!(answerer.join().unwrap() >= 1, "the answering one was pinged too");
}

/// Shutting down, the server says going away (1001) to WebSocket clients before it closes.
#[test]
fn the_drain_says_going_away() {
    let server = TestServer::start(&["echo:ws=127.0.0.1:0"]);
    let mut client = WsClient::connect(server.addr());
    client.send_text("last words");
    assert_eq!(client.text(), "last words");
    let stopping = std::thread::spawn(move || server.stop());
    client.expect_close(1001);
    stopping.join().unwrap();
}

/// A room member that does not read is closed with a close frame (1008), not cut: the
/// others carry on.
#[test]
fn a_slow_member_is_closed_with_a_close_frame() {
    let mut config = ServerConfig::default();
    config.max_output = 64 * 1024;
    let server = TestServer::start_with(config, &["broadcast:ws=127.0.0.1:0"]);
    let slow = WsClient::connect(server.addr());
    let mut sender = WsClient::connect(server.addr());
    server.wait_for("both served", |stats| stats.connections_open == 2 && stats.connections_preparing == 0);
    let line = "x".repeat(1000);
    // Enough to fill the slow member's socket buffers and then its output past the limit.
    let mut sent = 0;
    while server.stats().slow_consumers == 0 {
        sender.send_text(&line);
        sent += 1;
        assert!(sent < 100_000, "the slow member was never found slow");
    }
    // Lines after it was told are not for it.
    for _ in 0..10 {
        sender.send_text("after the close");
    }
    // Now it reads: the lines queued for it, then the close, and nothing after.
    let mut slow = slow;
    let mut lines = 0;
    loop {
        let frame = slow.frame();
        if frame.opcode == 0x8 {
            assert_eq!(frame.close_code(), 1008);
            break;
        }
        assert_eq!(frame.text(), format!("{}: {line}", sender.stream().local_addr().unwrap()));
        lines += 1;
    }
    assert!(lines > 0 && lines <= sent, "{lines} of {sent} lines before the close");
    slow.expect_end();
    let stats = server.wait_for("the slow member gone", |stats| stats.closed_slow == 1);
    assert_eq!(stats.connections_open, 1, "the sender carries on");
    sender.send_text("still here");
}

/// A server full turns a WebSocket client away with an HTTP 503 (its handshake has not
/// happened), not a stray line.
#[test]
fn a_full_server_answers_503() {
    let mut config = ServerConfig::default();
    config.max_connections = Some(1);
    let server = TestServer::start_with(config, &["echo:ws=127.0.0.1:0"]);
    let _first = WsClient::connect(server.addr());
    let (status, _, _) = http(server.addr(), &upgrade_request(server.addr(), "/", ""));
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
}

/// Runs tests/ws/websockets_client.py `mode` against `url`; asserts each of `checks`.
#[track_caller]
fn python_client(mode: &str, url: &str, checks: &[&str]) {
    let output = std::process::Command::new(util::venv_python())
        .args(["tests/ws/websockets_client.py", mode, url])
        .output()
        .expect("target/venv/bin/python (scripts/test makes it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    for check in checks {
        assert!(stdout.lines().any(|line| line == *check), "missing {check:?} in:\n{stdout}");
    }
}

/// Python's `websockets` (a real client library, in target/venv): text and binary echo, a
/// 1 MiB message sent in 64 KiB fragments, the close codes a client sees, and
/// permessage-deflate as the library offers it by default.
#[test]
fn pythons_websockets_client() {
    let mut config = ServerConfig::default();
    config.max_frame = 2 * 1024 * 1024;
    let server = TestServer::start_with(config, &["echo:ws=127.0.0.1:0"]);
    let checks = ["text ok", "binary ok", "1 MiB in fragments ok", "close 1000 ok", "deflate ok"];
    python_client("echo", &format!("ws://{}/", server.addr()), &checks);
}

/// A room where one member compresses and another does not: each line is framed once for
/// each, and both get each other's lines.
#[test]
fn a_room_of_compressed_and_plain_members() {
    let server = TestServer::start(&["broadcast:ws=127.0.0.1:0"]);
    python_client("room", &format!("ws://{}/", server.addr()), &["room of compressed and plain members ok"]);
}

/// A client that sends its close frame and closes its socket without waiting for the
/// server's answer (what a browser tab does) is a client leaving, not an error: counted as
/// closed by the client, whether the server's answer or its FIN meets a socket the client
/// already reset. (Before, 4 in 5 such closes were counted and logged as errors: the
/// server's shutdown found the connection gone, `ENOTCONN`.)
#[test]
fn a_close_without_waiting_is_the_client_leaving() {
    let server = TestServer::start(&["echo:ws=127.0.0.1:0"]);
    let closes = 20;
    for _ in 0..closes {
        let mut client = WsClient::connect(server.addr());
        client.send_text("bye now");
        assert_eq!(client.text(), "bye now");
        client.send_frame(0x88, &[0x03, 0xe8], true);
        drop(client);
    }
    let stats = server.wait_for("every close", |stats| stats.connections_closed == closes);
    assert_eq!((stats.closed_error, stats.closed_by_client + stats.closed_other), (0, closes), "{stats:?}");
}
