//! `evloop-load --processes N`: a run split over N loader processes.
//!
//! Threads share one file table, so one process can hold only as many connections as its
//! open-file limit allows (about 20,000 on a machine with a 20,000 limit); processes each
//! have their own. Each child runs one part of the run (its share of connections, messages and rates, with its own range of
//! connection ids) and talks to the parent over its standard streams:
//!
//! ```text
//! child  ──"connected N\n"──►  parent     (its connections are all up)
//! child  ◄──────"go\n"───────  parent     (every child's are: start sending)
//! child  ──"holding\n"──────►  parent     (with --hold: done, connections held)
//! child  ◄─────"stop\n"───────  parent     (the parent was told to stop: SIGTERM, Ctrl-C)
//! child  ──one JSON line────►  parent     (its tally, histograms included)
//! ```
//!
//! So no process sends before every connection of the whole run is up, and the parent's
//! report merges exact histograms, not percentiles of percentiles.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::mem;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::load::config::LoadConfig;
use crate::load::report::Report;
use crate::load::tally::Tally;

/// The flag that makes `evloop-load` run as one part of a multi-process run.
pub const PART_FLAG: &str = "--part-of-run";

/// How often the parent looks whether it was told to stop, to tell its children.
const STOP_CHECK_EVERY: Duration = Duration::from_millis(20);

/// What a child hands back.
#[derive(Debug, Serialize, Deserialize)]
struct PartResult {
    /// Its tally.
    tally: Tally,
    /// Its measured window, in ns.
    window_ns: u64,
    /// It was stopped before its end.
    #[serde(default)]
    interrupted: bool,
}

struct Part {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

/// Runs `config` split over `processes` children of `program` (the `evloop-load` binary).
/// Once `stop` is set, every child is told to stop and report what it did so far.
pub fn run(
    config: &LoadConfig,
    processes: u32,
    program: &Path,
    progress: bool,
    stop: &AtomicBool,
) -> io::Result<Report> {
    config.validate().map_err(|message| io::Error::new(io::ErrorKind::InvalidInput, message))?;
    if let Some(why) = config.workload.kind().one_process {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, why));
    }
    if processes > config.connections / config.threads.max(1) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--processes times --threads must not exceed the number of connections",
        ));
    }
    let started = Instant::now();
    let mut parts = Vec::new();
    for index in 0..processes {
        let part = config.part(index, processes);
        let spawned = Command::new(program)
            .args(part.to_args())
            .args([PART_FLAG, "--no-progress"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn();
        match spawned {
            Ok(mut child) => {
                let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
                parts.push(Part { child, stdout });
            }
            Err(error) => {
                kill_all(&mut parts);
                return Err(error);
            }
        }
    }
    // Phase 1: every part's connections are up.
    let mut established = 0;
    for (index, part) in parts.iter_mut().enumerate() {
        let mut line = String::new();
        part.stdout.read_line(&mut line)?;
        match line.strip_prefix("connected ").and_then(|count| count.trim().parse::<u64>().ok()) {
            Some(count) => established += count,
            None => {
                kill_all(&mut parts);
                return Err(io::Error::other(format!("loader process {index} failed before connecting")));
            }
        }
    }
    if progress {
        eprintln!(
            "evloop-load: {established} of {} connections up in {processes} processes after {:.1} s; sending",
            config.connections,
            started.elapsed().as_secs_f64()
        );
    }
    // Phase 2: go.
    for part in &mut parts {
        if let Some(stdin) = &mut part.child.stdin {
            stdin.write_all(b"go\n")?;
            stdin.flush()?;
        }
    }
    // From here on, a stop is passed on to every child, until the results are in.
    let stdins: Vec<ChildStdin> = parts.iter_mut().filter_map(|part| part.child.stdin.take()).collect();
    let finished = AtomicBool::new(false);
    thread::scope(|scope| {
        scope.spawn(|| forward_stop(stdins, stop, &finished));
        let collected = collect(config, &mut parts, established, stop);
        finished.store(true, Ordering::Release);
        collected
    })
}

/// With `--hold`, waits until every part holds its connections; then collects and merges
/// their results.
fn collect(
    config: &LoadConfig,
    parts: &mut [Part],
    established: u64,
    stop: &AtomicBool,
) -> io::Result<Report> {
    // What a part printed instead of "holding": stopped first, its result.
    let mut early = vec![String::new(); parts.len()];
    if !config.hold.is_zero() {
        for (index, part) in parts.iter_mut().enumerate() {
            let mut line = String::new();
            part.stdout.read_line(&mut line)?;
            if line.trim() == "holding" {
                continue;
            }
            if !stop.load(Ordering::Acquire) {
                return Err(io::Error::other(format!("loader process {index} stopped before holding")));
            }
            early[index] = line;
        }
        if early.iter().all(String::is_empty) {
            eprintln!(
                "evloop-load: holding {established} connections for {:.1} s",
                config.hold.as_secs_f64()
            );
        }
    }
    let mut total = Tally::default();
    let mut window = Duration::ZERO;
    let mut interrupted = stop.load(Ordering::Acquire);
    for (index, part) in parts.iter_mut().enumerate() {
        let mut output = mem::take(&mut early[index]);
        part.stdout.read_to_string(&mut output)?;
        let status = part.child.wait()?;
        let result: PartResult = serde_json::from_str(output.trim()).map_err(|error| {
            io::Error::other(format!("loader process {index} gave no result ({status}): {error}"))
        })?;
        total.merge(&result.tally);
        window = window.max(Duration::from_nanos(result.window_ns));
        interrupted |= result.interrupted;
    }
    let mut report = Report::new(config, &total, window);
    report.interrupted = interrupted;
    Ok(report)
}

/// Tells every child to stop (a "stop" line on its stdin) once `stop` is set, unless the
/// run finished first. Their stdin closes when this returns (a child takes that as a stop
/// too: its parent is gone).
fn forward_stop(mut stdins: Vec<ChildStdin>, stop: &AtomicBool, finished: &AtomicBool) {
    while !finished.load(Ordering::Acquire) {
        if stop.load(Ordering::Acquire) {
            for stdin in &mut stdins {
                let _ = stdin.write_all(b"stop\n").and_then(|()| stdin.flush());
            }
            return;
        }
        thread::sleep(STOP_CHECK_EVERY);
    }
}

/// In a child (run with [`PART_FLAG`]): runs this part, talking to the parent as the
/// module documentation shows, and prints the tally as the last line.
/// `stop` stops it early, as the parent's "stop" line does.
pub fn run_part(config: &LoadConfig, stop: Arc<AtomicBool>) -> io::Result<()> {
    let mut connected = |established| announce_and_wait(established, &stop);
    let (tally, window) = crate::load::run_part(config, &mut connected, &mut announce_holding, stop.clone())?;
    let interrupted = stop.load(Ordering::Acquire);
    let result = PartResult { tally, window_ns: window.as_nanos() as u64, interrupted };
    let json = serde_json::to_string(&result).map_err(io::Error::other)?;
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{json}")?;
    stdout.flush()
}

/// In a child: tells the parent its connections are up and waits for the go; then listens
/// for a stop.
fn announce_and_wait(established: usize, stop: &Arc<AtomicBool>) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "connected {established}")?;
    stdout.flush()?;
    let mut go = String::new();
    io::stdin().lock().read_line(&mut go)?;
    if go.trim() != "go" {
        return Err(io::Error::other("the parent loader went away"));
    }
    let stop = stop.clone();
    thread::spawn(move || watch_parent(&stop));
    Ok(())
}

/// In a child, once sending started: a "stop" line from the parent, or its stdin closing
/// (the parent is gone), stops the run.
fn watch_parent(stop: &AtomicBool) {
    let mut line = String::new();
    while matches!(io::stdin().lock().read_line(&mut line), Ok(read) if read > 0) && line.trim() != "stop" {
        line.clear();
    }
    stop.store(true, Ordering::Release);
}

/// In a child with `--hold`: tells the parent its run is over and its connections held.
fn announce_holding(_established: usize) {
    let mut stdout = io::stdout().lock();
    let _ = writeln!(stdout, "holding");
    let _ = stdout.flush();
}

fn kill_all(parts: &mut [Part]) {
    for part in parts {
        let _ = part.child.kill();
        let _ = part.child.wait();
    }
}
