//! Shared test helpers: a real server on 127.0.0.1:0 (in-process, stopped on drop, or the
//! real binary as a child process), and a blocking line client with read timeouts so that a
//! bug fails a test instead of hanging it.
#![allow(dead_code)] // each test file uses its own subset

pub mod engines;
pub mod haproxy;
pub mod hosts;
pub mod loader;
pub mod ports;
pub mod tls;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::Duration;

use evloop::{ListenAddr, ListenSpec, RunSummary, RunningServer, Server, ServerConfig, Stats};

/// How long a client waits for bytes before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

pub fn init_logging() {
    let _ = env_logger::builder().is_test(true).try_init();
}

/// An in-process server; shut down (gracefully) when dropped.
pub struct TestServer {
    server: Option<RunningServer>,
}

impl TestServer {
    /// Serves `specs` (e.g. `"echo=127.0.0.1:0"`) with default limits.
    pub fn start(specs: &[&str]) -> TestServer {
        TestServer::start_with(ServerConfig::default(), specs)
    }

    /// Serves `specs` with `config`.
    pub fn start_with(config: ServerConfig, specs: &[&str]) -> TestServer {
        init_logging();
        let mut builder = Server::builder(config);
        for spec in specs {
            let spec: ListenSpec = spec.parse().expect("a valid listen spec");
            builder = builder.listen(&spec).expect("a known handler");
        }
        let server = builder.bind().expect("bind").spawn().expect("spawn the reactor");
        TestServer { server: Some(server) }
    }

    /// Serves what `builder` describes (for handlers of a test's own).
    pub fn from_builder(builder: evloop::ServerBuilder) -> TestServer {
        init_logging();
        let server = builder.bind().expect("bind").spawn().expect("spawn the reactor");
        TestServer { server: Some(server) }
    }

    /// The address of the `index`th listener.
    pub fn addr_of(&self, index: usize) -> SocketAddr {
        match &self.running().listening()[index].addr {
            ListenAddr::Tcp(addr) | ListenAddr::Tls(addr) => *addr,
            other => panic!("listener {index} is not TCP: {other}"),
        }
    }

    /// The bound address of the `index`th listener, whatever its kind.
    pub fn listen_addr(&self, index: usize) -> ListenAddr {
        self.running().listening()[index].addr.clone()
    }

    /// The address of the first listener.
    pub fn addr(&self) -> SocketAddr {
        self.addr_of(0)
    }

    pub fn running(&self) -> &RunningServer {
        self.server.as_ref().expect("running")
    }

    pub fn stats(&self) -> Stats {
        self.running().stats().expect("stats")
    }

    /// Polls the stats until `done` holds (the server acts asynchronously) and returns them.
    #[track_caller]
    pub fn wait_for(&self, what: &str, done: impl Fn(&Stats) -> bool) -> Stats {
        let deadline = std::time::Instant::now() + READ_TIMEOUT;
        loop {
            let stats = self.stats();
            if done(&stats) {
                return stats;
            }
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}: {stats:?}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Shuts down gracefully and returns the summary.
    pub fn stop(mut self) -> RunSummary {
        self.server.take().expect("running").stop().expect("a clean stop")
    }
}

/// A blocking client with a read timeout.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

pub fn connect(addr: SocketAddr) -> Client {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    Client { reader: BufReader::new(stream.try_clone().unwrap()), writer: stream }
}

impl Client {
    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("send");
    }

    /// Sends `line` and its newline.
    pub fn send_line(&mut self, line: &str) {
        self.send(format!("{line}\n").as_bytes());
    }

    /// The next line, without its newline.
    #[track_caller]
    pub fn line(&mut self) -> String {
        let mut line = Vec::new();
        match self.reader.read_until(b'\n', &mut line) {
            Ok(0) => panic!("connection closed while a line was expected"),
            Ok(_) => {}
            Err(error) => panic!("reading a line failed: {error}"),
        }
        assert_eq!(line.pop(), Some(b'\n'), "a line ends with \\n: {:?}", String::from_utf8_lossy(&line));
        String::from_utf8(line).expect("a UTF-8 line")
    }

    /// Whether bytes arrive within `wait` (nothing is consumed).
    pub fn has_data_within(&mut self, wait: Duration) -> bool {
        self.writer.set_read_timeout(Some(wait)).unwrap();
        let ready = self.reader.fill_buf().is_ok_and(|buffered| !buffered.is_empty());
        self.writer.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        ready
    }

    /// Asserts the next line is `expected`.
    #[track_caller]
    pub fn expect(&mut self, expected: &str) {
        assert_eq!(self.line(), expected);
    }

    /// Sends `request` as a line and asserts the reply.
    #[track_caller]
    pub fn roundtrip(&mut self, request: &str, reply: &str) {
        self.send_line(request);
        self.expect(reply);
    }

    /// Exactly `n` bytes.
    #[track_caller]
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut buffer = vec![0; n];
        self.reader.read_exact(&mut buffer).expect("read bytes");
        buffer
    }

    /// Asserts the server closed the connection (end of stream, or a reset after it).
    #[track_caller]
    pub fn expect_closed(&mut self) {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => assert!(
                rest.is_empty(),
                "unexpected bytes before close: {:?}",
                String::from_utf8_lossy(&rest)
            ),
            Err(error) if error.kind() == io::ErrorKind::ConnectionReset => {}
            Err(error) => panic!("expected the connection to close, got {error}"),
        }
    }

    /// Half-closes: the server sees end of stream, and can still reply.
    pub fn finish_sending(&mut self) {
        self.writer.shutdown(Shutdown::Write).unwrap();
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.writer.local_addr().unwrap()
    }

    pub fn stream(&self) -> &TcpStream {
        &self.writer
    }
}

/// The real `evloop-server` binary as a child process; killed on drop if still running.
pub struct ServerProcess {
    pub child: Child,
    /// The socket addresses from its startup lines, in order (a Unix listener's line has
    /// none: see `startup_lines`).
    pub addrs: Vec<SocketAddr>,
    /// The startup lines, as printed.
    pub startup_lines: Vec<String>,
    stdout: BufReader<std::process::ChildStdout>,
}

/// The next log line containing `needle` (earlier lines are skipped).
#[track_caller]
pub fn wait_for_log(logs: &std::sync::mpsc::Receiver<String>, needle: &str) -> String {
    loop {
        let line = logs.recv_timeout(READ_TIMEOUT).unwrap_or_else(|_| panic!("no log line with {needle:?}"));
        if line.contains(needle) {
            return line;
        }
    }
}

/// The command for the real binary, stdout and stderr piped.
pub fn server_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_evloop-server"));
    command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

impl ServerProcess {
    /// Starts `command` and reads `listeners` startup lines: the readiness signal.
    pub fn start(mut command: Command, listeners: usize) -> ServerProcess {
        let mut child = command.spawn().expect("start evloop-server");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut addrs = Vec::new();
        let mut startup_lines = Vec::new();
        for _ in 0..listeners {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("read a startup line");
            let line = line.trim_end().to_string();
            let Some((_, rest)) = line.split_once(" listening on ") else {
                // Say why it did not start: its stderr, not just the missing line.
                let _ = child.kill();
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                panic!(
                    "evloop-server did not start: got {line:?} instead of a startup line; its stderr:\n{stderr}"
                );
            };
            // The address is the word after it (what the listener speaks follows in parentheses);
            // tls:// listeners are TCP addresses too; unix: and udp ones are not collected.
            let addr = rest.split(' ').next().unwrap_or(rest);
            if let Ok(addr) = addr.strip_prefix("tls://").unwrap_or(addr).parse() {
                addrs.push(addr);
            }
            startup_lines.push(line);
        }
        ServerProcess { child, addrs, startup_lines, stdout }
    }

    /// Starts `command` with `RUST_LOG=log`, collecting its stderr lines in a channel.
    pub fn start_logged(
        mut command: Command,
        listeners: usize,
        log: &str,
    ) -> (ServerProcess, std::sync::mpsc::Receiver<String>) {
        command.env("RUST_LOG", log);
        let mut server = ServerProcess::start(command, listeners);
        let (lines, received) = std::sync::mpsc::channel();
        let stderr = BufReader::new(server.stderr());
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        (server, received)
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    /// Sends `signal` to the server (only the process this test started).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill() on the PID of our own child has no memory-safety preconditions.
        let result = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(result, 0, "kill failed");
    }

    pub fn stderr(&mut self) -> ChildStderr {
        self.child.stderr.take().expect("stderr not taken yet")
    }

    /// Waits for exit; returns the exit code and the rest of stdout.
    pub fn wait(mut self) -> (Option<i32>, String) {
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        let status = self.child.wait().unwrap();
        (status.code(), rest)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub mod ws;

/// The Python of the virtual environment scripts/test makes under target/ (with the
/// `websockets` client library).
pub fn venv_python() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/venv/bin/python")
}
