//! Connections the server ends lose no replies: it lingers (FIN after the last reply, then
//! waits for the client) instead of closing with unread input, which would make the kernel
//! reset the connection and drop replies not yet delivered.

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;

use evloop::{Codec, Handler, Outbox, Peer, Server, ServerConfig};
use util::TestServer;

/// Echoes, and on `quit` says `bye` and closes.
struct EchoUntilQuit;

impl Handler for EchoUntilQuit {
    fn on_message(&mut self, _from: Peer<'_>, message: &[u8], out: &mut Outbox) {
        if message == b"quit" {
            out.reply(b"bye");
            out.close();
        } else {
            out.reply(message);
        }
    }
}

/// A client pipelines far more than the socket buffers hold, then `quit`, then keeps
/// sending, and only then reads: it gets every reply, `bye`, and a clean end of stream.
#[test]
fn handler_close_delivers_every_reply() {
    let mut config = ServerConfig::default();
    config.max_output = 64 * 1024;
    let builder = Server::builder(config).serve(
        "echo-until-quit",
        EchoUntilQuit,
        Codec::Line,
        ["127.0.0.1:0".parse().unwrap()],
    );
    let server = TestServer::from_builder(builder);
    // A small receive window keeps replies queued in the server's kernel buffers, which is
    // what a reset would throw away.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.addr().into()).unwrap();
    let mut client: TcpStream = socket.into();
    client.set_read_timeout(Some(util::READ_TIMEOUT)).unwrap();
    let lines: Vec<String> = (0..40_000).map(|i| format!("request number {i} with some padding\n")).collect();
    let requests = lines.concat();
    let mut writer = client.try_clone().unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let keep_sending = done.clone();
    let sender = std::thread::spawn(move || {
        writer.write_all(requests.as_bytes()).unwrap();
        writer.write_all(b"quit\n").unwrap();
        // Requests after quit are never answered, and there is unread input on the server
        // when it closes: it must still not reset. This client stops only once it has seen
        // the server's end of stream.
        while !keep_sending.load(std::sync::atomic::Ordering::Relaxed) {
            if writer.write_all(b"ignored after quit\n").is_err() {
                break;
            }
        }
        let _ = writer.shutdown(std::net::Shutdown::Write);
    });
    // Read nothing until the server's output has backed up: it then pauses reading us.
    server.wait_for("the server's output to back up", |stats| stats.reading_paused > 0);
    let mut received = Vec::new();
    client.read_to_end(&mut received).expect("a clean end of stream, not a reset");
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    sender.join().unwrap();
    let mut expected = lines.concat().into_bytes();
    expected.extend_from_slice(b"bye\n");
    assert_eq!(received.len(), expected.len(), "every reply arrived");
    assert!(received == expected, "replies in order");
}
