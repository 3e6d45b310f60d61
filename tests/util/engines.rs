//! Real pub/sub engines for backplane tests: `redis-server` and `nats-server`, started on a
//! private port or Unix socket, waited for by their own readiness line (and, on a TCP port,
//! checked to hold it: see `util::ports`), stopped by PID.
//! `.ci/run` (through `scripts/test`) installs both; a missing binary fails the test.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use super::ports::{self, Protocol};

/// How long an engine may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Which engine, and how it is reached. A NATS port of 0 asks NATS to pick one (`-p -1`),
/// which it names in its log; the port it picked replaces the 0.
#[derive(Clone, Debug)]
enum Kind {
    RedisTcp { port: u16 },
    RedisUnix { path: PathBuf },
    Nats { port: u16 },
}

/// A running engine; killed on drop.
pub struct Engine {
    kind: Kind,
    extra: Vec<String>,
    /// JetStream's store, removed on drop.
    store: Option<PathBuf>,
    child: Option<Child>,
    /// Its log lines (stdout for Redis, stderr for NATS), read on a thread.
    pub log: Receiver<String>,
}

fn socket_path() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("evloop-test-redis-{}-{n}.sock", std::process::id()))
}

impl Engine {
    /// Redis on a private TCP port; `extra` are `redis-server` arguments. Redis cannot bind
    /// port 0 and say which it got (`--port 0` turns TCP off): it is given a free port, and
    /// trusted once it holds it (another port if something else took that one first).
    pub fn redis_tcp(extra: &[&str]) -> Engine {
        ports::start_on_a_free_port("redis-server", Protocol::Tcp, |port| {
            Engine::try_start(Kind::RedisTcp { port }, extra)
        })
    }

    /// Redis on a Unix socket only (`--port 0` turns TCP off).
    pub fn redis_unix(extra: &[&str]) -> Engine {
        Engine::start(Kind::RedisUnix { path: socket_path() }, extra)
    }

    /// NATS on a TCP port it picks itself; `extra` are `nats-server` arguments.
    pub fn nats(extra: &[&str]) -> Engine {
        Engine::start(Kind::Nats { port: 0 }, extra)
    }

    /// NATS with JetStream (`-js`), its store in a directory of its own.
    pub fn nats_jetstream(extra: &[&str]) -> Engine {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let store = std::env::temp_dir().join(format!("evloop-test-js-{}-{n}", std::process::id()));
        let store_arg = store.display().to_string();
        let mut args = vec!["-js", "-sd", &store_arg];
        args.extend_from_slice(extra);
        let mut engine = Engine::start(Kind::Nats { port: 0 }, &args);
        engine.store = Some(store);
        engine
    }

    /// Both engines, one of each, for tests that run against each.
    pub fn each(redis_extra: &[&str], nats_extra: &[&str]) -> [Engine; 2] {
        [Engine::redis_tcp(redis_extra), Engine::nats(nats_extra)]
    }

    #[track_caller]
    fn start(kind: Kind, extra: &[&str]) -> Engine {
        Engine::try_start(kind, extra).unwrap_or_else(|why| panic!("{why}"))
    }

    fn try_start(kind: Kind, extra: &[&str]) -> Result<Engine, String> {
        let (kind, child, log) = spawn(&kind, extra)?;
        Ok(Engine {
            kind,
            extra: extra.iter().map(ToString::to_string).collect(),
            store: None,
            child: Some(child),
            log,
        })
    }

    /// `--backplane` for it.
    pub fn url(&self) -> String {
        match &self.kind {
            Kind::RedisTcp { port } => format!("redis://127.0.0.1:{port}"),
            Kind::RedisUnix { path } => format!("redis+unix://{}", path.display()),
            Kind::Nats { port } => format!("nats://127.0.0.1:{port}"),
        }
    }

    /// "redis" or "nats", for messages.
    pub fn name(&self) -> &'static str {
        if matches!(self.kind, Kind::Nats { .. }) { "nats" } else { "redis" }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|child| child.id() as i32).expect("running")
    }

    /// Sends `signal` to the engine (SIGSTOP and SIGCONT make a half-open link).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill() on the PID of our own child has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0, "kill failed");
    }

    /// Kills it (SIGKILL: no goodbye to its clients) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same address, and waits until it is ready. The address was
    /// let go of while it was down, so no fresh port can be tried: if something took it
    /// meanwhile, the test fails saying so.
    #[track_caller]
    pub fn restart(&mut self) {
        self.kill();
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let (_, child, log) =
            spawn(&self.kind, &extra).unwrap_or_else(|why| panic!("restarting on {}: {why}", self.url()));
        self.child = Some(child);
        self.log = log;
    }

    /// The next log line containing `needle`.
    #[track_caller]
    pub fn wait_for_log(&self, needle: &str) -> String {
        loop {
            let line = self
                .log
                .recv_timeout(READY_TIMEOUT)
                .unwrap_or_else(|_| panic!("{} logged no line with {needle:?}", self.name()));
            if line.contains(needle) {
                return line;
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.kill();
        if let Kind::RedisUnix { path } = &self.kind {
            let _ = std::fs::remove_file(path);
        }
        if let Some(store) = &self.store {
            let _ = std::fs::remove_dir_all(store);
        }
    }
}

/// Starts the engine and waits for its readiness line, then, on a TCP port, checks that it
/// holds the port; returns its kind with the port known, itself and its log. `Err` says why
/// it did not get ready (the child is then stopped): a port taken shows here.
fn spawn(kind: &Kind, extra: &[&str]) -> Result<(Kind, Child, Receiver<String>), String> {
    let mut command = match kind {
        Kind::RedisTcp { port } => {
            let mut command = Command::new("redis-server");
            command.args(["--port", &port.to_string(), "--bind", "127.0.0.1"]);
            command
        }
        Kind::RedisUnix { path } => {
            let mut command = Command::new("redis-server");
            command.args([
                "--port",
                "0",
                "--unixsocket",
                &path.display().to_string(),
                "--unixsocketperm",
                "700",
            ]);
            command
        }
        Kind::Nats { port } => {
            let mut command = Command::new("nats-server");
            // -1: a port of its own choosing, named in its log.
            let port = if *port == 0 { "-1".to_string() } else { port.to_string() };
            command.args(["-a", "127.0.0.1", "-p", &port]);
            command
        }
    };
    let is_redis = !matches!(kind, Kind::Nats { .. });
    if is_redis {
        command.args(["--save", "", "--appendonly", "no", "--protected-mode", "no"]);
    }
    command.args(extra).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let name = if is_redis { "redis-server" } else { "nats-server" };
    let mut child = command.spawn().unwrap_or_else(|error| {
        panic!("cannot start {name} ({error}): scripts/test installs it with apt-get")
    });
    // Redis logs to stdout, NATS to stderr; the other stream is read and dropped.
    let stdout: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
    let stderr: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
    let (logged, other) = if is_redis { (stdout, stderr) } else { (stderr, stdout) };
    let (lines, log) = mpsc::channel();
    read_lines(logged, Some(lines));
    read_lines(other, None);
    let ready = if is_redis { "eady to accept connections" } else { "Server is ready" };
    let mut kind = kind.clone();
    let mut last = String::new();
    let stop = |child: &mut Child, why: String| {
        let _ = child.kill();
        let _ = child.wait();
        Err(format!("{name} {why}"))
    };
    loop {
        match log.recv_timeout(READY_TIMEOUT) {
            Ok(line) if line.contains(ready) => break,
            Ok(line) => {
                if let (Kind::Nats { port: 0 }, Some((_, addr))) =
                    (&kind, line.split_once("Listening for client connections on "))
                {
                    let port = addr.trim().rsplit(':').next().and_then(|port| port.parse().ok());
                    kind = Kind::Nats { port: port.unwrap_or_else(|| panic!("a port in {line:?}")) };
                }
                last = line;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return stop(&mut child, format!("exited before it was ready; its last line: {last}"));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return stop(&mut child, format!("was not ready within {READY_TIMEOUT:?}"));
            }
        }
    }
    match kind {
        Kind::RedisTcp { port } | Kind::Nats { port } => {
            if !ports::held_by(child.id(), port, Protocol::Tcp) {
                return stop(
                    &mut child,
                    format!("said it was ready, but is not the one listening on port {port}"),
                );
            }
        }
        Kind::RedisUnix { .. } => {}
    }
    Ok((kind, child, log))
}

/// Reads `stream` line by line on a thread, sending each line to `lines` (or dropping it):
/// a pipe nobody reads would stall the engine once full.
fn read_lines(stream: Box<dyn Read + Send>, lines: Option<mpsc::Sender<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if let Some(lines) = &lines {
                let _ = lines.send(line);
            }
        }
    });
}
