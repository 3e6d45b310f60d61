//! The `chat` handler: names (`guest-N`, `/nick`), who is here (`/who`), joins and leaves,
//! `/me`, `/help`, unknown commands, and the room's last lines for a newcomer, before the
//! live ones, nothing lost or repeated between; a room shared by line and WebSocket members.

mod util;

use std::time::Duration;

use evloop::ServerConfig;
use util::ws::WsClient;
use util::{Client, TestServer, connect};

/// A member who has read the room's history and its greeting: its name.
fn join(server: &TestServer, index: usize) -> (Client, String) {
    let mut client = connect(server.addr_of(index));
    let mut greeting = client.line();
    while !greeting.starts_with("* you are ") {
        greeting = client.line();
    }
    let name = greeting
        .strip_prefix("* you are ")
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("a greeting, got {greeting:?}"))
        .to_string();
    (client, name)
}

/// Names, lines, joins, renames, `/who`, `/me`, refusals and leaves, as the contract says.
#[test]
fn names_lines_and_commands() {
    let server = TestServer::start(&["chat=127.0.0.1:0"]);
    let (mut ann, first) = join(&server, 0);
    assert_eq!(first, "guest-1");
    let (mut bob, second) = join(&server, 0);
    assert_eq!(second, "guest-2", "unique in the room");
    ann.expect("* guest-2 joined");
    ann.send_line("hello");
    bob.expect("guest-1: hello");
    assert!(!ann.has_data_within(Duration::from_millis(100)), "the sender gets nothing back");
    ann.send_line("/nick ann");
    ann.expect("* you are now ann");
    bob.expect("* guest-1 is now ann");
    bob.send_line("/nick ann");
    bob.expect("ERR nick taken");
    bob.send_line("/nick ann!");
    bob.expect("ERR bad nick: 1 to 32 of A-Z a-z 0-9 _ -");
    bob.send_line(&format!("/nick {}", "b".repeat(33)));
    bob.expect("ERR bad nick: 1 to 32 of A-Z a-z 0-9 _ -");
    bob.send_line("/nick bob");
    bob.expect("* you are now bob");
    ann.expect("* guest-2 is now bob");
    bob.send_line("/who");
    bob.expect("* here: ann, bob");
    bob.send_line("/me waves");
    ann.expect("* bob waves");
    bob.send_line("/nope");
    bob.expect("ERR unknown command /nope: try /nick NAME, /who, /me ACTION, /help");
    bob.send_line("/help");
    bob.expect("* commands: /nick NAME, /who, /me ACTION, /help; any other line goes to the room");
    drop(bob);
    ann.expect("* bob left");
    ann.send_line("/who");
    ann.expect("* here: ann");
    // A name is free again once its member left.
    let (mut carol, _) = join(&server, 0);
    ann.expect("* guest-3 joined");
    carol.send_line("/nick bob");
    carol.expect("* you are now bob");
}

/// A newcomer gets the room's last `--history` lines first, oldest first, exactly as the
/// members got them, then the live lines; with lines flowing while it joins, every line
/// reaches it once, in order.
#[test]
fn a_newcomer_gets_the_last_lines_then_the_live_ones() {
    let mut config = ServerConfig::default();
    config.history = 5;
    let server = TestServer::start_with(config, &["chat=127.0.0.1:0"]);
    let (mut talker, name) = join(&server, 0);
    for index in 0..8 {
        talker.send_line(&format!("line {index}"));
    }
    let (mut listener, _) = {
        let mut client = connect(server.addr());
        let history: Vec<String> = (0..5).map(|_| client.line()).collect();
        assert_eq!(
            history,
            (3..8).map(|index| format!("{name}: line {index}")).collect::<Vec<_>>(),
            "the last five, oldest first, as the members got them"
        );
        let greeting = client.line();
        assert!(greeting.starts_with("* you are guest-2"), "{greeting}");
        (client, ())
    };
    talker.expect("* guest-2 joined");
    // Lines flow while a third member joins: it gets each once, in order.
    let sender = std::thread::spawn(move || {
        for index in 8..400 {
            talker.send_line(&format!("line {index}"));
        }
        talker
    });
    let mut joiner = connect(server.addr());
    let _talker = sender.join().unwrap();
    let mut seen = Vec::new();
    while seen.last().is_none_or(|line: &String| line != &format!("{name}: line 399")) {
        let line = joiner.line();
        if line.starts_with(&format!("{name}: line ")) {
            seen.push(line);
        }
    }
    let numbers: Vec<usize> =
        seen.iter().map(|line| line.rsplit(' ').next().unwrap().parse().unwrap()).collect();
    let first = numbers[0];
    assert_eq!(numbers, (first..400).collect::<Vec<_>>(), "once each, in order, from its history on");
    // The joiner came while lines flowed, so its notice falls somewhere among them.
    let mut heard = Vec::new();
    let mut joined = 0;
    while heard.len() < 392 {
        let line = listener.line();
        if line == "* guest-3 joined" {
            joined += 1;
        } else {
            heard.push(line);
        }
    }
    if joined == 0 {
        listener.expect("* guest-3 joined");
        joined = 1;
    }
    assert_eq!(joined, 1, "one join notice among the lines");
    assert_eq!(heard, (8..400).map(|index| format!("{name}: line {index}")).collect::<Vec<_>>());
}

/// `--history 0`: a newcomer gets no earlier lines.
#[test]
fn no_history_when_asked() {
    let mut config = ServerConfig::default();
    config.history = 0;
    let server = TestServer::start_with(config, &["chat=127.0.0.1:0"]);
    let (mut first, _) = join(&server, 0);
    first.send_line("before");
    let (_second, name) = join(&server, 0);
    assert_eq!(name, "guest-2", "its greeting came first: no history");
}

/// A line member and a WebSocket member share a chat room: one name space, each line once
/// in each member's framing.
#[test]
fn line_and_websocket_members_share_names() {
    let server = TestServer::start(&["chat=127.0.0.1:0", "chat:ws=127.0.0.1:0"]);
    let (mut line, _) = join(&server, 0);
    let mut page = WsClient::connect(server.addr_of(1));
    assert!(page.text().starts_with("* you are guest-2"));
    line.expect("* guest-2 joined");
    page.send_text("/nick web");
    assert_eq!(page.text(), "* you are now web");
    line.expect("* guest-2 is now web");
    line.send_line("/nick web");
    line.expect("ERR nick taken");
    page.send_text("hi from the page");
    line.expect("web: hi from the page");
    line.send_line("hi from nc");
    assert_eq!(page.text(), "guest-1: hi from nc");
    page.send_text("/who");
    assert_eq!(page.text(), "* here: guest-1, web");
}

/// A rename and a line sent together (one read): the line goes out under the new name, as
/// if typed after the answer came.
#[test]
fn a_line_after_a_rename_in_one_read_carries_the_new_name() {
    let server = TestServer::start(&["chat=127.0.0.1:0"]);
    let (mut ann, _) = join(&server, 0);
    let (mut bob, _) = join(&server, 0);
    ann.expect("* guest-2 joined");
    bob.send(b"/nick bob\nhello ann\n/who\n");
    ann.expect("* guest-2 is now bob");
    ann.expect("bob: hello ann");
    bob.expect("* you are now bob");
    bob.expect("* here: bob, guest-1");
}
