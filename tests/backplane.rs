//! Rooms across servers over a real Redis and a real NATS (issue: broadcast rooms that span
//! worker processes and hosts). Each test starts its engines on private ports or sockets and
//! the servers on port 0, and runs against each engine.

mod util;

use std::time::Duration;

use evloop::{BackplaneUrls, ServerConfig, Stats};
use serde_json::Value;
use util::engines::Engine;
use util::{Client, ServerProcess, TestServer, connect, server_command};

/// A server with one broadcast room on 127.0.0.1:0 over `engine`.
fn room_server(engine: &Engine, ping: Option<Duration>) -> TestServer {
    let mut config = ServerConfig::default();
    config.backplane = Some(engine.url().parse::<BackplaneUrls>().unwrap());
    if let Some(ping) = ping {
        config.backplane_ping = ping;
    }
    let server = TestServer::start_with(config, &["broadcast=127.0.0.1:0"]);
    server.wait_for("both backplane links up", links_up(2));
    server
}

fn links_up(count: usize) -> impl Fn(&Stats) -> bool {
    move |stats| stats.backplane_links_up == count
}

/// What a member sees of `from`'s line.
fn relayed(from: &Client, line: &str) -> String {
    format!("{}: {line}", from.local_addr())
}

/// Two servers with the same backplane and a plain `broadcast=ADDR` share one room: every
/// other member, local or remote, gets each line exactly once and in order; the sender gets
/// nothing back.
#[test]
fn two_servers_share_a_room() {
    for engine in Engine::each(&[], &[]) {
        let (a, b) = (room_server(&engine, None), room_server(&engine, None));
        let (mut a1, mut a2, mut b1) = (connect(a.addr()), connect(a.addr()), connect(b.addr()));
        a.wait_for("two members on a", |stats| stats.connections_open == 2);
        b.wait_for("one member on b", |stats| stats.connections_open == 1);
        for index in 0..200 {
            a1.send_line(&format!("line {index}"));
        }
        for index in 0..200 {
            let expected = relayed(&a1, &format!("line {index}"));
            assert_eq!(a2.line(), expected, "{}: local member", engine.name());
            assert_eq!(b1.line(), expected, "{}: remote member", engine.name());
        }
        b1.send_line("from b");
        let expected = relayed(&b1, "from b");
        // a1's next line is b1's: it never got its own 200 back.
        assert_eq!(a1.line(), expected, "{}", engine.name());
        assert_eq!(a2.line(), expected, "{}", engine.name());
        assert!(
            !b1.has_data_within(Duration::from_millis(100)),
            "{}: the sender got its line",
            engine.name()
        );
        let (a_stats, b_stats) = (a.stats(), b.stats());
        assert_eq!(
            (a_stats.backplane_published, b_stats.backplane_received),
            (200, 200),
            "{}",
            engine.name()
        );
        assert_eq!((b_stats.backplane_published, a_stats.backplane_received), (1, 1), "{}", engine.name());
        assert_eq!(a_stats.backplane_gaps + b_stats.backplane_gaps, 0, "{}", engine.name());
    }
}

/// Rooms are named: one backplane carries independent rooms, and a server delivers only the
/// rooms it serves.
#[test]
fn named_rooms_stay_apart() {
    let engine = Engine::redis_unix(&[]);
    let mut config = ServerConfig::default();
    config.backplane = Some(engine.url().parse().unwrap());
    let a =
        TestServer::start_with(config.clone(), &["broadcast@red=127.0.0.1:0", "broadcast@blue=127.0.0.1:0"]);
    let b = TestServer::start_with(config, &["broadcast@red=127.0.0.1:0"]);
    a.wait_for("links up", links_up(2));
    b.wait_for("links up", links_up(2));
    let (mut a_red, mut a_blue, mut b_red) =
        (connect(a.addr_of(0)), connect(a.addr_of(1)), connect(b.addr()));
    a.wait_for("members", |stats| stats.connections_open == 2);
    b.wait_for("member", |stats| stats.connections_open == 1);
    a_blue.send_line("blue only");
    b_red.send_line("red");
    assert_eq!(a_red.line(), relayed(&b_red, "red"));
    assert!(!a_blue.has_data_within(Duration::from_millis(200)), "blue got red's line");
    assert!(!b_red.has_data_within(Duration::from_millis(200)), "red got blue's line");
}

/// `--workers 4` with a backplane shares one room over all four: the loader's members,
/// spread over the workers by the kernel, each get every other member's lines exactly once
/// and in order (it checks every delivery).
#[test]
fn workers_share_a_room() {
    for engine in Engine::each(&[], &[]) {
        let url = engine.url();
        let server = ServerProcess::start(
            server_command(&["--workers", "4", "--listen", "broadcast=127.0.0.1:0", "--backplane", &url]),
            1,
        );
        let report =
            load(&["--target", &server.addrs[0].to_string(), "-c", "40", "-n", "400", "--rate", "400"]);
        assert_delivered_exactly_once(&report, 400 * 39, engine.name());
    }
}

/// A room spread over two servers, the loader's members over both (`--target` twice).
#[test]
fn the_loader_spreads_a_room_over_servers() {
    let engine = Engine::nats(&[]);
    let (a, b) = (room_server(&engine, None), room_server(&engine, None));
    let (a_addr, b_addr) = (a.addr().to_string(), b.addr().to_string());
    let report = load(&["--target", &a_addr, "--target", &b_addr, "-c", "20", "-n", "300", "--rate", "600"]);
    assert_delivered_exactly_once(&report, 300 * 19, "nats");
    assert_eq!(report["target"], format!("{a_addr},{b_addr}"));
    assert_eq!(a.stats().connections_accepted, 10, "members spread evenly");
}

/// Runs `evloop-load --workload broadcast --json` with `args`; its report.
fn load(args: &[&str]) -> Value {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_evloop-load"))
        .args(["--workload", "broadcast", "--json", "--no-progress", "--reply-timeout", "10s"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "loader failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap()
}

#[track_caller]
fn assert_delivered_exactly_once(report: &Value, deliveries: u64, engine: &str) {
    assert_eq!(report["ok"], true, "{engine}: {report}");
    assert_eq!(report["broadcast"]["deliveries_expected"], deliveries, "{engine}: {report}");
    assert_eq!(report["broadcast"]["deliveries_seen"], deliveries, "{engine}: {report}");
}

/// The engine killed mid-run: local delivery never stops, lines published meanwhile are
/// counted as dropped, and once the engine is back (same address) both servers reconnect,
/// resubscribe and deliver across again; the receiver counts the line it missed as a gap.
#[test]
fn the_engine_dies_and_comes_back() {
    for mut engine in Engine::each(&[], &[]) {
        let name = engine.name();
        let ping = Some(Duration::from_millis(300));
        let (a, b) = (room_server(&engine, ping), room_server(&engine, ping));
        let (mut a1, mut a2, mut b1) = (connect(a.addr()), connect(a.addr()), connect(b.addr()));
        a.wait_for("members", |stats| stats.connections_open == 2);
        b.wait_for("member", |stats| stats.connections_open == 1);
        a1.send_line("before");
        assert_eq!(b1.line(), relayed(&a1, "before"), "{name}");
        assert_eq!(a2.line(), relayed(&a1, "before"), "{name}");

        engine.kill();
        a.wait_for("the links noticed", links_up(0));
        a1.send_line("during");
        assert_eq!(a2.line(), relayed(&a1, "during"), "{name}: local delivery stopped");
        a.wait_for("the line counted as dropped", |stats| stats.backplane_publish_dropped == 1);

        engine.restart();
        a.wait_for("a reconnected", |stats| stats.backplane_links_up == 2 && stats.backplane_reconnects >= 2);
        b.wait_for("b reconnected", |stats| stats.backplane_links_up == 2 && stats.backplane_reconnects >= 2);
        a1.send_line("after");
        assert_eq!(b1.line(), relayed(&a1, "after"), "{name}: delivery across did not resume");
        assert_eq!(a2.line(), relayed(&a1, "after"), "{name}");
        assert_eq!(b.stats().backplane_gaps, 1, "{name}: the missed line is a gap");
    }
}

/// A list of Redis addresses: tried in order. Both servers start on the first; when it dies
/// they move to the second by themselves and share the room there; a server started while
/// the first is down goes past it to the second.
#[test]
fn a_list_of_redis_addresses_is_tried_in_order() {
    let (mut first, second) = (Engine::redis_tcp(&[]), Engine::redis_tcp(&[]));
    let list: BackplaneUrls = format!("{},{}", first.url(), second.url()).parse().unwrap();
    let server = |list: &BackplaneUrls| {
        let mut config = ServerConfig::default();
        config.backplane = Some(list.clone());
        config.backplane_ping = Duration::from_millis(300);
        let server = TestServer::start_with(config, &["broadcast=127.0.0.1:0"]);
        server.wait_for("both backplane links up", links_up(2));
        server
    };
    let (a, b) = (server(&list), server(&list));
    let (mut a1, mut b1) = (connect(a.addr()), connect(b.addr()));
    a.wait_for("member", |stats| stats.connections_open == 1);
    b.wait_for("member", |stats| stats.connections_open == 1);
    a1.send_line("on the first");
    assert_eq!(b1.line(), relayed(&a1, "on the first"));

    first.kill();
    for each in [&a, &b] {
        each.wait_for("moved to the second", |stats| {
            stats.backplane_links_up == 2 && stats.backplane_reconnects >= 2
        });
    }
    a1.send_line("on the second");
    assert_eq!(b1.line(), relayed(&a1, "on the second"));
    let late = server(&list);
    let mut late1 = connect(late.addr());
    late.wait_for("member", |stats| stats.connections_open == 1);
    late1.send_line("late");
    assert_eq!(a1.line(), relayed(&late1, "late"), "the late server found the second");
    assert_eq!(b1.line(), relayed(&late1, "late"));
}

/// A half-open link (the engine frozen: connections up, nobody answering) is found by the
/// ping, the links go down and are retried; when the engine wakes they come back.
#[test]
fn a_frozen_engine_is_noticed_by_the_ping() {
    for engine in Engine::each(&[], &[]) {
        let name = engine.name();
        let ping = Some(Duration::from_millis(200));
        let (a, b) = (room_server(&engine, ping), room_server(&engine, ping));
        engine.signal(libc::SIGSTOP);
        a.wait_for("the ping found the link dead", links_up(0));
        b.wait_for("the ping found the link dead", links_up(0));
        engine.signal(libc::SIGCONT);
        a.wait_for("back up", |stats| stats.backplane_links_up == 2 && stats.backplane_reconnects >= 2);
        b.wait_for("back up", |stats| stats.backplane_links_up == 2 && stats.backplane_reconnects >= 2);
        let (mut a1, mut b1) = (connect(a.addr()), connect(b.addr()));
        a.wait_for("member", |stats| stats.connections_open == 1);
        b.wait_for("member", |stats| stats.connections_open == 1);
        a1.send_line("awake");
        assert_eq!(b1.line(), relayed(&a1, "awake"), "{name}");
    }
}

/// The engine cuts off a subscriber that falls behind (Redis `client-output-buffer-limit
/// pubsub`, NATS `max_pending`): the server reconnects, resubscribes, counts the lines it
/// missed as gaps, and its members get the room's lines again.
#[test]
fn a_slow_subscriber_cut_off_by_the_engine_comes_back() {
    // max_pending is a setting of NATS's configuration file, not a flag (and may not be
    // below max_payload).
    let nats_config = std::env::temp_dir().join(format!("evloop-test-nats-{}.conf", std::process::id()));
    std::fs::write(&nats_config, "max_payload: 65536\nmax_pending: 262144\n").unwrap();
    let engines = Engine::each(
        &["--client-output-buffer-limit", "pubsub 256kb 128kb 1"],
        &["-c", nats_config.to_str().unwrap()],
    );
    for engine in engines {
        let name = engine.name();
        let a = room_server(&engine, None);
        let url = engine.url();
        let args = ["--listen", "broadcast=127.0.0.1:0", "--backplane", &url, "--max-output", "256M"];
        let (b, b_log) = ServerProcess::start_logged(server_command(&args), 1, "info");
        util::wait_for_log(&b_log, "link=subscriber");
        let (mut a1, mut b1) = (connect(a.addr()), connect(b.addrs[0]));
        a.wait_for("member", |stats| stats.connections_open == 1);
        a1.send_line("first");
        assert_eq!(b1.line(), relayed(&a1, "first"), "{name}");

        // Frozen, b's subscriber reads nothing: the engine's buffer for it overflows.
        b.signal(libc::SIGSTOP);
        let filler = "x".repeat(1000);
        for index in 0..20_000 {
            a1.send_line(&format!("{index} {filler}"));
        }
        let cut = if name == "redis" {
            "scheduled to be closed ASAP for overcoming of output buffer limits"
        } else {
            "Slow Consumer"
        };
        engine.wait_for_log(cut);
        b.signal(libc::SIGCONT);
        util::wait_for_log(&b_log, "backplane link lost; link=subscriber");
        util::wait_for_log(&b_log, "backplane link up");

        // Whatever b had read before the cut comes first; then the room goes on.
        let mut probe = 0;
        'probing: loop {
            probe += 1;
            assert!(probe < 100, "{name}: b's member never got a line after the cut");
            a1.send_line(&format!("probe {probe}"));
            let wanted = relayed(&a1, &format!("probe {probe}"));
            while b1.has_data_within(Duration::from_millis(200)) {
                if b1.line() == wanted {
                    break 'probing;
                }
            }
        }
        b.signal(libc::SIGTERM);
        let (code, stdout) = b.wait();
        assert_eq!(code, Some(0), "{name}");
        let summary = stdout.lines().last().unwrap_or_default().to_string();
        let count = |what: &str| -> u64 {
            let at = summary.find(what).unwrap_or_else(|| panic!("{name}: no {what:?} in {summary:?}"));
            summary[..at].trim_end().rsplit(' ').next().unwrap().parse().unwrap()
        };
        assert!(count(" gaps") > 0, "{name}: {summary}");
        assert!(count(" reconnects") >= 1, "{name}: {summary}");
    }
    let _ = std::fs::remove_file(nats_config);
}
