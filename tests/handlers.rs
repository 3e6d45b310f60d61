//! Each built-in handler against the real server over real sockets.

mod util;

use util::{TestServer, connect};

/// echo replies with each line as sent, CRLF or not, empty lines included.
#[test]
fn echo_replies_with_the_message() {
    let server = TestServer::start(&["echo=127.0.0.1:0"]);
    let mut client = connect(server.addr());
    client.roundtrip("hello", "hello");
    client.send(b"with crlf\r\n\n");
    client.expect("with crlf");
    client.expect("");
    client.roundtrip("straße ✓", "straße ✓");
}

/// uppercase does full Unicode uppercasing and refuses invalid UTF-8 without closing.
#[test]
fn uppercase_handles_unicode_and_rejects_invalid_utf8() {
    let server = TestServer::start(&["uppercase=127.0.0.1:0"]);
    let mut client = connect(server.addr());
    client.roundtrip("hello world", "HELLO WORLD");
    client.roundtrip("straße", "STRASSE");
    client.roundtrip("ǆemal čaša", "ǄEMAL ČAŠA");
    client.send(b"bad \xff\xfe bytes\n");
    client.expect("ERR invalid UTF-8");
    client.roundtrip("still here", "STILL HERE");
}

/// sum adds integers separated by commas and/or whitespace, and answers errors with ERR.
#[test]
fn sum_adds_and_reports_errors() {
    let server = TestServer::start(&["sum=127.0.0.1:0"]);
    let mut client = connect(server.addr());
    client.roundtrip("50,40", "90");
    client.roundtrip("1, 2, 3", "6");
    client.roundtrip("1 2 3", "6");
    client.roundtrip("-10,4", "-6");
    client.roundtrip("", "ERR no integers");
    client.roundtrip("1,two,3", "ERR not an integer: 'two'");
    client.roundtrip("9223372036854775807,1", "ERR overflow: the sum does not fit in 64 bits");
    client.roundtrip("-9223372036854775808,-1", "ERR overflow: the sum does not fit in 64 bits");
    client.roundtrip("123456789012345678901", "ERR overflow: the sum does not fit in 64 bits");
    client.roundtrip("2,2", "4");
}

/// broadcast relays each line to every other client as `<addr>: <line>`; the sender gets
/// nothing back, and clients that join later only see what was sent after they joined.
#[test]
fn broadcast_relays_to_every_other_client() {
    let server = TestServer::start(&["broadcast=127.0.0.1:0"]);
    let mut clients: Vec<_> = (0..4).map(|_| connect(server.addr())).collect();
    // Wait until all four are in the room: the server has accepted them when its stats say so.
    server.wait_for("4 connections", |stats| stats.connections_open == 4);
    let sender = clients[0].local_addr();
    clients[0].send_line("hello room");
    for client in &mut clients[1..] {
        client.expect(&format!("{sender}: hello room"));
    }
    let second = clients[2].local_addr();
    clients[2].send_line("hi from two");
    for (index, client) in clients.iter_mut().enumerate() {
        if index != 2 {
            client.expect(&format!("{second}: hi from two"));
        }
    }
    // The sender got nothing back: the next line it sees is someone else's.
    let third = clients[3].local_addr();
    clients[3].send_line("third");
    clients[0].expect(&format!("{third}: third"));
    clients[2].expect(&format!("{third}: third"));
    clients[1].expect(&format!("{third}: third"));
}

/// A member leaving does not disturb the room.
#[test]
fn broadcast_survives_a_member_leaving() {
    let server = TestServer::start(&["broadcast=127.0.0.1:0"]);
    let mut a = connect(server.addr());
    let mut b = connect(server.addr());
    let c = connect(server.addr());
    server.wait_for("3 connections", |stats| stats.connections_open == 3);
    drop(c);
    server.wait_for("2 connections", |stats| stats.connections_open == 2);
    a.send_line("after c left");
    b.expect(&format!("{}: after c left", a.local_addr()));
}
