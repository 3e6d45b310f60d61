//! `evloop-load --processes N`: a run split over N loader processes.
//!
//! Threads share one file table, so one process can hold only as many connections as its
//! open-file limit allows (about 20,000 on a machine with a 20,000 limit); processes each
//! have their own. Each child runs one part of the run (its share of connections, messages and rates, with its own range of
//! connection ids) and talks to the parent over its standard streams:
//!
//! ```text
//! child  ──"progress {json}\n"─►  parent     (once a second from its start: its progress)
//! child  ──"connected N\n"──►  parent     (its connections are all up, its run prepared)
//! child  ◄"go epoch=E members=M\n" parent  (every child's are: start sending at E, on the
//!                                          host's monotonic clock; M connections up in all)
//! child  ──"stopped L\n"────►  parent     (it stopped sending, L lines sent)
//! child  ◄───"lines T\n"─────  parent     (every child stopped: T lines sent in all)
//! child  ──"holding\n"──────►  parent     (with --hold: done, connections held)
//! child  ◄─────"stop\n"───────  parent     (the parent was told to stop: SIGTERM, Ctrl-C)
//! child  ──one JSON line────►  parent     (its tally, histograms included)
//! ```
//!
//! So no process sends before every connection of the whole run is up, all start at one
//! instant (a moment ahead of the go, so each is waiting for it when it comes), and the
//! parent's report merges exact histograms, not percentiles of percentiles. The room's size
//! and its lines in all let a broadcast spread over processes expect every delivery its
//! members are owed, whichever process sent the line. A child whose stdin closes (its parent
//! is gone) stops as if told to.
//!
//! The parent's side is `Children`: the processes, each read on a thread of its own, what
//! they say arriving as `Said` on one channel. An agent (`load::agents`) runs its share of
//! a distributed run the same way.

use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::load::Parent;
use crate::load::clock::now_ns;
use crate::load::config::LoadConfig;
use crate::load::progress::{Progress, Snapshot};
use crate::load::report::Report;
use crate::load::shared::WholeRun;
use crate::load::tally::Tally;

/// The flag that makes `evloop-load` run as one part of a multi-process run.
pub const PART_FLAG: &str = "--part-of-run";

/// How often the parent looks whether it was told to stop, to tell its children.
const STOP_CHECK_EVERY: Duration = Duration::from_millis(20);
/// How often the parent's progress line is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// How far ahead of the go the start is: every child hears the go, and is waiting for the
/// start when it comes (its threads look for the go every 5 ms).
pub(crate) const START_AHEAD: Duration = Duration::from_millis(20);

/// The go line: start at `epoch_ns` (the host's monotonic clock), `members` up in all.
pub(crate) fn go_line(epoch_ns: u64, members: u64) -> String {
    format!("go epoch={epoch_ns} members={members}")
}

/// What a child hands back.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct PartResult {
    /// Its tally.
    pub tally: Tally,
    /// Its measured window, in ns.
    pub window_ns: u64,
    /// It was stopped before its end.
    #[serde(default)]
    pub interrupted: bool,
}

impl PartResult {
    /// Parts of one run as one: tallies merged (histograms exactly), the longest window
    /// (the parts started together), interrupted if any part was.
    pub fn merge(parts: impl IntoIterator<Item = PartResult>) -> PartResult {
        let mut total = PartResult::default();
        for part in parts {
            total.tally.merge(&part.tally);
            total.window_ns = total.window_ns.max(part.window_ns);
            total.interrupted |= part.interrupted;
        }
        total
    }
}

/// What a child said, as its parent hears it.
#[derive(Debug)]
pub(crate) enum Said {
    /// Its progress, once a second.
    Progress(Snapshot),
    /// Its connections are up (this many of them came up).
    Connected(u64),
    /// It stopped sending, this many lines (messages) sent.
    Stopped(u64),
    /// Its run is over and its connections are held (`--hold`).
    Holding,
    /// Its result: its last word.
    Result(Box<PartResult>),
    /// It ended, or said something that is not the protocol, before its result.
    Ended(String),
}

/// Loader processes, each running one part of a run; killed on drop if still running.
#[derive(Debug)]
pub(crate) struct Children {
    children: Vec<Child>,
    stdins: Vec<Option<ChildStdin>>,
    said: Receiver<(usize, Said)>,
}

impl Children {
    /// Starts `program` (the `evloop-load` binary) once per part, each with its part's flags
    /// (`LoadConfig::to_args`). `wake`, if given, is woken after each thing a child says
    /// (an agent's loop waits on its poll, not on the channel).
    pub fn start(
        program: &Path,
        parts: &[Vec<String>],
        wake: Option<Arc<mio::Waker>>,
    ) -> io::Result<Children> {
        let (tell, said) = mpsc::channel();
        let mut children = Children { children: Vec::new(), stdins: Vec::new(), said };
        for (index, args) in parts.iter().enumerate() {
            let mut child = Command::new(program)
                .args(args)
                .args([PART_FLAG, "--no-progress"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()?;
            let stdout = child.stdout.take().expect("piped stdout");
            children.stdins.push(child.stdin.take());
            children.children.push(child);
            let (tell, wake) = (tell.clone(), wake.clone());
            thread::Builder::new()
                .name(format!("evloop-load-part-{index}"))
                .spawn(move || listen(index, BufReader::new(stdout), &tell, wake.as_deref()))?;
        }
        Ok(children)
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.children.len()
    }

    /// The next thing a child said, waiting up to `wait`.
    pub fn next(&self, wait: Duration) -> Option<(usize, Said)> {
        self.said.recv_timeout(wait).ok()
    }

    /// Tells every child `word` ("go", "stop"); one that is gone is skipped.
    pub fn tell_all(&mut self, word: &str) {
        for stdin in self.stdins.iter_mut().flatten() {
            let _ = writeln!(stdin, "{word}").and_then(|()| stdin.flush());
        }
    }

    /// Waits for child `index` to exit (it said its last word), and says how it did.
    pub fn exit_status(&mut self, index: usize) -> io::Result<ExitStatus> {
        self.stdins[index] = None;
        self.children[index].wait()
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.children {
            if !matches!(child.try_wait(), Ok(Some(_))) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// On a thread: reads child `index`'s lines and passes on what it says, until it ends.
fn listen(index: usize, stdout: impl BufRead, tell: &Sender<(usize, Said)>, wake: Option<&mio::Waker>) {
    let say = |said: Said| {
        let sent = tell.send((index, said)).is_ok();
        if let Some(wake) = wake {
            let _ = wake.wake();
        }
        sent
    };
    for line in stdout.lines() {
        let Ok(line) = line else { break };
        let said = if let Some(count) = line.strip_prefix("connected ") {
            match count.trim().parse() {
                Ok(count) => Said::Connected(count),
                Err(_) => Said::Ended(format!("loader process {index} said {line:?}")),
            }
        } else if let Some(json) = line.strip_prefix("progress ") {
            match serde_json::from_str(json) {
                Ok(snapshot) => Said::Progress(snapshot),
                Err(_) => continue,
            }
        } else if let Some(lines) = line.strip_prefix("stopped ") {
            match lines.trim().parse() {
                Ok(lines) => Said::Stopped(lines),
                Err(_) => Said::Ended(format!("loader process {index} said {line:?}")),
            }
        } else if line.trim() == "holding" {
            Said::Holding
        } else {
            let result = serde_json::from_str(line.trim()).map(Box::new);
            let last = match result {
                Ok(result) => Said::Result(result),
                Err(error) => Said::Ended(format!("loader process {index} gave no result: {error}")),
            };
            say(last);
            return;
        };
        if !say(said) {
            return;
        }
    }
    say(Said::Ended(format!("loader process {index} ended before its result")));
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
    check_split(config, processes, "--processes")?;
    let parts: Vec<Vec<String>> =
        (0..processes).map(|index| config.part(index, processes).to_args()).collect();
    let mut children = Children::start(program, &parts, None)?;
    let result = collect(config, &mut children, progress, stop)?;
    let mut report = Report::new(config, &result.tally, Duration::from_nanos(result.window_ns));
    report.interrupted = result.interrupted || stop.load(Ordering::Acquire);
    Ok(report)
}

/// Refuses a split of `config` into `parts` that cannot be made: a workload that runs in one
/// process only, or parts with fewer connections than threads. `flag` names the split.
pub(crate) fn check_split(config: &LoadConfig, parts: u32, flag: &str) -> io::Result<()> {
    if let Some(why) = (config.workload.kind().one_process)(config) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, why));
    }
    if u64::from(parts) * u64::from(config.threads.max(1)) > u64::from(config.connections) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{flag} times --threads must not exceed the number of connections"),
        ));
    }
    Ok(())
}

/// Waits until every child's connections are up, tells them all to go, passes a stop on,
/// says when all hold their connections (`--hold`), and merges their results.
fn collect(
    config: &LoadConfig,
    children: &mut Children,
    progress: bool,
    stop: &AtomicBool,
) -> io::Result<PartResult> {
    let count = children.len();
    let started = Instant::now();
    let mut line = Progress::new(progress);
    let mut next_tick = started + PROGRESS_EVERY;
    let mut snapshots = vec![Snapshot::default(); count];
    let mut connected: Vec<Option<u64>> = vec![None; count];
    let mut holding = vec![false; count];
    let mut stopped: Vec<Option<u64>> = vec![None; count];
    let mut results: Vec<Option<PartResult>> = (0..count).map(|_| None).collect();
    let (mut went, mut told_stop, mut announced_hold) = (false, false, config.hold.is_zero());
    let mut told_lines = false;
    while results.iter().any(Option::is_none) {
        match children.next(STOP_CHECK_EVERY) {
            Some((index, Said::Progress(snapshot))) => snapshots[index] = snapshot,
            Some((index, Said::Connected(established))) => connected[index] = Some(established),
            Some((index, Said::Holding)) => holding[index] = true,
            Some((index, Said::Stopped(lines))) => stopped[index] = Some(lines),
            Some((index, Said::Result(result))) => {
                results[index] = Some(*result);
                children.exit_status(index)?;
            }
            Some((index, Said::Ended(why))) => {
                let status = children.exit_status(index)?;
                line.finish();
                return Err(io::Error::other(format!("{why} ({status})")));
            }
            None => {}
        }
        if !went && connected.iter().all(Option::is_some) {
            went = true;
            let members = connected.iter().flatten().sum();
            children.tell_all(&go_line(now_ns() + START_AHEAD.as_nanos() as u64, members));
            if progress {
                line.finish();
                eprintln!(
                    "evloop-load: {} of {} connections up in {count} processes after {:.1} s; sending",
                    connected.iter().flatten().sum::<u64>(),
                    config.connections,
                    started.elapsed().as_secs_f64()
                );
            }
        }
        if !told_lines && stopped.iter().all(Option::is_some) {
            told_lines = true;
            children.tell_all(&format!("lines {}", stopped.iter().flatten().sum::<u64>()));
        }
        if !told_stop && stop.load(Ordering::Acquire) {
            told_stop = true;
            children.tell_all("stop");
        }
        if !announced_hold && holding.iter().all(|&held| held) {
            announced_hold = true;
            line.finish();
            let established: u64 = connected.iter().flatten().sum();
            eprintln!(
                "evloop-load: holding {established} connections for {:.1} s",
                config.hold.as_secs_f64()
            );
        }
        if Instant::now() >= next_tick {
            next_tick = Instant::now() + PROGRESS_EVERY;
            let mut total = Snapshot::default();
            snapshots.iter().for_each(|snapshot| total.add(snapshot));
            // Nothing to show before the children's first word.
            if total.connections > 0 {
                line.tick(&total, "");
            }
        }
    }
    line.finish();
    Ok(PartResult::merge(results.into_iter().flatten()))
}

/// In a child (run with [`PART_FLAG`]): runs this part, talking to the parent as the
/// module documentation shows, and prints the tally as the last line.
/// `stop` stops it early, as the parent's "stop" line does.
pub fn run_part(config: &LoadConfig, stop: Arc<AtomicBool>) -> io::Result<()> {
    let (go, gone) = mpsc::channel();
    let whole = WholeRun::part();
    let (watched, told) = (stop.clone(), whole.clone());
    thread::spawn(move || watch_parent(&watched, &told, &go));
    let mut parent = ToParent { go: gone };
    let (tally, window) = crate::load::run_part(config, &mut parent, whole, stop.clone())?;
    let interrupted = stop.load(Ordering::Acquire);
    let result = PartResult { tally, window_ns: window.as_nanos() as u64, interrupted };
    let json = serde_json::to_string(&result).map_err(io::Error::other)?;
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{json}")?;
    stdout.flush()
}

/// A child's parent, spoken to on stdout.
struct ToParent {
    /// A go from the parent (the watcher stored its start and the room's size first).
    go: Receiver<()>,
}

impl ToParent {
    fn say(&self, line: impl std::fmt::Display) {
        let mut stdout = io::stdout().lock();
        let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
    }
}

impl Parent for ToParent {
    /// Tells the parent its connections are up and waits for the go. Told to stop instead
    /// (or its parent gone), it returns too: the run then ends at once, its report showing
    /// nothing sent.
    fn connected(&mut self, established: usize) -> io::Result<()> {
        let mut stdout = io::stdout().lock();
        writeln!(stdout, "connected {established}")?;
        stdout.flush()?;
        drop(stdout);
        let _ = self.go.recv();
        Ok(())
    }

    fn progress(&mut self, snapshot: Snapshot) {
        if let Ok(json) = serde_json::to_string(&snapshot) {
            self.say(format_args!("progress {json}"));
        }
    }

    fn stopped(&mut self, lines: u64) {
        self.say(format_args!("stopped {lines}"));
    }

    fn holding(&mut self, _established: usize) {
        self.say("holding");
    }
}

/// In a child, from its start: "go" (with the start and the room's size) and "lines" are
/// passed on; a "stop" line from the parent, or its stdin closing (the parent is gone),
/// stops the run.
fn watch_parent(stop: &AtomicBool, whole: &WholeRun, go: &Sender<()>) {
    let mut line = String::new();
    while matches!(io::stdin().lock().read_line(&mut line), Ok(read) if read > 0) {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("go") => {
                for word in words {
                    let number = |value: &str| value.parse().unwrap_or(0);
                    match word.split_once('=') {
                        Some(("epoch", value)) => whole.epoch_ns.store(number(value), Ordering::Release),
                        Some(("members", value)) => whole.members.store(number(value), Ordering::Release),
                        _ => {}
                    }
                }
                let _ = go.send(());
            }
            Some("lines") => {
                if let Some(lines) = words.next().and_then(|lines| lines.parse().ok()) {
                    whole.lines.store(lines, Ordering::Release);
                }
            }
            Some("stop") => break,
            _ => {}
        }
        line.clear();
    }
    stop.store(true, Ordering::Release);
}
