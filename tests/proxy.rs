//! Behind a real HAProxy (`send-proxy-v2`, installed by scripts/test): the clients' own
//! addresses reach the server (the broadcast prefix names them, not the balancer), echo is
//! spread over two servers, and a connection without a PROXY header is closed unserved.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

use util::haproxy::Haproxy;
use util::{ServerProcess, connect, server_command};

/// Broadcast through HAProxy: each line carries its sender's own address.
#[test]
fn broadcast_lines_carry_the_clients_addresses() {
    let server =
        ServerProcess::start(server_command(&["--proxy-protocol", "--listen", "broadcast=127.0.0.1:0"]), 1);
    let haproxy = Haproxy::start("broadcast", &server.addrs);
    let (mut alice, mut bob) = (connect(haproxy.addr()), connect(haproxy.addr()));
    // Until both are in the room, lines may reach nobody: alice repeats until bob hears.
    let alice_name = alice.local_addr();
    let mut heard = String::new();
    for attempt in 0..200 {
        alice.send_line(&format!("hello {attempt}"));
        if bob.has_data_within(std::time::Duration::from_millis(50)) {
            heard = bob.line();
            break;
        }
    }
    assert!(heard.starts_with(&format!("{alice_name}: hello ")), "{heard:?} should name {alice_name}");
}

/// Echo through HAProxy over two servers: every reply right, and both servers used.
#[test]
fn echo_is_spread_over_two_servers() {
    let servers: Vec<ServerProcess> = (0..2)
        .map(|_| {
            ServerProcess::start(server_command(&["--proxy-protocol", "--listen", "echo=127.0.0.1:0"]), 1)
        })
        .collect();
    let backends: Vec<SocketAddr> = servers.iter().map(|server| server.addrs[0]).collect();
    let haproxy = Haproxy::start("echo", &backends);
    for index in 0..20 {
        connect(haproxy.addr()).roundtrip(&format!("ping {index}"), &format!("ping {index}"));
    }
    let mut served = Vec::new();
    for server in servers {
        server.signal(libc::SIGTERM);
        let (code, stdout) = server.wait();
        assert_eq!(code, Some(0));
        let messages: u64 =
            stdout.split(" messages in").next().unwrap().rsplit(' ').next().unwrap().parse().unwrap();
        served.push(messages);
    }
    assert!(served.iter().all(|&count| count >= 5), "both servers served: {served:?}");
    assert_eq!(served.iter().sum::<u64>(), 20);
}

/// A client that connects straight to a --proxy-protocol server (no header) is closed
/// without an answer; a header names the client for the rest of the connection.
#[test]
fn no_header_no_service() {
    let server =
        ServerProcess::start(server_command(&["--proxy-protocol", "--listen", "echo=127.0.0.1:0"]), 1);
    let mut direct = TcpStream::connect(server.addrs[0]).unwrap();
    direct.set_read_timeout(Some(util::READ_TIMEOUT)).unwrap();
    direct.write_all(b"hello\n").unwrap();
    let mut reply = Vec::new();
    let _ = direct.read_to_end(&mut reply);
    assert!(reply.is_empty(), "answered without a header: {reply:?}");

    let mut proxied = TcpStream::connect(server.addrs[0]).unwrap();
    proxied.set_read_timeout(Some(util::READ_TIMEOUT)).unwrap();
    proxied.write_all(b"PROXY TCP4 192.0.2.7 127.0.0.1 51234 7000\r\nhello\n").unwrap();
    let mut line = String::new();
    BufReader::new(proxied).read_line(&mut line).unwrap();
    assert_eq!(line, "hello\n");
}

/// A connection whose PROXY header has not come is not served: it hears no room line (it
/// used to hear every one, with the real senders' addresses), it is counted as preparing,
/// not served, and once its header comes it is served like the others.
#[test]
fn a_connection_without_its_header_hears_nothing() {
    let mut config = evloop::ServerConfig::default();
    config.proxy_protocol = true;
    let server = util::TestServer::start_with(config, &["broadcast=127.0.0.1:0"]);
    let addr = server.addr();
    let mut silent = connect(addr);
    let mut listener = connect(addr);
    listener.send(b"PROXY TCP4 10.0.0.9 10.0.0.2 9999 2222\r\n");
    let mut sender = connect(addr);
    sender.send(b"PROXY TCP4 10.0.0.1 10.0.0.2 1111 2222\r\n");
    let stats = server.wait_for("two served, one preparing", |stats| {
        stats.connections_open == 3 && stats.connections_preparing == 1
    });
    assert_eq!(stats.connections_accepted, 3);
    sender.send_line("secret room line");
    // Written to every member in one pass: by the time the listener has it, a member
    // that was going to get it has it too.
    listener.expect("10.0.0.1:1111: secret room line");
    assert!(
        !silent.has_data_within(std::time::Duration::from_millis(100)),
        "a connection without its header heard the room"
    );
    silent.send(b"PROXY TCP4 10.0.0.3 10.0.0.2 3333 2222\r\n");
    server.wait_for("all three served", |stats| stats.connections_preparing == 0);
    sender.send_line("second line");
    listener.expect("10.0.0.1:1111: second line");
    silent.expect("10.0.0.1:1111: second line");
}

/// A connection that never sends its PROXY header is closed at --handshake-timeout, and
/// counted apart.
#[test]
fn a_connection_that_never_gets_ready_is_cut_off() {
    let mut config = evloop::ServerConfig::default();
    config.proxy_protocol = true;
    config.handshake_timeout = std::time::Duration::from_millis(200);
    let server = util::TestServer::start_with(config, &["echo=127.0.0.1:0"]);
    let started = std::time::Instant::now();
    let mut silent = connect(server.addr());
    silent.expect_closed();
    assert!(started.elapsed() >= std::time::Duration::from_millis(200), "closed before its time");
    let stats = server.wait_for("the close counted", |stats| stats.closed_handshake_timeout == 1);
    assert_eq!((stats.connections_preparing, stats.messages_in), (0, 0));
}
