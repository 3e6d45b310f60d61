//! The process-per-client model: the listener accepts, and each connection is served by a
//! child process of its own, forked for it, running the same blocking serve loop as the
//! threads model. The course's concurrent server by processes (inetd's `nowait` services
//! work this way): full isolation, at the price of a process per client.
//!
//! Children share nothing, so a room cannot live here: `broadcast` is refused (it would need
//! a backplane). Each child dies with the parent; the parent reaps every child that exits
//! (no zombies) and holds at most `--max-connections` of them. Messages are counted in the
//! children, which do not report back: the summary counts connections only.

use std::collections::HashSet;
use std::io;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use signal_hook::consts::{SIGCHLD, SIGTERM};

use super::BlockingService;
use super::accept::{self, Dispatch};
use super::blocking::{self, Alone, Client};
use crate::config::Limits;
use crate::stats::RunSummary;
use crate::sys::process::{self, Forked};

/// How long the stop waits for the children to exit once told to.
const CHILDREN_EXIT: Duration = Duration::from_secs(5);

/// Serves `services` with a process per connection until SIGINT, SIGTERM or SIGHUP.
pub fn run(mut services: Vec<BlockingService>, config: &Limits) -> io::Result<RunSummary> {
    let started = Instant::now();
    let listeners = accept::take_listeners(&mut services)?;
    let mut forker = Forker {
        services,
        config,
        parent: process::own_pid(),
        children: HashSet::new(),
        summary: RunSummary { workers: 1, ..RunSummary::default() },
    };
    info!("started; model=fork listeners={}", listeners.len());
    accept::accept_loop(&listeners, &[SIGCHLD], config.max_connections, &mut forker)?;
    info!("stopping; model=fork children={}", forker.children.len());
    for &pid in &forker.children {
        process::signal_pid(pid, SIGTERM);
    }
    let deadline = Instant::now() + CHILDREN_EXIT;
    while !forker.children.is_empty() && Instant::now() < deadline {
        forker.reap();
        std::thread::sleep(Duration::from_millis(10));
    }
    if !forker.children.is_empty() {
        warn!("children still running at exit; count={}", forker.children.len());
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
    /// The children alive, by PID.
    children: HashSet<i32>,
    summary: RunSummary,
}

impl Forker<'_> {
    /// Reaps the children that exited: no zombies, and their places free.
    fn reap(&mut self) {
        let Forker { children, summary, .. } = self;
        process::reap_children(|pid| {
            if children.remove(&pid) {
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
        match process::fork()? {
            Forked::Child => {
                // The child must never return into the parent's code: whatever happens (an
                // error, a panic), it ends here.
                process::become_child_of(self.parent, SIGTERM);
                let id = client.id;
                let spec = &mut self.services[service];
                // No stop to look for: the parent's signals are the parent's, and it stops
                // its children with SIGTERM.
                let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let writer = client.stream.try_clone()?;
                    let mut room = Alone { handler: spec.handler.as_mut() };
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
                // The child has its own copy of the socket; the parent's goes.
                drop(client);
                self.children.insert(pid);
                self.summary.stats.connections_accepted += 1;
                Ok(())
            }
        }
    }

    fn signalled(&mut self, _sigchld: i32) {
        self.reap();
    }
}
