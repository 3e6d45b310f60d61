//! The console under `--model` (`--listen console=ADDR`): the loops (`select`, `poll`)
//! stream their turns as the reactor does; the blocking models (`iterative`, `threads`,
//! `fork`) send snapshots only, named after the model, and no turn.

mod util;

use std::time::{Duration, Instant};

use util::ws::WsClient;
use util::{ServerProcess, connect, server_command};

/// `--model MODEL` serving echo and the console, both on free ports.
fn start(model: &str) -> ServerProcess {
    let args = ["--model", model, "--listen", "echo=127.0.0.1:0", "--listen", "console=127.0.0.1:0"];
    ServerProcess::start(server_command(&args), 2)
}

/// Over `select` and `poll`, two clients taking turns: the watcher's first message is a
/// snapshot of the model, each turn names the client it served, in order, with what it got
/// done (the line read and its echo written), turns are numbered upwards, and the next
/// snapshot lists both clients (not the watcher) with their counts.
#[test]
fn the_loop_models_stream_their_turns() {
    for model in ["select", "poll"] {
        let server = start(model);
        let mut watcher = WsClient::connect_path(server.addrs[1], "/live");
        let first = watcher.json();
        assert_eq!((&first["type"], &first["model"]), (&"snapshot".into(), &model.into()), "{first}");
        assert!(!first["loop"]["turn_us"].is_null(), "a loop has turn figures: {first}");
        let (mut a_client, mut b_client) = (connect(server.addrs[0]), connect(server.addrs[0]));
        for round in 0..5 {
            a_client.roundtrip(&format!("a {round}"), &format!("a {round}"));
            b_client.roundtrip(&format!("b {round}"), &format!("b {round}"));
        }
        let mut served = Vec::new();
        let mut last_turn = 0;
        while served.len() < 10 {
            let turn = watcher.next_of("turn");
            let number = turn["turn"].as_u64().unwrap();
            assert!(number > last_turn, "{model}: turns numbered upwards: {number} after {last_turn}");
            last_turn = number;
            for entry in turn["served"].as_array().unwrap() {
                assert_eq!(
                    (entry["messages"].as_u64(), entry["bytes_in"].as_u64(), entry["bytes_out"].as_u64()),
                    (Some(1), Some(4), Some(4)),
                    "{model}: {turn}"
                );
                served.push(entry["conn"].as_u64().unwrap());
            }
        }
        let (a, b) = (served[0], served[1]);
        assert_ne!(a, b);
        assert_eq!(served, [a, b, a, b, a, b, a, b, a, b], "{model}: the two clients, in the order served");
        let snapshot = watcher.next_of("snapshot");
        let connections = snapshot["connections"].as_array().unwrap();
        assert_eq!(connections.len(), 2, "{model}: the two clients, not the watcher: {snapshot}");
        for (conn, port) in [(a, a_client.local_addr().port()), (b, b_client.local_addr().port())] {
            let entry = connections.iter().find(|entry| entry["conn"] == conn).expect("listed");
            assert_eq!(
                entry["peer"],
                format!("127.0.0.1:{port}"),
                "{model}: the peer as the client sees itself"
            );
            assert_eq!(
                (&entry["messages"], &entry["handler"]),
                (&5.into(), &"echo".into()),
                "{model}: {entry}"
            );
        }
        assert_eq!(snapshot["loop"]["messages_in"], 10, "{model}: {snapshot}");
    }
}

/// Over `select`, turns faster than a watcher is sent them are counted, not lost:
/// `skipped` says how many.
#[test]
fn a_flood_of_select_turns_is_skipped_and_said() {
    let server = start("select");
    let mut watcher = WsClient::connect_path(server.addrs[1], "/live");
    watcher.next_of("snapshot");
    let mut client = connect(server.addrs[0]);
    for round in 0..3000 {
        client.roundtrip(&format!("{round}"), &format!("{round}"));
    }
    let (mut turns, mut skipped) = (0, 0);
    while turns + skipped < 3000 {
        let message = watcher.json();
        match message["type"].as_str().unwrap() {
            "turn" => turns += message["served"].as_array().unwrap().len() as u64,
            "skipped" => skipped += message["turns"].as_u64().unwrap(),
            _ => {}
        }
    }
    assert!(skipped > 0, "3,000 turns in well under 6 s pass the cap of 500 a second");
    assert_eq!(turns + skipped, 3000, "every turn sent or counted");
}

/// The blocking models have no loop: snapshots named after the model, listing the client
/// served and its counts, no loop figures, and not one turn.
#[test]
fn the_blocking_models_send_snapshots_only() {
    for model in ["iterative", "threads", "fork"] {
        let server = start(model);
        let mut client = connect(server.addrs[0]);
        for round in 0..3 {
            client.roundtrip(&format!("line {round}"), &format!("line {round}"));
        }
        let mut watcher = WsClient::connect_path(server.addrs[1], "/live");
        let started = Instant::now();
        let mut snapshots = 0;
        while snapshots < 3 {
            let message = watcher.json();
            assert_eq!(message["type"], "snapshot", "{model}: no turns from a blocking model: {message}");
            assert_eq!(message["model"], model);
            assert!(message["loop"]["turn_us"].is_null(), "{model}: no loop figures: {message}");
            let connections = message["connections"].as_array().unwrap();
            assert_eq!(connections.len(), 1, "{model}: the client, not the watcher: {message}");
            let entry = &connections[0];
            assert_eq!(entry["peer"], format!("127.0.0.1:{}", client.local_addr().port()), "{model}");
            assert_eq!(
                (&entry["handler"], &entry["messages"], &entry["bytes_in"]),
                (&"echo".into(), &3.into(), &21.into()),
                "{model}: {entry}"
            );
            snapshots += 1;
        }
        assert!(started.elapsed() >= Duration::from_secs(1), "{model}: a snapshot a second");
    }
}
