//! The iterative model: one thread serves one client at a time. It accepts a client, serves
//! it until it leaves, and only then accepts the next; everyone else waits in the kernel's
//! backlog. This is the sequential server of the socket tutorials, kept to show what the
//! reactor's interleaving buys.
//!
//! `broadcast` works, and shows the point: the only client connected is the sender, so
//! every message reaches no one.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use log::{debug, info};

use super::BlockingService;
use super::accept::{self, Dispatch};
use super::blocking::{self, Alone, Client, Room};
use super::console::clients::{self, Clients, Tallied};
use crate::config::Limits;
use crate::stats::RunSummary;
use crate::timeline::Timeline;

/// Serves `services` one client at a time until SIGINT/SIGTERM.
pub fn run(
    mut services: Vec<BlockingService>,
    config: &Limits,
    console: Option<Arc<Clients>>,
) -> io::Result<RunSummary> {
    let started = Instant::now();
    let listeners = accept::take_listeners(&mut services)?;
    let timeline = config.trace_file.clone().map(|path| Mutex::new(Timeline::new(path, config.trace_limit)));
    let mut inline = Inline {
        services,
        config,
        timeline: timeline.as_ref(),
        summary: RunSummary { workers: 1, ..RunSummary::default() },
        console,
    };
    info!("started; model=iterative listeners={}", listeners.len());
    accept::accept_loop(&listeners, &[], config.max_connections, &mut inline)?;
    let mut summary = inline.summary;
    summary.uptime = started.elapsed();
    if let Some(timeline) = timeline {
        if let Err(error) = blocking::lock(&timeline).write() {
            log::warn!("cannot write the timeline; error={error}");
        }
    }
    info!("stopped; model=iterative");
    log::debug!("stopped; model=iterative {summary}");
    Ok(summary)
}

/// Each client served inline, to its end, before the next is accepted.
struct Inline<'a> {
    services: Vec<BlockingService>,
    config: &'a Limits,
    timeline: Option<&'a Mutex<Timeline>>,
    summary: RunSummary,
    /// `--listen console=ADDR`: the client being served, for its snapshots.
    console: Option<Arc<Clients>>,
}

impl Dispatch for Inline<'_> {
    fn serving(&mut self) -> usize {
        // Whoever was served before has left.
        0
    }

    fn dispatch(&mut self, service: usize, client: Client, stop: &dyn Fn() -> bool) -> io::Result<()> {
        let id = client.id;
        debug!("serving; conn={id} peer={}", client.peer);
        let writer = client.stream.try_clone()?;
        self.summary.stats.connections_accepted += 1;
        let spec = &mut self.services[service];
        let mut alone = Alone { handler: spec.handler.as_mut() };
        let mut write_own = |bytes: &[u8]| blocking::write_all(&writer, bytes);
        // With a console, the room also stores the client's counts for it.
        let tally = self.console.as_ref().map(|console| {
            let (tally, counts) = clients::tally();
            console.open(id, &client.peer, &spec.name, spec.codec, counts);
            tally
        });
        let mut tallied;
        let room: &mut dyn Room = match &tally {
            Some(tally) => {
                tallied = Tallied { room: &mut alone, tally };
                &mut tallied
            }
            None => &mut alone,
        };
        let served =
            blocking::serve(client, spec.codec, self.config, room, &mut write_own, stop, self.timeline);
        if let Some(console) = &self.console {
            console.close(id);
        }
        match served {
            Ok(served) => {
                self.summary.stats.messages_in += served.messages_in;
                self.summary.stats.messages_out += served.messages_out;
            }
            Err(error) => debug!("client failed; conn={id} error={error}"),
        }
        self.summary.stats.connections_closed += 1;
        Ok(())
    }
}
