//! `evloop-load --processes N`: a run split over N loader processes.
//!
//! Threads share one file table, so one process can hold only as many connections as its
//! open-file limit allows (about 20,000 here); processes each have their own. Each child runs
//! one part of the run (its share of connections, messages and rates, with its own range of
//! connection ids) and talks to the parent over its standard streams:
//!
//! ```text
//! child  ──"connected N\n"──►  parent     (its connections are all up)
//! child  ◄──────"go\n"───────  parent     (every child's are: start sending)
//! child  ──"holding\n"──────►  parent     (with --hold: done, connections held)
//! child  ──one JSON line────►  parent     (its tally, histograms included)
//! ```
//!
//! So no process sends before every connection of the whole run is up, and the parent's
//! report merges exact histograms, not percentiles of percentiles.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::load::config::LoadConfig;
use crate::load::report::Report;
use crate::load::tally::Tally;

/// The flag that makes `evloop-load` run as one part of a multi-process run.
pub const PART_FLAG: &str = "--part-of-run";

/// What a child hands back.
#[derive(Debug, Serialize, Deserialize)]
struct PartResult {
    /// Its tally.
    tally: Tally,
    /// Its measured window, in ns.
    window_ns: u64,
}

struct Part {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

/// Runs `config` split over `processes` children of `program` (the `evloop-load` binary).
pub fn run(config: &LoadConfig, processes: u32, program: &Path, progress: bool) -> io::Result<Report> {
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
                stop(&mut parts);
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
                stop(&mut parts);
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
    // With --hold: every part holds its connections.
    if !config.hold.is_zero() {
        for (index, part) in parts.iter_mut().enumerate() {
            let mut line = String::new();
            part.stdout.read_line(&mut line)?;
            if line.trim() != "holding" {
                return Err(io::Error::other(format!("loader process {index} stopped before holding")));
            }
        }
        eprintln!("evloop-load: holding {established} connections for {:.1} s", config.hold.as_secs_f64());
    }
    // Phase 3: collect and merge.
    let mut total = Tally::default();
    let mut window = Duration::ZERO;
    for (index, part) in parts.iter_mut().enumerate() {
        let mut output = String::new();
        part.stdout.read_to_string(&mut output)?;
        let status = part.child.wait()?;
        let result: PartResult = serde_json::from_str(output.trim()).map_err(|error| {
            io::Error::other(format!("loader process {index} gave no result ({status}): {error}"))
        })?;
        total.merge(&result.tally);
        window = window.max(Duration::from_nanos(result.window_ns));
    }
    Ok(Report::new(config, &total, window))
}

/// In a child (run with [`PART_FLAG`]): runs this part, talking to the parent as the
/// module documentation shows, and prints the tally as the last line.
pub fn run_part(config: &LoadConfig) -> io::Result<()> {
    let (tally, window) = crate::load::run_part(config, &mut announce_and_wait, &mut announce_holding)?;
    let result = PartResult { tally, window_ns: window.as_nanos() as u64 };
    let json = serde_json::to_string(&result).map_err(io::Error::other)?;
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{json}")?;
    stdout.flush()
}

/// In a child: tells the parent its connections are up and waits for the go.
fn announce_and_wait(established: usize) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "connected {established}")?;
    stdout.flush()?;
    let mut go = String::new();
    io::stdin().lock().read_line(&mut go)?;
    if go.trim() != "go" {
        return Err(io::Error::other("the parent loader went away"));
    }
    Ok(())
}

/// In a child with `--hold`: tells the parent its run is over and its connections held.
fn announce_holding(_established: usize) {
    let mut stdout = io::stdout().lock();
    let _ = writeln!(stdout, "holding");
    let _ = stdout.flush();
}

fn stop(parts: &mut [Part]) {
    for part in parts {
        let _ = part.child.kill();
        let _ = part.child.wait();
    }
}
