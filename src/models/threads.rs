//! The thread-per-connection model: each client gets a blocking thread of its own, and the
//! kernel shares the CPUs among them. The classic concurrent server, kept to compare with
//! the reactor: simple code, but a thread (stack, scheduling, context switches) per client.
//!
//! Handlers are shared by all of a service's threads behind a mutex. Other clients are
//! reached through their sockets' write sides, also behind mutexes; a client that does not
//! read blocks whoever writes to it, for up to `WRITE_TIMEOUT` (5 s), and is then dropped.

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::BlockingService;
use super::accept::{self, Dispatch};
use super::blocking::{self, Client, Room, lock};
use super::console::clients::{self, Clients, Tallied};
use crate::codec::Codec;
use crate::config::Limits;
use crate::handlers::{ConnId, Handler, Recipient};
use crate::stats::RunSummary;
use crate::timeline::Timeline;

/// Stack of a connection thread: enough for a handler and a codec, small enough for
/// thousands of threads.
const STACK_SIZE: usize = 256 * 1024;
/// How long a write to another client may block before that client is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// A service's state, shared by its connection threads.
struct Shared {
    /// The handler's name (for the console).
    name: String,
    codec: Codec,
    handler: Mutex<Box<dyn Handler>>,
    /// Each connected client's socket, for writing to it; the mutex keeps writes whole.
    members: Mutex<HashMap<ConnId, Arc<Mutex<TcpStream>>>>,
}

impl Room for Arc<Shared> {
    fn with_handler(&mut self, serve: &mut dyn FnMut(&mut dyn Handler)) {
        serve(lock(&self.handler).as_mut());
    }

    fn deliver(&mut self, sender: ConnId, to: Recipient, payload: &[u8]) {
        let targets: Vec<(ConnId, Arc<Mutex<TcpStream>>)> = {
            let members = lock(&self.members);
            match to {
                Recipient::Sender => members.get(&sender).map(|w| (sender, w.clone())).into_iter().collect(),
                Recipient::Conn(id) => members.get(&id).map(|w| (id, w.clone())).into_iter().collect(),
                Recipient::AllExcept(except) | Recipient::RoomNotice(except) => {
                    members.iter().filter(|(id, _)| **id != except).map(|(id, w)| (*id, w.clone())).collect()
                }
            }
        };
        let mut framed = Vec::new();
        self.codec.encode(payload, &mut framed);
        for (id, writer) in targets {
            if blocking::write_all(&lock(&writer), &framed).is_err() {
                warn!("dropping a client that does not read; conn={id}");
                let _ = lock(&writer).shutdown(Shutdown::Both);
                lock(&self.members).remove(&id);
            }
        }
    }
}

/// Counters the connection threads add to.
#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    open: AtomicUsize,
}

/// Serves `services` with a thread per connection until SIGINT/SIGTERM.
pub fn run(
    mut services: Vec<BlockingService>,
    config: &Limits,
    console: Option<Arc<Clients>>,
) -> io::Result<RunSummary> {
    let started = Instant::now();
    let listeners = accept::take_listeners(&mut services)?;
    let shared = services
        .into_iter()
        .map(|service| {
            Arc::new(Shared {
                name: service.name,
                codec: service.codec,
                handler: Mutex::new(service.handler),
                members: Mutex::new(HashMap::new()),
            })
        })
        .collect();
    let mut spawner = Spawner {
        shared,
        config,
        stop: Arc::new(AtomicBool::new(false)),
        counters: Arc::new(Counters::default()),
        timeline: config
            .trace_file
            .clone()
            .map(|path| Arc::new(Mutex::new(Timeline::new(path, config.trace_limit)))),
        threads: Vec::new(),
        console,
    };
    info!("started; model=threads listeners={}", listeners.len());
    accept::accept_loop(&listeners, &[], config.max_connections, &mut spawner)?;
    let Spawner { stop, counters, timeline, threads, .. } = spawner;
    info!("stopping; model=threads threads={}", threads.len());
    stop.store(true, Ordering::Release);
    for thread in threads {
        let _ = thread.join();
    }
    if let Some(timeline) = timeline {
        if let Err(error) = lock(&timeline).write() {
            warn!("cannot write the timeline; error={error}");
        }
    }
    let summary = RunSummary {
        uptime: started.elapsed(),
        workers: 1,
        stats: crate::stats::Stats {
            connections_accepted: counters.accepted.load(Ordering::Acquire),
            messages_in: counters.messages_in.load(Ordering::Acquire),
            messages_out: counters.messages_out.load(Ordering::Acquire),
            ..Default::default()
        },
        cut_at_deadline: 0,
    };
    info!("stopped; model=threads");
    log::debug!("stopped; model=threads {summary}");
    Ok(summary)
}

/// Each client served by a thread of its own.
struct Spawner<'a> {
    /// Each service's handler and members, by index.
    shared: Vec<Arc<Shared>>,
    config: &'a Limits,
    /// Set at the stop; each thread looks at it at least every `blocking::STOP_CHECK`.
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    timeline: Option<Arc<Mutex<Timeline>>>,
    /// The threads, joined at the stop (finished ones are forgotten as clients arrive).
    threads: Vec<JoinHandle<()>>,
    /// `--listen console=ADDR`: the clients being served, for its snapshots.
    console: Option<Arc<Clients>>,
}

impl Dispatch for Spawner<'_> {
    fn serving(&mut self) -> usize {
        self.counters.open.load(Ordering::Acquire)
    }

    fn dispatch(&mut self, service: usize, client: Client, _stop: &dyn Fn() -> bool) -> io::Result<()> {
        let state = &self.shared[service];
        let id = client.id;
        let writer = client.stream.try_clone()?;
        writer.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let writer = Arc::new(Mutex::new(writer));
        lock(&state.members).insert(id, writer.clone());
        let counters = &self.counters;
        counters.open.fetch_add(1, Ordering::AcqRel);
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        let (mut room, stop, counters, config, timeline) =
            (state.clone(), self.stop.clone(), counters.clone(), self.config.clone(), self.timeline.clone());
        let console = self.console.clone();
        let tally = console.as_ref().map(|console| {
            let (tally, counts) = clients::tally();
            console.open(id, &client.peer, &state.name, state.codec, counts);
            tally
        });
        let thread = std::thread::Builder::new().name(format!("conn-{id}")).stack_size(STACK_SIZE).spawn(
            move || {
                let mut write_own = |bytes: &[u8]| blocking::write_all(&lock(&writer), bytes);
                let should_stop = || stop.load(Ordering::Acquire);
                let codec = room.codec;
                let timeline = timeline.as_deref();
                let members = Arc::clone(&room);
                // With a console, the room also stores the client's counts for it.
                let mut tallied;
                let room: &mut dyn Room = match &tally {
                    Some(tally) => {
                        tallied = Tallied { room: &mut room, tally };
                        &mut tallied
                    }
                    None => &mut room,
                };
                match blocking::serve(client, codec, &config, room, &mut write_own, &should_stop, timeline) {
                    Ok(served) => {
                        counters.messages_in.fetch_add(served.messages_in, Ordering::Relaxed);
                        counters.messages_out.fetch_add(served.messages_out, Ordering::Relaxed);
                    }
                    Err(error) => debug!("client failed; conn={id} error={error}"),
                }
                lock(&members.members).remove(&id);
                if let Some(console) = &console {
                    console.close(id);
                }
                counters.open.fetch_sub(1, Ordering::AcqRel);
            },
        )?;
        self.threads.push(thread);
        Ok(())
    }

    fn accepted_all(&mut self) {
        self.threads.retain(|thread| !thread.is_finished());
    }
}
