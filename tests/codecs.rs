//! Each codec against the real server: framing both ways, and malformed input answered with
//! ERR while the connection keeps working.

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;

use evloop::ServerConfig;
use util::{TestServer, connect};

fn length_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(payload);
    frame
}

#[track_caller]
fn read_length_frame(stream: &mut TcpStream) -> Vec<u8> {
    let mut header = [0; 4];
    stream.read_exact(&mut header).expect("a frame header");
    let mut payload = vec![0; u32::from_be_bytes(header) as usize];
    stream.read_exact(&mut payload).expect("a frame payload");
    payload
}

fn raw_client(server: &TestServer) -> TcpStream {
    let stream = TcpStream::connect(server.addr()).unwrap();
    stream.set_read_timeout(Some(util::READ_TIMEOUT)).unwrap();
    stream
}

/// A line over --max-frame gets `ERR line too long`, the rest of it is skipped, and the
/// next line is served normally.
#[test]
fn over_long_line_is_refused_and_the_connection_lives_on() {
    let mut config = ServerConfig::default();
    config.max_frame = 16;
    let server = TestServer::start_with(config, &["echo=127.0.0.1:0"]);
    let mut client = connect(server.addr());
    client.send_line(&"x".repeat(100));
    client.expect("ERR line too long (max 16 bytes)");
    client.roundtrip("short", "short");
    // Over-long and arriving in pieces: reported once, before its end arrives.
    client.send("y".repeat(40).as_bytes());
    client.expect("ERR line too long (max 16 bytes)");
    client.send(&[b'y'; 4000]);
    client.send(b"\nexactly-16-bytes\n");
    client.expect("exactly-16-bytes");
}

/// The length codec frames requests and replies with a big-endian u32, binary-safe.
#[test]
fn length_codec_frames_both_ways() {
    let server = TestServer::start(&["sum:length=127.0.0.1:0", "echo:length=127.0.0.1:0"]);
    let mut sum = raw_client(&server);
    sum.write_all(&length_frame(b"50,40")).unwrap();
    assert_eq!(read_length_frame(&mut sum), b"90");
    let mut echo = TcpStream::connect(server.addr_of(1)).unwrap();
    echo.set_read_timeout(Some(util::READ_TIMEOUT)).unwrap();
    let binary = [0u8, 10, 13, 255, 0];
    let mut both = length_frame(&binary);
    both.extend(length_frame(b""));
    echo.write_all(&both).unwrap();
    assert_eq!(read_length_frame(&mut echo), binary);
    assert_eq!(read_length_frame(&mut echo), b"");
}

/// A length-prefixed frame over --max-frame is refused at its header, its payload skipped.
#[test]
fn length_codec_refuses_over_long_frames() {
    let mut config = ServerConfig::default();
    config.max_frame = 8;
    let server = TestServer::start_with(config, &["echo:length=127.0.0.1:0"]);
    let mut client = raw_client(&server);
    let mut stream = length_frame(&[b'z'; 1000]);
    stream.extend(length_frame(b"ok"));
    client.write_all(&stream).unwrap();
    assert_eq!(read_length_frame(&mut client), b"ERR frame too long (max 8 bytes)");
    assert_eq!(read_length_frame(&mut client), b"ok");
}

/// fixed:N reads N-byte messages and pads (or cuts) replies to N bytes.
#[test]
fn fixed_codec_uses_fixed_size_frames() {
    let server = TestServer::start(&["uppercase:fixed:8=127.0.0.1:0", "sum:fixed:8=127.0.0.1:0"]);
    let mut upper = raw_client(&server);
    upper.write_all("abcdefghstraße".as_bytes()).unwrap(); // "straße" is 7 bytes: one more for a frame
    upper.write_all(b"!").unwrap();
    let mut reply = [0; 16];
    upper.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, "ABCDEFGHSTRASSE!".as_bytes());
    let mut sum = TcpStream::connect(server.addr_of(1)).unwrap();
    sum.set_read_timeout(Some(util::READ_TIMEOUT)).unwrap();
    sum.write_all(b"50,40   ").unwrap();
    let mut reply = [0; 8];
    sum.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"90      ");
}

/// raw treats each read as a message and replies as is, no terminator: the classic
/// `send` then `recv(1024)` client works.
#[test]
fn raw_codec_replies_per_read() {
    let server = TestServer::start(&["sum:raw=127.0.0.1:0", "uppercase:raw=127.0.0.1:0"]);
    let mut sum = raw_client(&server);
    sum.write_all(b"50,40").unwrap();
    let mut reply = [0; 1024];
    let n = sum.read(&mut reply).unwrap();
    assert_eq!(&reply[..n], b"90");
    let mut upper = TcpStream::connect(server.addr_of(1)).unwrap();
    upper.set_read_timeout(Some(util::READ_TIMEOUT)).unwrap();
    upper.write_all(b"hello\n").unwrap();
    let n = upper.read(&mut reply).unwrap();
    assert_eq!(&reply[..n], b"HELLO\n");
}
