//! Partial reads and writes are normal: messages split into 1-byte writes, thousands of
//! messages in one write, replies larger than the socket buffers, half-close.

mod util;

use std::io::{BufRead, BufReader, Write};
use std::thread;

use util::{TestServer, connect};

/// A message written one byte at a time is decoded once complete.
#[test]
fn one_byte_writes_are_reassembled() {
    let server = TestServer::start(&["sum=127.0.0.1:0", "echo=127.0.0.1:0"]);
    let mut client = connect(server.addr());
    for byte in b"50,40\n1, 2, 3\n" {
        client.send(&[*byte]);
        client.stream().flush().unwrap();
    }
    client.expect("90");
    client.expect("6");
    let mut echo = connect(server.addr_of(1));
    let long_line = "abc".repeat(500);
    for byte in long_line.as_bytes().iter().chain(b"\r\n") {
        echo.send(&[*byte]);
    }
    echo.expect(&long_line);
}

/// Thousands of pipelined messages in one write are all answered, in order.
#[test]
fn pipelined_messages_are_answered_in_order() {
    let server = TestServer::start(&["sum=127.0.0.1:0"]);
    let mut client = connect(server.addr());
    let count = 20_000;
    let batch: String = (0..count).map(|i| format!("{i},1\n")).collect();
    client.send(batch.as_bytes());
    for i in 0..count {
        client.expect(&(i + 1).to_string());
    }
}

/// Far more output than the socket buffers hold, read concurrently: nothing lost or
/// reordered across many partial writes.
#[test]
fn large_streams_survive_partial_writes() {
    let server = TestServer::start(&["uppercase=127.0.0.1:0"]);
    let client = connect(server.addr());
    let lines = 200_000;
    let mut writer = client.stream().try_clone().unwrap();
    let sender = thread::spawn(move || {
        let mut batch = String::new();
        for i in 0..lines {
            batch.push_str(&format!("line {i} with some padding to make it longer ß\n"));
            if batch.len() > 256 * 1024 {
                writer.write_all(batch.as_bytes()).unwrap();
                batch.clear();
            }
        }
        writer.write_all(batch.as_bytes()).unwrap();
    });
    let mut reader = BufReader::new(client.stream().try_clone().unwrap());
    let mut line = String::new();
    for i in 0..lines {
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, format!("LINE {i} WITH SOME PADDING TO MAKE IT LONGER SS\n"));
    }
    sender.join().unwrap();
}

/// On half-close, an unterminated last line is handled, every reply is flushed, and then
/// the server closes the connection.
#[test]
fn half_close_flushes_then_closes() {
    let server = TestServer::start(&["sum=127.0.0.1:0"]);
    let mut client = connect(server.addr());
    let mut batch = String::new();
    for i in 0..5000 {
        batch.push_str(&format!("{i},{i}\n"));
    }
    batch.push_str("20,22"); // no newline: the last message
    client.send(batch.as_bytes());
    client.finish_sending();
    for i in 0..5000 {
        client.expect(&(2 * i).to_string());
    }
    client.expect("42");
    client.expect_closed();
}

/// Half-close with nothing pending closes at once; an empty tail is not a message.
#[test]
fn half_close_without_a_tail() {
    let server = TestServer::start(&["echo=127.0.0.1:0"]);
    let mut client = connect(server.addr());
    client.roundtrip("one", "one");
    client.finish_sending();
    client.expect_closed();
    let stats = server.stop().stats;
    assert_eq!(stats.messages_in, 1, "the empty tail was not handled as a message");
}
