//! Worker processes: `evloop-server --workers N` runs N copies of the same single-threaded
//! reactor, each a process of its own, all accepting on the same ports through
//! `SO_REUSEPORT` (the prefork model nginx uses). Each process may hold ~20,000 descriptors
//! here, so this is how one server passes that limit, and uses more than one core.
//!
//! The parent binds every address first with `SO_REUSEPORT` but never listens on it: that
//! resolves port 0 and keeps the port reserved across worker restarts, while the kernel only
//! hands connections to sockets that listen (the workers'). Workers share nothing; the parent
//! forwards SIGINT/SIGTERM (and SIGUSR1, which reloads TLS certificates), restarts a worker
//! that dies, and adds up their summaries.

use std::io::{self, BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::ListenSpec;
use crate::server::Listening;
use crate::stats::RunSummary;
use crate::sys::process::{make_worker, send_signal};
use log::{error, info, warn};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

/// Set in a worker's environment to its index; tells `evloop-server` it is a worker.
pub const WORKER_ENV: &str = "EVLOOP_WORKER";
/// Set in a worker's environment to the descriptor of the memory the workers share their
/// metrics in (inherited from the supervisor).
pub const METRICS_FD_ENV: &str = "EVLOOP_METRICS_FD";

/// The descriptor of the memory this worker shares its metrics in, if it is a worker with
/// one.
pub fn shared_metrics_fd() -> Option<i32> {
    std::env::var(METRICS_FD_ENV).ok()?.parse().ok()
}

/// A worker that dies sooner than this after starting counts as crashing at start-up.
const EARLY_DEATH: Duration = Duration::from_secs(2);
/// After this many early deaths in a row, the parent gives up instead of restarting.
const MAX_EARLY_DEATHS: u32 = 3;

/// This process's worker index, if it is a worker.
pub fn worker_index() -> Option<usize> {
    std::env::var(WORKER_ENV).ok()?.parse().ok()
}

/// The startup lines of `specs`, whose addresses the parent has resolved (port 0 replaced):
/// printed once every worker listens.
pub fn startup_lines(specs: &[ListenSpec]) -> Vec<Listening> {
    specs
        .iter()
        .flat_map(|spec| {
            spec.addrs.iter().map(|addr| Listening { handler: spec.handler.clone(), addr: addr.clone() })
        })
        .collect()
}

/// How to start one worker: the program, its arguments, and how many startup lines it
/// prints once it listens (its readiness signal).
#[derive(Clone, Debug)]
pub struct WorkerCommand {
    /// The server binary.
    pub program: std::path::PathBuf,
    /// Its arguments (concrete addresses, no `--workers`).
    pub args: Vec<String>,
    /// Startup lines to wait for.
    pub startup_lines: usize,
    /// The memory the workers share their metrics in (set by [`supervise`]): a slot per
    /// worker, which a worker restarted in its place takes over.
    pub metrics_fd: Option<i32>,
}

struct Worker {
    index: usize,
    child: Child,
    stdout: BufReader<ChildStdout>,
    started: Instant,
    early_deaths: u32,
    exited: bool,
}

impl WorkerCommand {
    /// Starts worker `index` and waits until it listens.
    fn spawn(&self, index: usize, early_deaths: u32) -> io::Result<Worker> {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .env(WORKER_ENV, index.to_string())
            .envs(self.metrics_fd.iter().map(|fd| (METRICS_FD_ENV, fd.to_string())))
            // The supervisor speaks to systemd for all of them.
            .env_remove(crate::sys::notify::NOTIFY_SOCKET)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        make_worker(&mut command, SIGTERM);
        let mut child = command.spawn()?;
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        for _ in 0..self.startup_lines {
            let mut line = String::new();
            if stdout.read_line(&mut line)? == 0 {
                let status = child.wait()?;
                return Err(io::Error::other(format!("worker {index} failed to start ({status})")));
            }
        }
        info!("worker started; index={index} pid={}", child.id());
        Ok(Worker { index, child, stdout, started: Instant::now(), early_deaths, exited: false })
    }
}

/// Starts `count` workers, then supervises them until SIGINT/SIGTERM and their exit. Calls
/// `ready` once all of them listen. Returns the workers' summaries added up.
pub fn supervise(command: &WorkerCommand, count: usize, ready: impl FnOnce()) -> io::Result<RunSummary> {
    use std::os::fd::AsRawFd as _;
    let mut command = command.clone();
    // Made before any worker and kept open (inheritable) for the workers restarted later;
    // anonymous, so nothing is left behind however this process ends.
    let shared =
        crate::sys::shared_memory::SharedWords::create_file(count * crate::reactor::METRICS_SLOT_WORDS)?;
    command.metrics_fd = Some(shared.as_raw_fd());
    supervise_workers(&command, count, ready)
}

fn supervise_workers(command: &WorkerCommand, count: usize, ready: impl FnOnce()) -> io::Result<RunSummary> {
    // Registered before the first worker starts, so no death goes unnoticed.
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGUSR1])?;
    let mut workers = Vec::with_capacity(count);
    for index in 0..count {
        match command.spawn(index, 0) {
            Ok(worker) => workers.push(worker),
            Err(error) => {
                stop_all(&mut workers);
                return Err(error);
            }
        }
    }
    ready();
    let mut total = RunSummary::default();
    let mut stopping = false;
    let mut failure = None;
    'supervise: for signal in signals.forever() {
        match signal {
            SIGUSR1 => {
                // Certificate renewal: each worker reads the pair again.
                for worker in workers.iter().filter(|worker| !worker.exited) {
                    send_signal(&worker.child, SIGUSR1);
                }
            }
            SIGINT | SIGTERM | SIGHUP => {
                info!("signal received, stopping workers; signal={signal} workers={}", workers.len());
                crate::sys::notify::notify("STOPPING=1");
                stopping = true;
                // A second signal is forwarded too: workers then end their drain at once.
                for worker in workers.iter().filter(|worker| !worker.exited) {
                    send_signal(&worker.child, SIGTERM);
                }
            }
            _ => {}
        }
        for slot in 0..workers.len() {
            let worker = &mut workers[slot];
            if worker.exited {
                continue;
            }
            let Some(status) = worker.child.try_wait()? else {
                continue;
            };
            worker.exited = true;
            if let Some(summary) = read_summary(&mut worker.stdout) {
                total.merge(&summary);
            }
            if stopping {
                continue;
            }
            error!("worker died; index={} pid={} status={status}", worker.index, worker.child.id());
            let early_deaths =
                if worker.started.elapsed() < EARLY_DEATH { worker.early_deaths + 1 } else { 0 };
            if early_deaths >= MAX_EARLY_DEATHS {
                failure = Some(io::Error::other(format!(
                    "worker {} died {early_deaths} times right after starting; giving up",
                    worker.index
                )));
                stopping = true;
                stop_all(&mut workers);
                continue 'supervise;
            }
            match command.spawn(worker.index, early_deaths) {
                Ok(replacement) => {
                    warn!("worker restarted; index={} pid={}", replacement.index, replacement.child.id());
                    workers[slot] = replacement;
                }
                Err(error) => {
                    failure = Some(error);
                    stopping = true;
                    stop_all(&mut workers);
                }
            }
        }
        if stopping && workers.iter().all(|worker| worker.exited) {
            break;
        }
    }
    match failure {
        Some(error) => Err(error),
        None => Ok(total),
    }
}

/// Asks every running worker to stop (they drain as usual).
fn stop_all(workers: &mut [Worker]) {
    for worker in workers.iter().filter(|worker| !worker.exited) {
        send_signal(&worker.child, SIGTERM);
    }
}

/// The JSON summary a worker prints on its last line, if it got that far.
fn read_summary(stdout: &mut BufReader<ChildStdout>) -> Option<RunSummary> {
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).ok()?;
    rest.lines().rev().find_map(|line| serde_json::from_str(line).ok())
}
