//! `--max-client-memory`: what all clients hold together stays within the budget; past it
//! the biggest holders are evicted, each told in its protocol and counted, while honest
//! clients are served the whole time. And `--max-connections-per-ip`.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use evloop::ServerConfig;
use util::ws::WsClient;
use util::{ServerProcess, TestServer, connect, server_command};

const EVICTED: &str = "ERR evicted: the server's memory for clients is full";

/// A client that sends `bytes` bytes of a line it never ends.
fn unfinished_line(addr: SocketAddr, bytes: usize) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(util::READ_TIMEOUT)).unwrap();
    stream.write_all(&vec![b'x'; bytes]).unwrap();
    stream
}

/// Reads what is left on `stream` up to its end.
fn rest_of(stream: &mut TcpStream) -> String {
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    String::from_utf8_lossy(&rest).into_owned()
}

/// Over the budget, the client holding most goes first and alone when that is enough: it
/// is told why, and the others keep their unfinished lines and are served.
#[test]
fn the_biggest_holder_is_evicted_first() {
    let mut config = ServerConfig::default();
    config.max_client_memory = 1 << 20;
    config.max_frame = 1 << 20;
    let server = TestServer::start_with(config, &["echo=127.0.0.1:0"]);
    let mut small = unfinished_line(server.addr(), 100_000);
    let mut medium = unfinished_line(server.addr(), 300_000);
    server.wait_for("both held", |stats| stats.client_memory >= 400_000);
    let mut big = unfinished_line(server.addr(), 700_000);
    assert_eq!(rest_of(&mut big), format!("{EVICTED}\n"));
    let stats = server.wait_for("the eviction closed", |stats| stats.closed_evicted == 1);
    assert_eq!(stats.clients_evicted, 1, "only the biggest: {stats:?}");
    assert!(stats.client_memory <= 1 << 20, "{stats:?}");
    for (client, length) in [(&mut small, 100_000), (&mut medium, 300_000)] {
        client.write_all(b"\n").unwrap();
        let mut line = String::new();
        BufReader::new(client).read_line(&mut line).unwrap();
        assert_eq!(line.len(), length + 1, "its line, served whole");
    }
}

/// The RSS of process `pid`, in bytes.
fn rss(pid: i32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 1024
}

/// `evloop_client_memory_bytes` from a scrape of the metrics listener at `addr`.
fn scrape_client_memory(addr: SocketAddr) -> usize {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(util::READ_TIMEOUT)).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let text = rest_of(&mut stream);
    let line = text.lines().find(|line| line.starts_with("evloop_client_memory_bytes ")).expect("the gauge");
    line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() as usize
}

/// The attack of the issue, on the real binary: 12,000 connections each sending 60 KB of a
/// line with no newline, against `--max-client-memory 64M`, while 20 honest echo clients
/// verify every reply. The server's RSS grows by at most the budget and a fixed overhead,
/// the gauge is never over the budget at a scrape, and every evicted client is told.
#[test]
fn an_attack_of_unfinished_lines_stays_within_the_budget() {
    const BUDGET: usize = 64 << 20;
    let args =
        ["--listen", "echo=127.0.0.1:0", "--listen", "metrics=127.0.0.1:0", "--max-client-memory", "64M"];
    let server = ServerProcess::start(server_command(&args), 2);
    let (echo, metrics, pid) = (server.addrs[0], server.addrs[1], server.pid());
    let before = rss(pid);
    let attacking = Arc::new(AtomicBool::new(true));
    let honest: Vec<_> = (0..20)
        .map(|index| {
            let attacking = attacking.clone();
            std::thread::spawn(move || {
                let mut client = connect(echo);
                let mut replies = 0;
                while attacking.load(Ordering::Relaxed) || replies < 10 {
                    client.roundtrip(
                        &format!("honest {index} {replies}"),
                        &format!("honest {index} {replies}"),
                    );
                    replies += 1;
                }
                replies
            })
        })
        .collect();
    let watching = attacking.clone();
    let watcher = std::thread::spawn(move || {
        let (mut peak, mut scrapes, mut over) = (0, 0, Vec::new());
        while watching.load(Ordering::Relaxed) {
            peak = peak.max(rss(pid));
            let gauge = scrape_client_memory(metrics);
            if gauge > BUDGET {
                over.push(gauge);
            }
            scrapes += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        (peak, scrapes, over)
    });
    let started = Instant::now();
    let mut attackers = Vec::new();
    for _ in 0..12_000 {
        let mut stream = TcpStream::connect(echo).unwrap();
        stream.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        // An evicted attacker may find its connection gone before it is done sending.
        let _ = stream.write_all(&[b'x'; 60_000]);
        attackers.push(stream);
    }
    let mut told = 0;
    for stream in &mut attackers {
        stream.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
        let mut answer = [0u8; 64];
        if let Ok(n) = stream.read(&mut answer) {
            told += usize::from(answer[..n].starts_with(EVICTED.as_bytes()));
        }
    }
    attacking.store(false, Ordering::Relaxed);
    let (peak, scrapes, over) = watcher.join().unwrap();
    for client in honest {
        assert!(client.join().unwrap() >= 10, "every honest client was served throughout");
    }
    let grown = peak.saturating_sub(before);
    println!(
        "attack: {:.1} s, RSS {} -> peak {} MiB (grew {} MiB), {scrapes} scrapes, {told} attackers told",
        started.elapsed().as_secs_f64(),
        before >> 20,
        peak >> 20,
        grown >> 20
    );
    assert!(over.is_empty(), "the gauge passed the budget at a scrape: {over:?}");
    assert!(grown <= BUDGET + (48 << 20), "RSS grew by {} MiB", grown >> 20);
    assert!(told > 10_000, "the evicted attackers were told: {told}");
    drop(attackers);
    server.signal(libc::SIGTERM);
    let (code, summary) = server.wait();
    assert_eq!(code, Some(0), "{summary}");
}

/// WebSocket clients each holding an unfinished fragmented message are counted the same
/// way: past the budget the biggest are closed with 1013 (try again later), and an honest
/// WebSocket client is served.
#[test]
fn unfinished_websocket_messages_are_counted() {
    let mut config = ServerConfig::default();
    config.max_client_memory = 2 << 20;
    config.max_frame = 1 << 20;
    let server = TestServer::start_with(config, &["echo:ws=127.0.0.1:0"]);
    let mut holders: Vec<WsClient> = (0..60)
        .map(|_| {
            let mut client = WsClient::connect(server.addr());
            client.send_frame(0x01, &[b'x'; 60_000], true);
            client
        })
        .collect();
    let stats = server.wait_for("evictions", |stats| stats.clients_evicted > 0 && stats.closed_evicted > 0);
    assert!(stats.client_memory <= 2 << 20, "{stats:?}");
    let mut closed = 0;
    for client in &mut holders {
        if client.has_data_within(Duration::from_millis(1)) {
            client.expect_close(1013);
            closed += 1;
        }
    }
    assert!(closed > 0 && closed < 60, "some, not all, were evicted: {closed} {:?}", server.stats());
    let mut honest = WsClient::connect(server.addr());
    honest.send_text("still served");
    assert_eq!(honest.text(), "still served");
}

/// A room whose members never read: what the room sends them waits in their output, which
/// counts too; past the budget the biggest holders go, while the members who read get every
/// line, in order.
#[test]
fn a_room_of_members_who_never_read() {
    let mut config = ServerConfig::default();
    config.max_client_memory = 4 << 20;
    let server = TestServer::start_with(config, &["broadcast=127.0.0.1:0"]);
    // Each silent member's kernel buffers take a few MB before anything waits in the server:
    // 8 MB for each makes sure something does.
    let silent = silent_members(&server, 50);
    let readers: Vec<_> = (0..5).map(|_| connect(server.addr())).collect();
    let mut sender = connect(server.addr());
    server.wait_for("everyone in the room", |stats| stats.connections_open == 56);
    let lines = 8_000;
    // Every reader reads on its own thread, as a client that keeps up does, and the sender
    // keeps within 200 lines of the slowest reader (a chat, not a flood).
    let progress: Arc<Vec<std::sync::atomic::AtomicUsize>> =
        Arc::new((0..5).map(|_| std::sync::atomic::AtomicUsize::new(0)).collect());
    let reading: Vec<_> = readers
        .into_iter()
        .enumerate()
        .map(|(index, mut reader)| {
            let progress = progress.clone();
            std::thread::spawn(move || {
                for expected in 0..lines {
                    let line = reader.line();
                    let (_, text) = line.split_once(": ").unwrap_or_else(|| panic!("reader {index}: {line}"));
                    assert_eq!(
                        text.split_once(' ').unwrap().0,
                        expected.to_string(),
                        "reader {index}: in order"
                    );
                    progress[index].store(expected + 1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let padding = "p".repeat(1000);
    for index in 0..lines {
        let started = Instant::now();
        while progress.iter().map(|read| read.load(Ordering::Relaxed)).min().unwrap() + 200 < index {
            assert!(started.elapsed() < util::READ_TIMEOUT, "the readers stalled: {:?}", server.stats());
            std::thread::sleep(Duration::from_micros(200));
        }
        sender.send_line(&format!("{index} {padding}"));
    }
    for reader in reading {
        reader.join().expect("every reader got every line, in order");
    }
    let stats = server.stats();
    assert!(stats.clients_evicted > 0, "silent members were evicted: {stats:?}");
    assert!(stats.client_memory <= 4 << 20, "{stats:?}");
    drop(silent);
}

/// `--max-connections-per-ip 3`: a fourth connection from one address is told and closed;
/// another address, or the same once one closed, is served.
#[test]
fn connections_per_address_are_limited() {
    let mut config = ServerConfig::default();
    config.max_connections_per_ip = Some(3);
    let server = TestServer::start_with(config, &["echo=127.0.0.1:0"]);
    let mut first: Vec<_> = (0..3).map(|_| connect(server.addr())).collect();
    for client in &mut first {
        client.roundtrip("in", "in");
    }
    let mut fourth = connect(server.addr());
    fourth.expect("ERR too many connections from your address");
    fourth.expect_closed();
    let other = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    other.bind(&"127.0.0.2:0".parse::<SocketAddr>().unwrap().into()).unwrap();
    other.connect(&server.addr().into()).unwrap();
    let mut other: TcpStream = other.into();
    other.set_read_timeout(Some(util::READ_TIMEOUT)).unwrap();
    other.write_all(b"from elsewhere\n").unwrap();
    let mut line = String::new();
    BufReader::new(&other).read_line(&mut line).unwrap();
    assert_eq!(line, "from elsewhere\n");
    drop(first.pop());
    server.wait_for("one closed", |stats| stats.connections_closed >= 2);
    let mut again = connect(server.addr());
    again.roundtrip("back in", "back in");
    assert_eq!(server.stats().connections_rejected, 1);
}

/// Over TLS the same: clients holding unfinished lines (their plaintext kept, their records
/// decrypted) are counted and the biggest evicted, told over TLS.
#[test]
fn unfinished_lines_over_tls_are_counted() {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let files = util::tls::TlsFiles::new("budget");
    let mut config = files.config();
    config.max_client_memory = 1 << 20;
    let server = TestServer::start_with(config, &["echo=tls://127.0.0.1:0"]);
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&files.cert).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client_config = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let connect_tls = || {
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let session = rustls::ClientConnection::new(client_config.clone(), name).unwrap();
        let stream = TcpStream::connect(server.addr()).unwrap();
        stream.set_read_timeout(Some(util::READ_TIMEOUT)).unwrap();
        rustls::StreamOwned::new(session, stream)
    };
    let mut holders: Vec<_> = (0..30)
        .map(|_| {
            let mut client = connect_tls();
            client.write_all(&[b'x'; 60_000]).unwrap();
            client
        })
        .collect();
    let stats = server.wait_for("evictions", |stats| stats.clients_evicted > 0);
    assert!(stats.client_memory <= 1 << 20, "{stats:?}");
    let mut told = 0;
    for client in &mut holders {
        client.sock.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut answer = [0u8; 128];
        if let Ok(n) = client.read(&mut answer) {
            told += usize::from(answer[..n].starts_with(EVICTED.as_bytes()));
        }
    }
    assert!(told > 0 && told < 30, "some, not all, told over TLS: {told}");
    let mut honest = connect_tls();
    honest.write_all(b"still served\n").unwrap();
    let mut line = String::new();
    BufReader::new(&mut honest).read_line(&mut line).unwrap();
    assert_eq!(line, "still served\n");
}

/// Members who never read, flooded by an unpaced sender: once evicted they get no more room
/// lines, and are cut when they do not read their notice, so what they held is freed and the
/// clients end within the budget. (Before, evicted members went on receiving lines and
/// stayed open, holding several times the budget.)
#[test]
fn evicted_members_who_never_read_go() {
    let mut config = ServerConfig::default();
    config.max_client_memory = 4 << 20;
    let server = TestServer::start_with(config, &["broadcast=127.0.0.1:0"]);
    let silent = silent_members(&server, 50);
    let sender = connect(server.addr());
    server.wait_for("everyone in the room", |stats| stats.connections_open == 51);
    let line = format!("{}\n", "p".repeat(1000));
    let mut stream = sender.stream();
    for _ in 0..4000 {
        if stream.write_all(line.as_bytes()).is_err() {
            break;
        }
    }
    let stats = server.wait_for("the evicted gone and memory back within the budget", |stats| {
        stats.clients_evicted > 0
            && stats.closed_evicted >= stats.clients_evicted
            && stats.client_memory <= 4 << 20
    });
    assert!(stats.client_memory <= 4 << 20, "{stats:?}");
    drop(silent);
}

/// Many clients over the budget in one wakeup: eviction frees just enough. Each evicted
/// client's notice must not hold what it was evicted for (its input buffer, handed back
/// through the pool), or the count stays high and more are evicted than the budget needs.
/// (Before, 40 clients of 60 KB against 1 MiB kept 0 and 10 in two runs of three, where
/// the policy keeps 14.)
#[test]
fn eviction_frees_just_enough() {
    const CLIENTS: usize = 40;
    const HELD: usize = 60_000;
    let mut config = ServerConfig::default();
    config.max_client_memory = 1 << 20;
    let server = TestServer::start_with(config, &["echo=127.0.0.1:0"]);
    let mut clients: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| {
            let stream = TcpStream::connect(server.addr()).unwrap();
            stream.set_read_timeout(Some(util::READ_TIMEOUT)).unwrap();
            stream
        })
        .collect();
    server.wait_for("all connected", |stats| stats.connections_open == CLIENTS);
    // All at once, so the server finds many of them readable in one wakeup.
    for client in &mut clients {
        client.write_all(&vec![b'x'; HELD]).unwrap();
    }
    server.wait_for("the evicted gone and the rest within the budget", |stats| {
        stats.clients_evicted > 0
            && stats.closed_evicted >= stats.clients_evicted
            && stats.client_memory <= 1 << 20
    });
    let mut kept = 0;
    for client in &mut clients {
        let _ = client.write_all(b"\n");
        let mut line = String::new();
        BufReader::new(&mut *client).read_line(&mut line).unwrap();
        if line.len() == HELD + 1 {
            kept += 1;
        } else {
            assert_eq!(line, format!("{EVICTED}\n"));
        }
    }
    // Each holds its line in a buffer of 64 KiB: seven eighths of the budget is 14 of them,
    // and the budget itself 16.
    assert!((13..=16).contains(&kept), "{kept} of {CLIENTS} kept");
}

/// `count` members who never read, with receive buffers of 4 KB, so what the room sends
/// them soon waits in the server.
fn silent_members(server: &TestServer, count: usize) -> Vec<TcpStream> {
    (0..count)
        .map(|_| {
            let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            socket.set_recv_buffer_size(4096).unwrap();
            socket.connect(&server.addr().into()).unwrap();
            socket.into()
        })
        .collect()
}
