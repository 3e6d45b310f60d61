//! Ports for programs that cannot pick their own (HAProxy, memcached, Redis,
//! `systemd-socket-activate`). A port the kernel says is free is a guess: the test lets go
//! of it to hand the number over, and anything on the machine may take it first (another
//! test's server, an engine given the same guess, a loader's outgoing connection). A test
//! that trusted the guess once saw HAProxy's port answer the readiness check and then refuse
//! every connection: HAProxy had not bound it, something else had and went away. So a child
//! started on a guessed port is trusted only once it is alive and the only one listening
//! there, as /proc says; a start that lost the race is tried again on a fresh port.
//!
//! A program that can bind port 0 and say which port it got (evloop-server's startup line,
//! NATS with `-p -1`, Node's ws server) needs none of this: use that instead.

use std::collections::HashSet;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::Child;
use std::time::{Duration, Instant};

/// How many fresh ports a start may try before the test fails.
const ATTEMPTS: usize = 5;
/// How long a child may take to bind its port once started.
const BIND_TIMEOUT: Duration = Duration::from_secs(20);

/// What the port is for: a TCP listener, or a UDP socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// A port the kernel just said was free on 127.0.0.1, for `protocol`: a guess, let go of at
/// once. Only [`start_on_a_free_port`] should need it.
fn guess(protocol: Protocol) -> u16 {
    match protocol {
        Protocol::Tcp => TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port(),
        Protocol::Udp => UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port(),
    }
}

/// Calls `start` with a guessed free port until one start succeeds, at most [`ATTEMPTS`]
/// times. `start` returns `Err(why)` when the child did not come to hold the port (it
/// must then have stopped the child: [`wait_held`] does); the test fails with every reason.
#[track_caller]
pub fn start_on_a_free_port<T>(
    what: &str,
    protocol: Protocol,
    mut start: impl FnMut(u16) -> Result<T, String>,
) -> T {
    let mut reasons = Vec::new();
    for _ in 0..ATTEMPTS {
        let port = guess(protocol);
        match start(port) {
            Ok(started) => return started,
            Err(why) => {
                eprintln!("{what} did not take port {port}, trying another: {why}");
                reasons.push(format!("port {port}: {why}"));
            }
        }
    }
    panic!("{what} did not start on any of {ATTEMPTS} free ports:\n{}", reasons.join("\n"));
}

/// Waits until `child` is the one, and the only one, holding 127.0.0.1:`port` (listening,
/// for TCP): the readiness signal of a program that prints none, and the check after one
/// that does. `Err` says why not: the child exited (its status), or someone else holds
/// the port, or it did not bind in time; the child is then stopped and reaped, and what it
/// wrote to its stderr, if that is piped and not taken, is part of the reason. Once ready,
/// that stderr is read on and dropped, so the pipe never fills.
pub fn wait_held(child: &mut Child, port: u16, protocol: Protocol) -> Result<(), String> {
    let deadline = Instant::now() + BIND_TIMEOUT;
    let mut stderr = child.stderr.take();
    let why = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break format!("exited ({status}) before it held the port");
        }
        match holder(child.id(), port, protocol) {
            Holder::Child => {
                if let Some(mut stderr) = stderr {
                    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
                }
                return Ok(());
            }
            Holder::Others(count) => {
                break format!("{count} socket(s) of another process bound to the port");
            }
            Holder::Nobody if Instant::now() > deadline => {
                break format!("did not bind the port within {BIND_TIMEOUT:?}");
            }
            Holder::Nobody => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let mut said = String::new();
    if let Some(stderr) = &mut stderr {
        // It has exited: this reads to the end of what it wrote (a bind refused, say).
        let _ = stderr.read_to_string(&mut said);
    }
    Err(if said.is_empty() { why } else { format!("{why}; its stderr:\n{said}") })
}

/// Whether process `pid` is alive and the only one holding 127.0.0.1:`port`; for a check
/// where no fresh port can be tried (a restart on the same address).
pub fn held_by(pid: u32, port: u16, protocol: Protocol) -> bool {
    holder(pid, port, protocol) == Holder::Child
}

/// Who holds a port, as seen from a process's network namespace.
#[derive(Debug, PartialEq, Eq)]
enum Holder {
    /// Only the process: every socket bound to the port is one of its descriptors.
    Child,
    /// That many sockets bound to the port belong to some other process.
    Others(usize),
    Nobody,
}

/// Reads the sockets bound to `port` from `/proc/PID/net/{tcp,tcp6}` (listening ones) or
/// `{udp,udp6}` (unconnected ones), at any address: a socket on `0.0.0.0` or `::` takes
/// 127.0.0.1's connections too. Then matches their inodes against the process's descriptors.
fn holder(pid: u32, port: u16, protocol: Protocol) -> Holder {
    // /proc/net's socket states: TCP_LISTEN is 0A; an unconnected UDP socket is TCP_CLOSE, 07.
    let (tables, bound_state) = match protocol {
        Protocol::Tcp => (["tcp", "tcp6"], "0A"),
        Protocol::Udp => (["udp", "udp6"], "07"),
    };
    let port_hex = format!("{port:04X}");
    let mut bound = HashSet::new();
    for table in tables {
        // Missing when the process is gone (the caller sees it exit), or for tcp6 without IPv6.
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else { continue };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            if local.rsplit(':').next() == Some(port_hex.as_str()) && *state == bound_state {
                bound.insert(format!("socket:[{inode}]"));
            }
        }
    }
    if bound.is_empty() {
        return Holder::Nobody;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return Holder::Nobody };
    let held: HashSet<String> = fds
        .filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .map(|link| link.to_string_lossy().into_owned())
        .filter(|link| bound.contains(link))
        .collect();
    match bound.len() - held.len() {
        0 => Holder::Child,
        others => Holder::Others(others),
    }
}

/// A port on 127.0.0.1 that refuses connections for as long as this lives: a socket bound
/// there that never listens, and without `SO_REUSEADDR`, so nothing else can listen on the
/// port meanwhile, and no outgoing connection gets it as its own port. (A port merely found
/// free and let go can be taken by then.)
pub struct RefusingPort {
    _socket: socket2::Socket,
    addr: SocketAddr,
}

impl RefusingPort {
    pub fn new() -> RefusingPort {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
        let addr = socket.local_addr().unwrap().as_socket().unwrap();
        RefusingPort { _socket: socket, addr }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}
