//! The process-per-client model: the listener accepts, and each connection is served by a
//! child process of its own, forked for it, running the same blocking serve loop as the
//! threads model. The course's concurrent server by processes (inetd's `nowait` services
//! work this way): full isolation, at the price of a process per client.
//!
//! Children share nothing, so a room cannot live here: `broadcast` is refused (it would need
//! a backplane). Each child dies with the parent; the parent reaps every child that exits
//! (no zombies) and holds at most `--max-connections` of them.
//!
//! The children count what they serve, and the parent adds it up: before forking, the parent
//! maps shared memory with a slot per child it may hold ([`Tallies`]); each child stores its
//! counts in its slot once per read (two stores, not a message to the parent), and when the
//! parent reaps a child it adds the slot to its totals and frees it for the next child. A
//! child killed mid-way loses only the read it was serving, and not even that once its
//! replies went out (it stores before it writes).
//!
//! With a console listener, the parent's console thread lists the children's clients and
//! reads their counts from the same slots; there are no turns to show (each client is
//! served by a process of its own). Shortcut: a child inherits the console's sockets with
//! the rest of the parent's, so a watcher the console closes stays connected until the
//! children of that moment exit.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use signal_hook::consts::{SIGCHLD, SIGTERM};

use super::BlockingService;
use super::accept::{self, Dispatch};
use super::blocking::{self, Client, Room, Served};
use super::console::clients::Clients;
use crate::config::Limits;
use crate::handlers::{ConnId, Handler, Recipient};
use crate::stats::RunSummary;
use crate::sys::process::{self, Forked};
use crate::sys::shared_memory::SharedWords;

/// How long the stop waits for the children to exit once told to.
const CHILDREN_EXIT: Duration = Duration::from_secs(5);
/// Words per child's slot: messages and bytes in and out, and the rest of a cache line, so that
/// children on different cores never write to the same line.
const SLOT_WORDS: usize = 8;
const MESSAGES_IN: usize = 0;
const MESSAGES_OUT: usize = 1;
const BYTES_IN: usize = 2;
const BYTES_OUT: usize = 3;
/// The most slots made, whatever `--max-connections` says: Linux never runs more processes
/// than this (`PID_MAX_LIMIT`), so no more children can be held at once.
const MOST_CHILDREN: usize = 1 << 22;

/// Serves `services` with a process per connection until SIGINT, SIGTERM or SIGHUP.
pub fn run(
    mut services: Vec<BlockingService>,
    config: &Limits,
    console: Option<Arc<Clients>>,
) -> io::Result<RunSummary> {
    let started = Instant::now();
    let listeners = accept::take_listeners(&mut services)?;
    let tallies = Tallies::new(config.max_connections.min(MOST_CHILDREN))?;
    let most_children = tallies.slots();
    let mut forker = Forker {
        services,
        config,
        parent: process::own_pid(),
        children: HashMap::new(),
        tallies,
        summary: RunSummary { workers: 1, ..RunSummary::default() },
        console,
    };
    info!("started; model=fork listeners={}", listeners.len());
    accept::accept_loop(&listeners, &[SIGCHLD], most_children, &mut forker)?;
    info!("stopping; model=fork children={}", forker.children.len());
    for &pid in forker.children.keys() {
        process::signal_pid(pid, SIGTERM);
    }
    let deadline = Instant::now() + CHILDREN_EXIT;
    while !forker.children.is_empty() && Instant::now() < deadline {
        forker.reap();
        std::thread::sleep(Duration::from_millis(10));
    }
    if !forker.children.is_empty() {
        warn!("children still running at exit; count={}", forker.children.len());
        // What they stored so far.
        for &(slot, _) in forker.children.values() {
            add_counts(&mut forker.summary, forker.tallies.read(slot));
        }
    }
    let mut summary = forker.summary;
    summary.uptime = started.elapsed();
    info!("stopped; model=fork");
    Ok(summary)
}

/// Each client served by a child process, forked for it.
struct Forker<'a> {
    services: Vec<BlockingService>,
    config: &'a Limits,
    /// This process: a child that finds another parent (this one died first) ends at once.
    parent: i32,
    /// The children alive: PID, and the slot each counts in, and its client's id.
    children: HashMap<i32, (usize, ConnId)>,
    tallies: Tallies,
    summary: RunSummary,
    /// `--listen console=ADDR`: the clients being served, for its snapshots.
    console: Option<Arc<Clients>>,
}

impl Forker<'_> {
    /// Reaps the children that exited: no zombies, their counts added, their slots free.
    fn reap(&mut self) {
        let Forker { children, tallies, summary, console, .. } = self;
        process::reap_children(|pid| {
            if let Some((slot, id)) = children.remove(&pid) {
                // Off the console's list before the slot is freed for another child.
                if let Some(console) = console {
                    console.close(id);
                }
                add_counts(summary, tallies.release(slot));
                summary.stats.connections_closed += 1;
            }
        });
    }
}

impl Dispatch for Forker<'_> {
    fn serving(&mut self) -> usize {
        self.reap();
        self.children.len()
    }

    fn dispatch(&mut self, service: usize, client: Client, _stop: &dyn Fn() -> bool) -> io::Result<()> {
        // The accept loop holds no more children than there are slots.
        let Some(slot) = self.tallies.take() else {
            warn!("no slot free for a child; conn={}", client.id);
            return Ok(());
        };
        let forked = match process::fork() {
            Ok(forked) => forked,
            Err(error) => {
                self.tallies.release(slot);
                return Err(error);
            }
        };
        match forked {
            Forked::Child => {
                // The child must never return into the parent's code: whatever happens (an
                // error, a panic), it ends here.
                process::become_child_of(self.parent, SIGTERM);
                let id = client.id;
                let spec = &mut self.services[service];
                let slot = self.tallies.slot(slot);
                // No stop to look for: the parent's signals are the parent's, and it stops
                // its children with SIGTERM.
                let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let writer = client.stream.try_clone()?;
                    let mut room = Child { handler: spec.handler.as_mut(), slot };
                    let mut write_own = |bytes: &[u8]| blocking::write_all(&writer, bytes);
                    blocking::serve(
                        client,
                        spec.codec,
                        self.config,
                        &mut room,
                        &mut write_own,
                        &|| false,
                        None,
                    )
                }));
                let code = match served {
                    Ok(Ok(_)) => 0,
                    Ok(Err(error)) => {
                        debug!("client failed; conn={id} error={error}");
                        0
                    }
                    Err(_) => 101,
                };
                process::exit_child(code);
            }
            Forked::Parent(pid) => {
                if let Some(console) = &self.console {
                    let (region, spec) = (Arc::clone(&self.tallies.region), &self.services[service]);
                    let counts = Box::new(move || read_slot(region.slot(slot, SLOT_WORDS)));
                    console.open(client.id, &client.peer, &spec.name, spec.codec, counts);
                }
                self.children.insert(pid, (slot, client.id));
                // The child has its own copy of the socket; the parent's goes.
                drop(client);
                self.summary.stats.connections_accepted += 1;
                Ok(())
            }
        }
    }

    fn signalled(&mut self, _sigchld: i32) {
        self.reap();
    }
}

/// A child's room: its handler alone (processes share no room), and its slot, where it
/// keeps its counts for the parent.
struct Child<'a> {
    handler: &'a mut dyn Handler,
    slot: &'a [AtomicU64],
}

impl Room for Child<'_> {
    fn with_handler(&mut self, serve: &mut dyn FnMut(&mut dyn Handler)) {
        serve(&mut *self.handler);
    }

    fn deliver(&mut self, _sender: ConnId, _to: Recipient, _payload: &[u8]) {
        // No other client is reachable from here.
    }

    fn tally(&mut self, served: &Served) {
        self.slot[MESSAGES_IN].store(served.messages_in, Ordering::Release);
        self.slot[MESSAGES_OUT].store(served.messages_out, Ordering::Release);
        self.slot[BYTES_IN].store(served.bytes_in, Ordering::Release);
        self.slot[BYTES_OUT].store(served.bytes_out, Ordering::Release);
    }
}

/// The children's counts: a slot each in memory shared with them, mapped before the first
/// fork. A slot belongs to one child from the fork until the parent reaps it; only that
/// child writes it, only the parent reads it, so no lock is needed.
struct Tallies {
    /// Shared with the console thread, which reads the slots of the children alive.
    region: Arc<SharedWords>,
    /// Slots free again (their child reaped).
    free: Vec<usize>,
    /// Slots from here on were never handed out (their pages not touched yet).
    untouched: usize,
}

impl Tallies {
    /// Room for `slots` children's counts (at least one).
    fn new(slots: usize) -> io::Result<Tallies> {
        let region = Arc::new(SharedWords::for_children(slots.max(1) * SLOT_WORDS)?);
        Ok(Tallies { region, free: Vec::new(), untouched: 0 })
    }

    /// How many children can count at once.
    fn slots(&self) -> usize {
        self.region.words().len() / SLOT_WORDS
    }

    /// A slot for the next child, if one is free.
    fn take(&mut self) -> Option<usize> {
        if let Some(slot) = self.free.pop() {
            return Some(slot);
        }
        (self.untouched < self.slots()).then(|| {
            self.untouched += 1;
            self.untouched - 1
        })
    }

    /// The words of slot `slot`.
    fn slot(&self, slot: usize) -> &[AtomicU64] {
        self.region.slot(slot, SLOT_WORDS)
    }

    /// What slot `slot` holds now.
    fn read(&self, slot: usize) -> Served {
        read_slot(self.slot(slot))
    }

    /// Frees slot `slot`, whose child is gone: returns what it counted, and zeroes it for
    /// the next child.
    fn release(&mut self, slot: usize) -> Served {
        let served = self.read(slot);
        for word in self.slot(slot) {
            word.store(0, Ordering::Relaxed);
        }
        self.free.push(slot);
        served
    }
}

/// What a child's slot holds now.
fn read_slot(words: &[AtomicU64]) -> Served {
    Served {
        messages_in: words[MESSAGES_IN].load(Ordering::Acquire),
        messages_out: words[MESSAGES_OUT].load(Ordering::Acquire),
        bytes_in: words[BYTES_IN].load(Ordering::Acquire),
        bytes_out: words[BYTES_OUT].load(Ordering::Acquire),
    }
}

/// Adds a child's counts to the summary.
fn add_counts(summary: &mut RunSummary, served: Served) {
    summary.stats.messages_in += served.messages_in;
    summary.stats.messages_out += served.messages_out;
}
