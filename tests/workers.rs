//! `evloop-server --workers N`: several reactor processes on one port.

mod util;

use std::collections::HashMap;
use std::sync::mpsc::Receiver;

use util::{ServerProcess, connect, server_command};

/// Worker pids by index, from "worker started; index=I pid=P" lines seen so far (the
/// parent logs them before it prints the startup lines).
fn worker_pids(logs: &Receiver<String>, expected: usize) -> HashMap<usize, i32> {
    let mut pids = HashMap::new();
    while pids.len() < expected {
        let line = logs.recv_timeout(util::READ_TIMEOUT).expect("worker start lines");
        if let Some(rest) = line.split("worker started; ").nth(1) {
            let field = |name: &str| {
                rest.split(' ').find_map(|kv| kv.strip_prefix(name)).unwrap().parse::<i64>().unwrap()
            };
            pids.insert(field("index=") as usize, field("pid=") as i32);
        }
    }
    pids
}

/// Sockets a process holds (listeners, connections, its signal pipe).
fn sockets(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.filter_map(Result::ok)
                .filter(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|link| link.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

fn alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Two workers share one port, and both serve clients.
#[test]
fn two_workers_both_serve_one_port() {
    let (server, logs) = ServerProcess::start_logged(
        server_command(&["--workers", "2", "--listen", "echo=127.0.0.1:0"]),
        1,
        "info",
    );
    let pids = worker_pids(&logs, 2);
    let before: Vec<usize> = (0..2).map(|index| sockets(pids[&index])).collect();
    let mut clients: Vec<_> = (0..40).map(|_| connect(server.addrs[0])).collect();
    for (index, client) in clients.iter_mut().enumerate() {
        client.roundtrip(&format!("hello {index}"), &format!("hello {index}"));
    }
    // The kernel spreads connections over the workers by hash: with 40, each gets some
    // (fewer than 5 on one side has a chance below one in a million).
    for index in 0..2 {
        let served = sockets(pids[&index]) - before[index];
        assert!(served >= 5, "worker {index} holds {served} of 40 connections");
    }
}

/// SIGTERM to the parent drains and stops every worker; the summary adds them up.
#[test]
fn sigterm_stops_every_worker() {
    let (server, logs) = ServerProcess::start_logged(
        server_command(&["--workers", "2", "--listen", "echo=127.0.0.1:0"]),
        1,
        "info",
    );
    let pids = worker_pids(&logs, 2);
    for index in 0..10 {
        connect(server.addrs[0]).roundtrip(&format!("m{index}"), &format!("m{index}"));
    }
    server.signal(libc::SIGTERM);
    let (code, stdout) = server.wait();
    assert_eq!(code, Some(0));
    assert!(stdout.contains("10 connections served, 10 messages in"), "{stdout}");
    assert!(stdout.trim_end().ends_with("(2 workers)"), "{stdout}");
    for pid in pids.values() {
        assert!(!alive(*pid), "worker {pid} outlived the parent");
    }
}

/// A worker that dies is reported and replaced, and the port keeps serving.
#[test]
fn a_dead_worker_is_restarted() {
    let (server, logs) = ServerProcess::start_logged(
        server_command(&["--workers", "2", "--listen", "echo=127.0.0.1:0"]),
        1,
        "info",
    );
    let pids = worker_pids(&logs, 2);
    // SAFETY: kill() on a worker this test's server started; no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pids[&0], libc::SIGKILL) }, 0);
    let mut saw_death = false;
    loop {
        let line = logs.recv_timeout(util::READ_TIMEOUT).expect("death and restart lines");
        saw_death |= line.contains("worker died; index=0");
        if line.contains("worker restarted; index=0") {
            break;
        }
    }
    assert!(saw_death, "the death was reported");
    for index in 0..20 {
        connect(server.addrs[0]).roundtrip(&format!("after {index}"), &format!("after {index}"));
    }
}

/// A broadcast room cannot be split over workers, nor a Unix socket path shared: refused.
#[test]
fn workers_refuse_what_they_cannot_share() {
    for listen in ["broadcast=127.0.0.1:0", "echo=unix:/tmp/evloop-workers-refused.sock"] {
        let output = server_command(&["--workers", "2", "--listen", listen]).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{listen}: {stderr}");
        assert_eq!(stderr.lines().filter(|line| line.starts_with("evloop-server:")).count(), 1, "{stderr}");
    }
}
