//! The server models (`--model reactor|iterative|threads|fork|select|poll`) with the same handlers,
//! and the instruments that make the reactor's interleaving visible.

mod util;

use std::io::{ErrorKind, Read};
use std::process::Command;
use std::time::{Duration, Instant};

use util::{ServerProcess, TestServer, connect, server_command};

const ALL_HANDLERS: [&str; 8] = [
    "--listen",
    "echo=127.0.0.1:0",
    "--listen",
    "uppercase=127.0.0.1:0",
    "--listen",
    "sum=127.0.0.1:0",
    "--listen",
    "broadcast=127.0.0.1:0",
];

fn start_model(model: &str, extra: &[&str]) -> ServerProcess {
    let mut args = vec!["--model", model];
    args.extend(ALL_HANDLERS);
    args.extend(extra);
    ServerProcess::start(server_command(&args), 4)
}

/// Runs evloop-load against `addr`; asserts every reply verified.
#[track_caller]
fn load_verifies(addr: std::net::SocketAddr, workload: &str, connections: &str) {
    let output = Command::new(env!("CARGO_BIN_EXE_evloop-load"))
        .args([
            "--target",
            &addr.to_string(),
            "--workload",
            workload,
            "-c",
            connections,
            "-n",
            "300",
            "--no-progress",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stdout));
}

/// Each model serves echo, uppercase and sum correctly, one client or several.
#[test]
fn every_model_serves_every_handler() {
    for model in ["reactor", "iterative", "threads", "select", "poll"] {
        let server = start_model(model, &[]);
        let mut echo = connect(server.addrs[0]);
        echo.roundtrip("hello", "hello");
        drop(echo);
        let mut upper = connect(server.addrs[1]);
        upper.roundtrip("straße", "STRASSE");
        upper.send(b"\xff\n");
        upper.expect("ERR invalid UTF-8");
        drop(upper);
        let mut sum = connect(server.addrs[2]);
        sum.roundtrip("50,40", "90");
        sum.roundtrip("1,x", "ERR not an integer: 'x'");
        drop(sum);
        // Iterative serves one client at a time, so its load runs use one connection.
        let connections = if model == "iterative" { "1" } else { "8" };
        for (index, workload) in ["echo", "uppercase", "sum"].into_iter().enumerate() {
            load_verifies(server.addrs[index], workload, connections);
        }
    }
}

/// broadcast relays among three clients in the reactor, threads, select and poll models.
#[test]
fn broadcast_relays_in_the_concurrent_models() {
    for model in ["reactor", "threads", "select", "poll"] {
        let server = start_model(model, &[]);
        let mut clients: Vec<_> = (0..3).map(|_| connect(server.addrs[3])).collect();
        // Accepting is asynchronous: the room is complete once the others have seen one of
        // the first client's messages (the server relays in order).
        let mut synced = [true, false, false];
        while !synced.iter().all(|&done| done) {
            clients[0].send_line("sync");
            for (index, client) in clients.iter_mut().enumerate().skip(1) {
                synced[index] |= client.has_data_within(Duration::from_millis(20));
            }
        }
        let sender = clients[1].local_addr();
        clients[1].send_line("hello from one");
        for index in [0, 2] {
            assert_eq!(
                next_non_sync(&mut clients[index]),
                format!("{sender}: hello from one"),
                "model {model}"
            );
        }
    }
}

/// The next line that is not one of the sync messages.
fn next_non_sync(client: &mut util::Client) -> String {
    loop {
        let line = client.line();
        if !line.ends_with(": sync") {
            return line;
        }
    }
}

/// broadcast in the iterative model: the only client connected is the sender, so its
/// messages reach no one (and are still counted).
#[test]
fn broadcast_in_the_iterative_model_reaches_no_one() {
    let server = start_model("iterative", &[]);
    let mut talker = connect(server.addrs[3]);
    talker.send(b"one\ntwo\n");
    talker.finish_sending();
    talker.expect_closed();
    server.signal(libc::SIGTERM);
    let (code, stdout) = server.wait();
    assert_eq!(code, Some(0));
    assert!(stdout.contains("2 messages in, 0 out"), "{stdout}");
}

/// The iterative model serves one client at a time: a second client gets no reply while
/// the first is connected, and gets it once the first leaves. The threads model, for
/// contrast, answers it at once.
#[test]
fn iterative_serves_one_client_at_a_time() {
    let server = start_model("iterative", &[]);
    let mut first = connect(server.addrs[0]);
    first.roundtrip("first", "first");
    let mut second = connect(server.addrs[0]);
    second.send_line("second");
    // Many round trips of the first client: a concurrent server would have answered the
    // second long before these complete.
    for index in 0..50 {
        first.roundtrip(&format!("again {index}"), &format!("again {index}"));
    }
    second.stream().set_nonblocking(true).unwrap();
    let mut probe = [0; 16];
    let waiting = second.stream().try_clone().unwrap().read(&mut probe);
    assert!(
        matches!(&waiting, Err(error) if error.kind() == ErrorKind::WouldBlock),
        "the second client was answered while the first was connected: {waiting:?}"
    );
    second.stream().set_nonblocking(false).unwrap();
    drop(first);
    second.expect("second");

    let threads = start_model("threads", &[]);
    let mut first = connect(threads.addrs[0]);
    first.roundtrip("first", "first");
    let mut second = connect(threads.addrs[0]);
    second.roundtrip("second", "second");
    first.roundtrip("still first", "still first");
}

/// The reactor's counters add up: messages counted equal messages sent, and the
/// events-per-wakeup histogram covers every wakeup.
#[test]
fn stats_counters_add_up() {
    let server = TestServer::start(&["echo=127.0.0.1:0"]);
    let mut clients: Vec<_> = (0..5).map(|_| connect(server.addr())).collect();
    let mut sent_bytes = 0;
    for round in 0..20 {
        for (index, client) in clients.iter_mut().enumerate() {
            let line = format!("round {round} from {index}");
            sent_bytes += line.len() + 1;
            client.roundtrip(&line, &line);
        }
    }
    let stats = server.stats();
    assert_eq!(stats.messages_in, 100);
    assert_eq!(stats.messages_out, 100);
    assert_eq!(stats.bytes_in, sent_bytes as u64);
    assert_eq!(stats.bytes_out, sent_bytes as u64);
    assert_eq!(stats.connections_accepted, 5);
    assert_eq!(stats.events_per_wakeup.iter().sum::<u64>(), stats.wakeups);
    assert!(stats.events >= 100, "at least one readiness event per message: {}", stats.events);
    assert!(stats.longest_wakeup > Duration::ZERO);
}

/// trace logging shows, per wakeup, which clients were served and in what order.
#[test]
fn trace_shows_the_interleaving() {
    let (server, logs) = ServerProcess::start_logged(
        server_command(&["--listen", "echo=127.0.0.1:0"]),
        1,
        "evloop::reactor=trace",
    );
    let mut clients: Vec<_> = (0..3).map(|_| connect(server.addrs[0])).collect();
    for client in &mut clients {
        client.send(b"a\nb\n");
    }
    for client in &mut clients {
        client.expect("a");
        client.expect("b");
    }
    let line = util::wait_for_log(&logs, "2 msgs");
    assert!(line.contains("wakeup "), "{line}");
    assert!(line.contains(" | conn "), "{line}");
    assert!(line.contains(" 127.0.0.1:"), "the clients are named by address: {line}");
}

/// --stats-interval logs connections, rates, events per wakeup and the worst loop lag.
#[test]
fn stats_interval_logs_a_line() {
    let (server, logs) = ServerProcess::start_logged(
        server_command(&["--listen", "echo=127.0.0.1:0", "--stats-interval", "0.2"]),
        1,
        "info",
    );
    let mut client = connect(server.addrs[0]);
    client.roundtrip("hi", "hi");
    let line = util::wait_for_log(&logs, "stats; conns=1");
    for field in ["msgs/s=", "wakeups/s=", "events/wakeup=", "worst_lag_ms="] {
        assert!(line.contains(field), "{line}");
    }
}

/// --work-us adds CPU work to every message, in every model: ten 20 ms messages take at
/// least 200 ms to be answered, even pipelined.
#[test]
fn work_us_costs_time_per_message() {
    for model in ["reactor", "iterative", "threads"] {
        let server = start_model(model, &["--work-us", "20000"]);
        let mut client = connect(server.addrs[0]);
        let started = Instant::now();
        client.send(b"1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n");
        for index in 1..=10 {
            client.expect(&index.to_string());
        }
        assert!(started.elapsed() >= Duration::from_millis(200), "model {model}: {:?}", started.elapsed());
    }
}

/// select and poll serve 300 interleaved clients, every reply verified.
#[test]
fn select_and_poll_serve_300_interleaved_clients() {
    for model in ["select", "poll"] {
        let server = start_model(model, &[]);
        load_verifies(server.addrs[0], "echo", "300");
    }
}

/// select cannot watch a descriptor at or past FD_SETSIZE (1024): a client that would get
/// one is turned away with `ERR server full`, and the others are served on. poll has no such
/// limit.
#[test]
fn select_turns_away_past_fd_setsize_and_poll_does_not() {
    for (model, turned_away) in [("select", true), ("poll", false)] {
        let server =
            ServerProcess::start(server_command(&["--model", model, "--listen", "echo=127.0.0.1:0"]), 1);
        let mut clients: Vec<util::Client> = (0..1100).map(|_| connect(server.addrs[0])).collect();
        let mut full = 0;
        for (index, client) in clients.iter_mut().enumerate() {
            client.send_line(&format!("ping {index}"));
            let reply = client.line();
            if reply == "ERR server full" {
                full += 1;
            } else {
                assert_eq!(reply, format!("ping {index}"), "{model}");
            }
        }
        if turned_away {
            assert!(full > 0 && full < 100, "{model}: {full} turned away");
        } else {
            assert_eq!(full, 0, "{model}");
        }
        // The first client is still served after all that.
        clients[0].roundtrip("still here", "still here");
    }
}

/// The children of `pid` now, with their states (`Z` for a zombie).
fn children_states(pid: u32) -> Vec<char> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    children
        .split_whitespace()
        .filter_map(|child| std::fs::read_to_string(format!("/proc/{child}/stat")).ok())
        .filter_map(|stat| stat.rsplit(')').next().and_then(|rest| rest.trim_start().chars().next()))
        .collect()
}

/// Waits until the states of `pid`'s children satisfy `done`; fails with `what` and the
/// states seen last if they do not within the read timeout.
fn await_children(pid: u32, done: impl Fn(&[char]) -> bool, what: &str) {
    let deadline = Instant::now() + util::READ_TIMEOUT;
    loop {
        let states = children_states(pid);
        if done(&states) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {states:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A process per client: 300 interleaved clients verified, each served by a child process;
/// once they have left, every child is reaped (none left, no zombie), and broadcast is
/// refused (processes share no room).
#[test]
fn fork_serves_300_clients_and_leaves_no_zombies() {
    let server = ServerProcess::start(
        server_command(&["--model", "fork", "--listen", "echo=127.0.0.1:0", "--listen", "sum=127.0.0.1:0"]),
        2,
    );
    load_verifies(server.addrs[0], "echo", "300");
    load_verifies(server.addrs[1], "sum", "8");
    let mut client = connect(server.addrs[0]);
    client.roundtrip("hello", "hello");
    let pid = server.child.id();
    // The process table is the readiness signal: the children of the clients that left
    // exit and are reaped on SIGCHLD, a moment after their clients close.
    await_children(
        pid,
        |states| states.len() == 1 && states[0] != 'Z',
        "one live child serves the one client still connected",
    );
    drop(client);
    await_children(pid, |states| states.is_empty(), "every child reaped once the last client left");
    let output = server_command(&["--model", "fork", "--listen", "broadcast=127.0.0.1:0"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", String::from_utf8_lossy(&output.stderr));
}

/// The fork model's children count what they serve, and the parent's stop line adds it up
/// (issue 36: it said `0 messages in, 0 out`): clients that left before the stop (their
/// children reaped) and clients still connected at SIGINT (their children stopped) alike.
#[test]
fn fork_counts_the_messages_its_children_serve() {
    let server =
        ServerProcess::start(server_command(&["--model", "fork", "--listen", "echo=127.0.0.1:0"]), 1);
    let mut clients: Vec<_> = (0..4).map(|_| connect(server.addrs[0])).collect();
    for (index, client) in clients.iter_mut().enumerate() {
        let lines: String = (0..50).map(|line| format!("client {index} line {line}\n")).collect();
        client.send(lines.as_bytes());
        for line in 0..50 {
            client.expect(&format!("client {index} line {line}"));
        }
    }
    // Two leave (their children exit and are reaped); two stay until the stop.
    drop(clients.drain(..2));
    await_children(server.child.id(), |states| states.len() == 2, "the children of the two that left reaped");
    server.signal(libc::SIGINT);
    let (code, stdout) = server.wait();
    assert_eq!(code, Some(0));
    assert!(stdout.contains("4 connections served, 200 messages in, 200 out"), "{stdout}");
    drop(clients);
}

/// A child's counts reach the parent even when its place is taken over: with
/// `--max-connections 2`, six clients one after the other are all counted.
#[test]
fn fork_counts_every_child_when_places_are_reused() {
    let server = ServerProcess::start(
        server_command(&["--model", "fork", "--max-connections", "2", "--listen", "echo=127.0.0.1:0"]),
        1,
    );
    let pid = server.child.id();
    for index in 0..6 {
        let mut client = connect(server.addrs[0]);
        client.roundtrip(&format!("one {index}"), &format!("one {index}"));
        client.roundtrip(&format!("two {index}"), &format!("two {index}"));
        drop(client);
        await_children(pid, |states| states.is_empty(), "the child reaped once its client left");
    }
    server.signal(libc::SIGINT);
    let (code, stdout) = server.wait();
    assert_eq!(code, Some(0));
    assert!(stdout.contains("6 connections served, 12 messages in, 12 out"), "{stdout}");
}

/// select and poll log a client they turn away, as the reactor does (issue 24: they said
/// nothing): the line names the peer and why.
#[test]
fn the_scanning_models_log_a_client_turned_away() {
    for model in ["select", "poll"] {
        let command =
            server_command(&["--model", model, "--max-connections", "1", "--listen", "echo=127.0.0.1:0"]);
        let (server, logs) = ServerProcess::start_logged(command, 1, "warn");
        let mut first = connect(server.addrs[0]);
        first.roundtrip("in", "in");
        let mut second = connect(server.addrs[0]);
        second.expect("ERR server full");
        let line = util::wait_for_log(&logs, "server full, turning away");
        assert!(line.contains(&second.local_addr().to_string()), "{model}: {line}");
        assert!(line.contains("max_connections=1"), "{model}: {line}");
        first.roundtrip("still here", "still here");
    }
}

/// A UDP listener under a blocking model is refused with that model's name (issue 24: the
/// message named "the iterative and threads models" whatever the model was).
#[test]
fn a_udp_listener_is_refused_naming_the_model() {
    for model in ["iterative", "threads", "fork", "select", "poll"] {
        let output =
            server_command(&["--model", model, "--listen", "sum=udp://127.0.0.1:0"]).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{model}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(&format!("--model {model} serves TCP only")), "{model}: {stderr}");
    }
}

/// The default server under a blocking model says which default listeners it leaves out
/// (issue 24: the UDP ones went without a word).
#[test]
fn a_blocking_model_says_it_leaves_the_default_udp_listeners_out() {
    let mut command = server_command(&["--model", "iterative"]);
    command.env("EVLOOP_DEFAULT_PORTS", "0");
    let (server, logs) = ServerProcess::start_logged(command, 1, "info");
    let note = util::wait_for_log(&logs, "--model iterative: not serving the default UDP");
    assert!(note.starts_with("evloop-server: "), "{note}");
    drop(server);
}
