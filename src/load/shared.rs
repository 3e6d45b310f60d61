//! What the loader's threads share: a few atomic counters for the live progress line, and
//! the points where they must agree (all connections up; the common start of the measured
//! run; every thread done sending). A workload's own shared state is its own
//! (`Exchange::Run`). Nothing on the per-message path touches these: each thread
//! publishes its totals a few times a second.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// What a process that runs one part of a larger run (`--processes`, an agent's share) is
/// told about the whole by its parent: when the run starts, how large the room is, and how
/// many lines were sent in it. A process that is the whole run hears none of these.
#[derive(Debug, Default)]
pub struct WholeRun {
    /// The start of the run on this host's monotonic clock, every part's; 0: not told.
    pub epoch_ns: AtomicU64,
    /// Connections up over every part (a room's members); 0: not told.
    pub members: AtomicU64,
    /// Lines (messages) sent over every part, once all have stopped sending; `u64::MAX`: not
    /// told yet.
    pub lines: AtomicU64,
    /// This process is one part of a larger run.
    pub part: AtomicBool,
}

impl WholeRun {
    /// A run that is one process's: nothing to be told.
    pub fn alone() -> Arc<WholeRun> {
        Arc::new(WholeRun { lines: AtomicU64::new(u64::MAX), ..WholeRun::default() })
    }

    /// One part of a larger run, told about it as it goes.
    pub fn part() -> Arc<WholeRun> {
        let whole = WholeRun::alone();
        whole.part.store(true, Ordering::Release);
        whole
    }

    /// Whether this process is one part of a larger run.
    pub fn is_part(&self) -> bool {
        self.part.load(Ordering::Acquire)
    }

    /// Lines sent over every part, once known.
    pub fn lines(&self) -> Option<u64> {
        Some(self.lines.load(Ordering::Acquire)).filter(|&lines| lines != u64::MAX)
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct Shared {
    /// Connections to open, over all threads.
    pub total_connections: usize,
    /// Connections whose connect finished, successfully or not.
    pub connects_finished: AtomicUsize,
    /// Connections up.
    pub established: AtomicUsize,
    /// The common start of the run (monotonic ns), set by the first thread to get there.
    pub run_start_ns: AtomicU64,
    /// Published totals, for progress and for the broadcast drain.
    pub sent: AtomicU64,
    /// Replies (or broadcast deliveries) received.
    pub received: AtomicU64,
    /// Mismatches, losses and connection failures so far.
    pub failures: AtomicU64,
    /// Broadcast deliveries expected so far (each message: every other connection).
    pub deliveries_expected: AtomicU64,
    /// Broadcast deliveries verified so far.
    pub deliveries_seen: AtomicU64,
    /// Each thread's p99 latency so far, in ns.
    pub p99_ns: Vec<AtomicU64>,
    /// Whether sending may start once all connections are up. A loader process that is one
    /// part of a larger run waits for its parent's go, so every process's connections are up
    /// before any sends (see `load::processes`).
    pub go: AtomicBool,
    /// Threads that finished their run and hold their connections (`--hold`).
    pub holding: AtomicUsize,
    /// When the last thread stopped sending (its time was up, its budget spent, or all its
    /// connections lost): the end of the measured window; 0 while sending goes on.
    pub run_end_ns: AtomicU64,
    /// Threads that stopped sending and published their final totals: until every thread
    /// has, `deliveries_expected` may still grow, so no thread's broadcast drain may settle.
    pub stopped_sending: AtomicUsize,
    /// Set from outside (SIGINT, SIGTERM in `evloop-load`): stop now, and report the run so
    /// far.
    pub stop: Arc<AtomicBool>,
    /// Threads that have prepared their run (broadcast: every member in the room) and wait
    /// for the go.
    pub prepared: AtomicUsize,
    /// What the parent says about the whole run, for a part of one.
    pub whole: Arc<WholeRun>,
}

impl Shared {
    /// Shared state for `threads` threads opening `total_connections` in all; `go` says
    /// whether they may start sending without waiting for a go; `stop` stops them; `whole`
    /// is what a part of a larger run is told about it.
    pub fn new(
        total_connections: usize,
        threads: usize,
        go: bool,
        stop: Arc<AtomicBool>,
        whole: Arc<WholeRun>,
    ) -> Shared {
        Shared {
            total_connections,
            connects_finished: AtomicUsize::new(0),
            established: AtomicUsize::new(0),
            run_start_ns: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            deliveries_expected: AtomicU64::new(0),
            deliveries_seen: AtomicU64::new(0),
            p99_ns: (0..threads).map(|_| AtomicU64::new(0)).collect(),
            go: AtomicBool::new(go),
            holding: AtomicUsize::new(0),
            run_end_ns: AtomicU64::new(0),
            stopped_sending: AtomicUsize::new(0),
            stop,
            prepared: AtomicUsize::new(0),
            whole,
        }
    }

    /// Whether every thread has prepared its run.
    pub fn all_prepared(&self) -> bool {
        self.prepared.load(Ordering::Acquire) >= self.p99_ns.len()
    }

    /// The connections up in the whole run: every part's, once told, else this process's.
    pub fn room_size(&self) -> u64 {
        match self.whole.members.load(Ordering::Acquire) {
            0 => self.established.load(Ordering::Acquire) as u64,
            members => members,
        }
    }

    /// Whether every connection attempt, in every thread, has finished.
    pub fn all_connects_finished(&self) -> bool {
        self.connects_finished.load(Ordering::Acquire) >= self.total_connections
    }

    /// Whether the run was told to stop (and report what it did so far).
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Whether the threads may start sending.
    pub fn may_run(&self) -> bool {
        self.go.load(Ordering::Acquire)
    }

    /// A thread stopped sending at `now_ns`.
    /// Call after publishing the thread's final totals.
    pub fn note_run_end(&self, now_ns: u64) {
        self.run_end_ns.fetch_max(now_ns, Ordering::AcqRel);
        self.stopped_sending.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether every thread has stopped sending, so the expected totals are final.
    pub fn all_stopped_sending(&self) -> bool {
        self.stopped_sending.load(Ordering::Acquire) >= self.p99_ns.len()
    }

    /// The run's start time: the first caller's `now_ns`, returned to every caller.
    pub fn agree_on_run_start(&self, now_ns: u64) -> u64 {
        match self.run_start_ns.compare_exchange(0, now_ns, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => now_ns,
            Err(earlier) => earlier,
        }
    }
}
