//! Hosts for tests that cross a network: network namespaces the test makes itself (`ip netns
//! add`), each with a veth pair into one bridge and an address of its own, so that servers,
//! engines and clients talk over a real network stack rather than 127.0.0.1. The bridge has
//! an address too, in the test's own namespace, where [`Relay`]s add latency to a link. A
//! host is cut off by setting its veth down. Everything is removed on drop, even when the
//! test fails. Needs root (tests run as root here); without it, one line says why.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// A set of hosts on one bridge; removed on drop.
pub struct Hosts {
    bridge: String,
    names: Vec<String>,
    veths: Vec<String>,
    subnet: u8,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip").args(args).output().map_err(|error| format!("ip: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

impl Hosts {
    /// `count` hosts, 10.211.S.1 to 10.211.S.count, the bridge at 10.211.S.254.
    pub fn new(count: usize) -> Hosts {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            panic!("these tests make network namespaces (ip netns add), which needs root; run them as root");
        }
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}{n}", std::process::id() % 100_000);
        let subnet = ((std::process::id() as usize * 7 + n * 13) % 250) as u8;
        let mut hosts = Hosts { bridge: format!("evb{tag}"), names: Vec::new(), veths: Vec::new(), subnet };
        if let Err(why) = hosts.build(count, &tag) {
            panic!("cannot make the test's hosts: {why}");
        }
        hosts
    }

    fn build(&mut self, count: usize, tag: &str) -> Result<(), String> {
        ip(&["link", "add", &self.bridge, "type", "bridge"])?;
        let gateway = format!("{}/24", self.gateway());
        ip(&["addr", "add", &gateway, "dev", &self.bridge])?;
        ip(&["link", "set", &self.bridge, "up"])?;
        for index in 0..count {
            let name = format!("evl{tag}h{index}");
            let veth = format!("evv{tag}h{index}");
            ip(&["netns", "add", &name])?;
            self.names.push(name.clone());
            ip(&["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &name])?;
            self.veths.push(veth.clone());
            ip(&["link", "set", &veth, "master", &self.bridge])?;
            ip(&["link", "set", &veth, "up"])?;
            let addr = format!("{}/24", self.addr(index));
            ip(&["netns", "exec", &name, "ip", "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["netns", "exec", &name, "ip", "link", "set", "eth0", "up"])?;
            ip(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// Host `index`'s address.
    pub fn addr(&self, index: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 211, self.subnet, index as u8 + 1)
    }

    /// The bridge's address, in the test's own namespace: where relays listen.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 211, self.subnet, 254)
    }

    /// `program` to run on host `index`.
    pub fn command(&self, index: usize, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.names[index], program]);
        command
    }

    /// Cuts host `index` off the network (its link down), or puts it back.
    pub fn set_link(&self, index: usize, up: bool) {
        ip(&["link", "set", &self.veths[index], if up { "up" } else { "down" }]).unwrap();
    }

    /// Limits what host `index` receives to `rate` (tc's units, e.g. `1mbit`) with a token
    /// bucket (`tbf`, on the bridge's side of its link).
    pub fn limit_rate(&self, index: usize, rate: &str) {
        let status = Command::new("tc")
            .args(["qdisc", "replace", "dev", &self.veths[index], "root", "tbf", "rate", rate])
            .args(["burst", "32kbit", "latency", "400ms"])
            .status()
            .unwrap();
        assert!(status.success(), "tc qdisc tbf on {}", self.veths[index]);
    }

    /// A TCP connection to `addr` made from host `index` (a socket keeps the namespace it
    /// was made in: a thread enters the host's, connects, and hands the socket back).
    pub fn connect_from(&self, index: usize, addr: SocketAddr) -> TcpStream {
        let path = format!("/var/run/netns/{}", self.names[index]);
        thread::spawn(move || {
            let namespace = std::fs::File::open(&path).unwrap();
            // SAFETY: setns on this thread only, with a namespace file we hold open.
            let entered = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(entered, 0, "setns into {path}: {}", std::io::Error::last_os_error());
            let stream = TcpStream::connect_timeout(&addr, super::READ_TIMEOUT).unwrap();
            stream.set_read_timeout(Some(super::READ_TIMEOUT)).unwrap();
            stream
        })
        .join()
        .unwrap()
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // A namespace's processes must be gone first: the test's own drops end them.
        for name in &self.names {
            let _ = ip(&["netns", "del", name]);
        }
        for veth in &self.veths {
            let _ = ip(&["link", "del", veth]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// A process a test started (a server on a host, an engine, an agent), ready once it printed
/// its readiness line; killed on drop, so a failing test leaves none behind.
pub struct Started {
    child: std::process::Child,
}

impl Started {
    /// Starts `command` and waits for a line with `ready` on stdout or stderr.
    pub fn start(command: Command, ready: &str) -> Started {
        Started { child: start_ready(command, ready) }
    }

    /// SIGKILL: no goodbye to anyone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `command` (a server on a host, an engine) and waits until it prints a line with
/// `ready` on stdout or stderr: its own readiness signal. Its output is read on, and
/// dropped, after.
pub fn start_ready(mut command: Command, ready: &str) -> std::process::Child {
    use std::io::BufRead as _;
    use std::process::Stdio;
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start");
    let (lines, seen) = mpsc::channel();
    let streams: [Box<dyn Read + Send>; 2] =
        [Box::new(child.stdout.take().unwrap()), Box::new(child.stderr.take().unwrap())];
    for stream in streams {
        let lines = lines.clone();
        thread::spawn(move || {
            for line in std::io::BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
    }
    loop {
        match seen.recv_timeout(Duration::from_secs(20)) {
            Ok(line) if line.contains(ready) => return child,
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                panic!("{command:?} did not print {ready:?}");
            }
        }
    }
}

/// Latency on a link (this kernel has no netem): a TCP relay that holds each chunk for
/// `delay` before passing it on, both ways, in order. Listens until the test process ends;
/// connections end when either side closes.
pub struct Relay {
    addr: SocketAddr,
}

impl Relay {
    /// A relay on `ip` (a free port) to `upstream`.
    pub fn start(ip: Ipv4Addr, upstream: SocketAddr, delay: Duration) -> Relay {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let Ok(server) = TcpStream::connect(upstream) else { continue };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap(), delay);
                pipe(server, client, delay);
            }
        });
        Relay { addr }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read, in order: one thread reads
/// and stamps, one waits and writes.
fn pipe(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (chunks, due) = mpsc::channel::<(Instant, Vec<u8>)>();
    thread::spawn(move || {
        let mut buffer = vec![0; 64 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buffer) {
            if chunks.send((Instant::now() + delay, buffer[..n].to_vec())).is_err() {
                return;
            }
        }
    });
    thread::spawn(move || {
        for (at, chunk) in due {
            thread::sleep(at.saturating_duration_since(Instant::now()));
            if to.write_all(&chunk).is_err() {
                return;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
