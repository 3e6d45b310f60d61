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
use std::time::Instant;

use log::{debug, info, warn};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use super::BlockingService;
use super::blocking::{self, Alone, Client};
use crate::config::Limits;
use crate::handlers::ConnId;
use crate::stats::RunSummary;
use crate::sys::process::{self, Forked};

const SIGNALS: Token = Token(usize::MAX);

/// Serves `services` with a process per connection until SIGINT, SIGTERM or SIGHUP.
pub fn run(mut services: Vec<BlockingService>, config: &Limits) -> io::Result<RunSummary> {
    let started = Instant::now();
    let parent = process::own_pid();
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(64);
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP, SIGCHLD])?;
    poll.registry().register(&mut signals, SIGNALS, Interest::READABLE)?;
    let listeners = blocking::register_listeners(&poll, &services)?;
    info!("started; model=fork listeners={}", listeners.len());
    let mut children: HashSet<i32> = HashSet::new();
    let mut summary = RunSummary { workers: 1, ..RunSummary::default() };
    let mut next_id = 0;
    'serve: loop {
        if let Err(error) = poll.poll(&mut events, None) {
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        for event in &events {
            if event.token() == SIGNALS {
                for signal in signals.pending() {
                    if signal != SIGCHLD {
                        break 'serve;
                    }
                }
                reap(&mut children, &mut summary);
                continue;
            }
            let (service, listener) = &listeners[event.token().0];
            while let Some((stream, peer)) = blocking::accept_next(listener)? {
                reap(&mut children, &mut summary);
                let spec = &mut services[*service];
                if children.len() >= config.max_connections {
                    blocking::turn_away(stream, spec.codec);
                    continue;
                }
                next_id += 1;
                match process::fork()? {
                    Forked::Child => {
                        // The child must never return into the parent's code: whatever
                        // happens (an error, a panic), it ends here.
                        process::become_child_of(parent, SIGTERM);
                        let id = ConnId(next_id);
                        let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            let writer = stream.try_clone()?;
                            let mut room = Alone { handler: spec.handler.as_mut() };
                            let mut write_own = |bytes: &[u8]| blocking::write_all(&writer, bytes);
                            let client = Client { stream, id, peer };
                            blocking::serve(
                                client,
                                spec.codec,
                                config,
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
                        drop(stream);
                        children.insert(pid);
                        summary.stats.connections_accepted += 1;
                    }
                }
            }
        }
    }
    info!("stopping; model=fork children={}", children.len());
    for &pid in &children {
        process::signal_pid(pid, SIGTERM);
    }
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    while !children.is_empty() && Instant::now() < deadline {
        reap(&mut children, &mut summary);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    if !children.is_empty() {
        warn!("children still running at exit; count={}", children.len());
    }
    summary.uptime = started.elapsed();
    info!("stopped; model=fork");
    Ok(summary)
}

/// Reaps the children that exited: no zombies, and their slots free.
fn reap(children: &mut HashSet<i32>, summary: &mut RunSummary) {
    process::reap_children(|pid| {
        if children.remove(&pid) {
            summary.stats.connections_closed += 1;
        }
    });
}
