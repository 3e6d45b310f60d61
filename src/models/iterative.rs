//! The iterative model: one thread serves one client at a time. It accepts a client, serves
//! it until it leaves, and only then accepts the next; everyone else waits in the kernel's
//! backlog. This is the sequential server of the socket tutorials, kept to show what the
//! reactor's interleaving buys.
//!
//! `broadcast` works, and shows the point: the only client connected is the sender, so
//! every message reaches no one.

use std::cell::{Cell, RefCell};
use std::io;
use std::sync::Mutex;
use std::time::Instant;

use log::{debug, info};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use super::BlockingService;
use super::blocking::{self, Alone, Client};
use crate::config::Limits;
use crate::handlers::ConnId;
use crate::stats::RunSummary;
use crate::timeline::Timeline;

const SIGNALS: Token = Token(usize::MAX);

/// Serves `services` one client at a time until SIGINT/SIGTERM.
pub fn run(mut services: Vec<BlockingService>, config: &Limits) -> io::Result<RunSummary> {
    let started = Instant::now();
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(64);
    let signals = RefCell::new(Signals::new([SIGINT, SIGTERM, SIGHUP])?);
    poll.registry().register(&mut *signals.borrow_mut(), SIGNALS, Interest::READABLE)?;
    let listeners = blocking::register_listeners(&poll, &services)?;
    info!("started; model=iterative listeners={}", listeners.len());
    let stopping = Cell::new(false);
    let stop = || {
        if signals.borrow_mut().pending().next().is_some() {
            stopping.set(true);
        }
        stopping.get()
    };
    let mut summary = RunSummary { workers: 1, ..RunSummary::default() };
    let timeline = config.trace_file.clone().map(|path| Mutex::new(Timeline::new(path, config.trace_limit)));
    let mut next_id = 0;
    while !stop() {
        if let Err(error) = poll.poll(&mut events, None) {
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        let ready: Vec<usize> =
            events.iter().map(|event| event.token().0).filter(|&token| token != SIGNALS.0).collect();
        for index in ready {
            let (service, listener) = &listeners[index];
            // Edge-triggered: take every waiting client, one after the other.
            while !stop() {
                let Some((stream, peer)) = blocking::accept_next(listener)? else { break };
                next_id += 1;
                let id = ConnId(next_id);
                debug!("serving; conn={id} peer={peer}");
                let writer = stream.try_clone()?;
                summary.stats.connections_accepted += 1;
                let spec = &mut services[*service];
                let mut room = Alone { handler: spec.handler.as_mut() };
                let mut write_own = |bytes: &[u8]| blocking::write_all(&writer, bytes);
                let client = Client { stream, id, peer };
                match blocking::serve(
                    client,
                    spec.codec,
                    config,
                    &mut room,
                    &mut write_own,
                    &stop,
                    timeline.as_ref(),
                ) {
                    Ok(served) => {
                        summary.stats.messages_in += served.messages_in;
                        summary.stats.messages_out += served.messages_out;
                    }
                    Err(error) => debug!("client failed; conn={id} error={error}"),
                }
                summary.stats.connections_closed += 1;
            }
        }
    }
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
