//! The console (`--listen console=ADDR`): its page, and the JSON stream at `/live`: a
//! snapshot on connect and every second, a turn for each wakeup that served a client (in
//! the order served), `skipped` when turns come faster than a watcher is sent them; the
//! console's own connections in none of it.

mod util;

use util::ws::{WsClient, http};
use util::{TestServer, connect};

/// `GET /` is the console page; `/live` upgrades and starts with a snapshot, in which the
/// watcher itself is not listed.
#[test]
fn the_page_and_a_first_snapshot() {
    let server = TestServer::start(&["echo=127.0.0.1:0", "console=127.0.0.1:0"]);
    let (status, headers, mut page) = http(server.addr_of(1), "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(headers.iter().any(|header| header == "Content-Type: text/html; charset=utf-8"), "{headers:?}");
    let mut body = String::new();
    std::io::Read::read_to_string(&mut page, &mut body).unwrap();
    assert!(body.contains("evloop console") && body.contains("/live"), "the console page");
    let _client = connect(server.addr_of(0));
    server.wait_for("the client", |stats| stats.connections_open == 1);
    let mut watcher = WsClient::connect_path(server.addr_of(1), "/live");
    let snapshot = watcher.json();
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["model"], "reactor");
    let connections = snapshot["connections"].as_array().unwrap();
    assert_eq!(connections.len(), 1, "the echo client, not the watcher: {snapshot}");
    let client = &connections[0];
    for field in [
        "conn",
        "peer",
        "handler",
        "codec",
        "transport",
        "state",
        "messages",
        "bytes_in",
        "bytes_out",
        "waiting",
    ] {
        assert!(!client[field].is_null(), "{field} in {client}");
    }
    assert_eq!(
        (&client["handler"], &client["codec"], &client["state"]),
        (&"echo".into(), &"line".into(), &"ready".into())
    );
    let figures = &snapshot["loop"];
    for field in [
        "turns_per_second",
        "events_per_turn",
        "turn_us",
        "blocked_ms_per_second",
        "connections",
        "client_memory",
        "evictions",
    ] {
        assert!(!figures[field].is_null(), "{field} in {figures}");
    }
}

/// Two clients taking turns: each turn names the client it served, in order, with what it
/// got done; turns are numbered upwards; the next snapshot has their counts.
#[test]
fn turns_show_the_clients_taking_turns() {
    let server = TestServer::start(&["echo=127.0.0.1:0", "console=127.0.0.1:0"]);
    let mut watcher = WsClient::connect_path(server.addr_of(1), "/live");
    watcher.next_of("snapshot");
    let (mut first, mut second) = (connect(server.addr_of(0)), connect(server.addr_of(0)));
    let (first_port, second_port) = (first.local_addr().port(), second.local_addr().port());
    for round in 0..5 {
        first.roundtrip(&format!("a {round}"), &format!("a {round}"));
        second.roundtrip(&format!("b {round}"), &format!("b {round}"));
    }
    let mut served = Vec::new();
    let mut last_turn = 0;
    while served.len() < 10 {
        let turn = watcher.next_of("turn");
        let number = turn["turn"].as_u64().unwrap();
        assert!(number > last_turn, "turns numbered upwards: {number} after {last_turn}");
        last_turn = number;
        for entry in turn["served"].as_array().unwrap() {
            assert_eq!(
                (entry["messages"].as_u64(), entry["bytes_in"].as_u64()),
                (Some(1), Some(4)),
                "{turn}"
            );
            served.push(entry["conn"].as_u64().unwrap());
        }
    }
    let (a, b) = (served[0], served[1]);
    assert_ne!(a, b);
    assert_eq!(served, [a, b, a, b, a, b, a, b, a, b], "the two clients, in the order served");
    let snapshot = watcher.next_of("snapshot");
    let connections = snapshot["connections"].as_array().unwrap();
    for (conn, port) in [(a, first_port), (b, second_port)] {
        let entry = connections.iter().find(|entry| entry["conn"] == conn).expect("listed");
        assert_eq!(entry["peer"], format!("127.0.0.1:{port}"), "the peer as the client sees itself");
        assert_eq!(entry["messages"], 5);
    }
}

/// Turns faster than a watcher is sent them are counted, not lost: `skipped` says how many.
#[test]
fn a_flood_of_turns_is_skipped_and_said() {
    let server = TestServer::start(&["echo=127.0.0.1:0", "console=127.0.0.1:0"]);
    let mut watcher = WsClient::connect_path(server.addr_of(1), "/live");
    watcher.next_of("snapshot");
    let mut client = connect(server.addr_of(0));
    for round in 0..3000 {
        client.roundtrip(&format!("{round}"), &format!("{round}"));
    }
    let (mut turns, mut skipped, mut last_turn) = (0, 0, 0);
    while turns + skipped < 3000 {
        let message = watcher.json();
        match message["type"].as_str().unwrap() {
            "turn" => {
                let number = message["turn"].as_u64().unwrap();
                assert!(number > last_turn);
                last_turn = number;
                turns += message["served"].as_array().unwrap().len() as u64;
            }
            "skipped" => skipped += message["turns"].as_u64().unwrap(),
            _ => {}
        }
    }
    assert!(skipped > 0, "3,000 turns in well under 6 s pass the cap of 500 a second");
    assert_eq!(turns + skipped, 3000, "every turn sent or counted");
}
