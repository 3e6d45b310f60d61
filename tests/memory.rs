//! Idle connections cost almost nothing: no buffers while idle, a pool that is reused, and
//! idle timeouts that close exactly the idle ones.

mod util;

use std::time::{Duration, Instant};

use evloop::ServerConfig;
use util::{TestServer, connect};

/// After traffic, a thousand idle connections hold no buffer at all, and the pool served
/// them all from a few buffers.
#[test]
fn idle_connections_hold_no_buffers() {
    let server = TestServer::start(&["echo=127.0.0.1:0"]);
    let mut clients: Vec<_> = (0..1000).map(|_| connect(server.addr())).collect();
    for round in 0..3 {
        for (index, client) in clients.iter_mut().enumerate() {
            client.send(format!("round {round} client {index}\npartial").as_bytes());
        }
        for (index, client) in clients.iter_mut().enumerate() {
            client.expect(&format!("round {round} client {index}"));
        }
        // Each reply came from the same read as the incomplete message after it, so every
        // connection now holds exactly one buffer: its partial input.
        assert_eq!(server.stats().buffers.in_use, 1000);
        for client in &mut clients {
            client.send(b" done\n");
        }
        for client in &mut clients {
            client.expect("partial done");
        }
    }
    let stats = server.wait_for("all idle", |stats| stats.buffers.in_use == 0);
    assert_eq!(stats.connections_open, 1000);
    assert_eq!(stats.buffers.in_use, 0, "idle connections hold no buffers");
    // Replies never take a buffer (they are written from the buffer they were framed in);
    // the partial inputs do, and each round after the first gets the 256 the pool keeps.
    assert!(stats.buffers.reused >= 2 * 256, "buffers were reused: {:?}", stats.buffers);
}

/// The pool bounds what it keeps: after a burst, buffers go back and are reused, not
/// allocated anew for each message.
#[test]
fn the_pool_is_reused() {
    let server = TestServer::start(&["echo=127.0.0.1:0"]);
    let mut client = connect(server.addr());
    for index in 0..500 {
        client.send(format!("message {index} in two").as_bytes());
        client.send(b" pieces\n");
        client.expect(&format!("message {index} in two pieces"));
    }
    let stats = server.wait_for("idle", |stats| stats.buffers.in_use == 0);
    assert!(stats.buffers.allocated <= 4, "allocated {:?}", stats.buffers);
}

/// With an idle timeout, exactly the idle connections are closed; the active ones stay.
#[test]
fn idle_timeout_closes_exactly_the_idle_ones() {
    let mut config = ServerConfig::default();
    config.idle_timeout = Some(Duration::from_millis(400));
    let server = TestServer::start_with(config, &["echo=127.0.0.1:0"]);
    let mut idle: Vec<_> = (0..50).map(|_| connect(server.addr())).collect();
    let mut active: Vec<_> = (0..50).map(|_| connect(server.addr())).collect();
    server.wait_for("100 connections", |stats| stats.connections_open == 100);
    let started = Instant::now();
    // Keep the active half busy until the idle half has been closed.
    while server.stats().closed_idle < 50 {
        assert!(started.elapsed() < util::READ_TIMEOUT, "idle connections were not closed");
        for client in &mut active {
            client.roundtrip("ping", "ping");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for client in &mut idle {
        client.expect("ERR idle timeout");
        client.expect_closed();
    }
    for client in &mut active {
        client.roundtrip("still here", "still here");
    }
    let stats = server.stats();
    assert_eq!((stats.closed_idle, stats.connections_open), (50, 50));
}
