//! A real browser in a room: Debian's Chromium, driven by Playwright (`playwright-core` under
//! target/node; scripts/test installs both), opens the chat page twice, and the two pages
//! and a line client chat (tests/browser/chat.mjs does the clicking). Once on one server,
//! once over two workers and a Redis backplane. And the console page, watching two clients
//! take turns.

mod util;

use std::process::Command;

use util::engines::Engine;
use util::{ServerProcess, TestServer, server_command};

/// Runs the browser script against a page URL and a line listener; asserts every check.
#[track_caller]
fn chat(page: &str, line: &str, screenshot: Option<&str>) {
    let mut command = Command::new("node");
    command.arg("tests/browser/chat.mjs").arg(page).arg(line);
    command.args(screenshot);
    let output = command.output().expect("node (scripts/test installs it with npm's packages)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    for check in [
        "a page sees another page's line ok",
        "the line client sees a page's line ok",
        "the pages see the line client's line ok",
    ] {
        assert!(stdout.lines().any(|line| line == check), "missing {check:?} in:\n{stdout}");
    }
}

/// Two pages and a line client in one room on one server.
#[test]
fn browsers_and_a_line_client_share_a_room() {
    let server = TestServer::start(&["broadcast=127.0.0.1:0", "broadcast:ws=127.0.0.1:0"]);
    let screenshot = std::env::var("EVLOOP_SCREENSHOT").ok();
    chat(&format!("http://{}/", server.addr_of(1)), &server.addr_of(0).to_string(), screenshot.as_deref());
}

/// The same over two worker processes sharing the room through a real Redis.
#[test]
fn browsers_over_workers_and_redis() {
    let redis = Engine::redis_tcp(&[]);
    let server = ServerProcess::start(
        server_command(&[
            "--workers",
            "2",
            "--backplane",
            &redis.url(),
            "--listen",
            "broadcast=127.0.0.1:0",
            "--listen",
            "broadcast:ws=127.0.0.1:0",
        ]),
        2,
    );
    chat(&format!("http://{}/", server.addrs[1]), &server.addrs[0].to_string(), None);
}

/// The console in a real browser: two line clients take turns with an echo listener, and the
/// page's strip of turns shows them in turns of their own (tests/browser/console.mjs).
#[test]
fn the_console_shows_two_clients_taking_turns() {
    let server = TestServer::start(&["echo=127.0.0.1:0", "console=127.0.0.1:0"]);
    let mut command = Command::new("node");
    command
        .arg("tests/browser/console.mjs")
        .arg(format!("http://{}/", server.addr_of(1)))
        .arg(server.addr_of(0).to_string());
    command.args(std::env::var("EVLOOP_CONSOLE_SCREENSHOT").ok());
    let output = command.output().expect("node (scripts/test installs it with npm's packages)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    for check in [
        "the console page opens its stream ok",
        "the strip shows both clients ok",
        "the clients take turns, one turn each ok",
        "the connection table lists both ok",
    ] {
        assert!(stdout.lines().any(|line| line == check), "missing {check:?} in:\n{stdout}");
    }
}

/// A chat room in browsers: history above a divider, names, the member list, a rename, and
/// lines under names, with a line client in the room (tests/browser/names.mjs).
#[test]
fn the_chat_page_shows_names_members_and_history() {
    let server = TestServer::start(&["chat=127.0.0.1:0", "chat:ws=127.0.0.1:0"]);
    let mut command = Command::new("node");
    command
        .arg("tests/browser/names.mjs")
        .arg(format!("http://{}/", server.addr_of(1)))
        .arg(server.addr_of(0).to_string());
    command.args(std::env::var("EVLOOP_CHAT_SCREENSHOT").ok());
    let output = command.output().expect("node (scripts/test installs it with npm's packages)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    for check in [
        "the history comes first, above a divider ok",
        "the member list shows who is here ok",
        "the name box renames, and the room is told ok",
        "both pages list every member ok",
        "lines carry the sender's name ok",
    ] {
        assert!(stdout.lines().any(|line| line == check), "missing {check:?} in:\n{stdout}");
    }
}
