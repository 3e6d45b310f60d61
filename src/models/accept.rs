//! The accept side of the blocking models (iterative, threads, fork), written once: one loop
//! waits on every listener and on the stop signals, takes each waiting client, turns it away
//! at `--max-connections`, and hands the others to the model. A model says only what it does
//! with a client (serve it inline, in a thread of its own, in a child process) by
//! implementing [`Dispatch`].
//!
//! The listeners are non-blocking, so one readiness event takes every waiting client; the
//! clients are blocking, as the serve loop of `blocking.rs` wants them.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

use log::warn;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use super::BlockingService;
use super::blocking::{self, Client};
use crate::codec::Codec;
use crate::handlers::ConnId;
use crate::sys::address::PeerAddr;
use crate::sys::socket::{gate, interrupted};

/// The signals that stop every blocking model.
const STOP_SIGNALS: [i32; 3] = [SIGINT, SIGTERM, SIGHUP];
/// The signals' token; listener `i` has `Token(i)`.
const SIGNALS: Token = Token(usize::MAX);

/// A listener of a blocking model, with the service (index) it serves and that service's
/// codec (to tell a client turned away).
pub struct ServiceListener {
    service: usize,
    codec: Codec,
    listener: TcpListener,
}

/// Takes the listeners out of `services`, non-blocking, for [`accept_loop`].
pub fn take_listeners(services: &mut [BlockingService]) -> io::Result<Vec<ServiceListener>> {
    let mut taken = Vec::new();
    for (service, spec) in services.iter_mut().enumerate() {
        for (listener, _) in std::mem::take(&mut spec.listeners) {
            listener.set_nonblocking(true)?;
            taken.push(ServiceListener { service, codec: spec.codec, listener });
        }
    }
    Ok(taken)
}

/// What a blocking model does with the clients the accept loop takes.
pub trait Dispatch {
    /// How many clients are being served now: at `--max-connections`, the next one is
    /// turned away.
    fn serving(&mut self) -> usize;
    /// Serves `client` of service `service`: inline, in a thread, in a child process.
    /// `stop` says whether a stop signal has arrived (a model that serves inline asks it
    /// while it serves). An error ends the server.
    fn dispatch(&mut self, service: usize, client: Client, stop: &dyn Fn() -> bool) -> io::Result<()>;
    /// A signal the model asked for beyond the stop signals arrived (fork: SIGCHLD).
    fn signalled(&mut self, signal: i32) {
        let _ = signal;
    }
    /// A listener's waiting clients are all taken (threads: forget the finished ones).
    fn accepted_all(&mut self) {}
}

/// Accepts clients on `listeners` and hands them to `model`, until SIGINT, SIGTERM or
/// SIGHUP; `also` are the further signals `model` hears of (`Dispatch::signalled`). Only a
/// failure of the poll or of the model ends it with an error.
pub fn accept_loop(
    listeners: &[ServiceListener],
    also: &[i32],
    max_connections: usize,
    model: &mut impl Dispatch,
) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(256);
    // Registered before any client is served: a model that forks must have its SIGCHLD
    // handler in place before its first child can exit.
    let signals = RefCell::new(Signals::new(STOP_SIGNALS.iter().chain(also))?);
    poll.registry().register(&mut *signals.borrow_mut(), SIGNALS, Interest::READABLE)?;
    for (index, listener) in listeners.iter().enumerate() {
        let fd = listener.listener.as_raw_fd();
        poll.registry().register(&mut SourceFd(&fd), Token(index), Interest::READABLE)?;
    }
    let stopping = Cell::new(false);
    // Signals the model asked for, taken with the stop signals: heard once the event that
    // brought them (or the client served inline meanwhile) is done with.
    let heard = RefCell::new(Vec::new());
    let stop = || {
        for signal in signals.borrow_mut().pending() {
            if STOP_SIGNALS.contains(&signal) {
                stopping.set(true);
            } else {
                heard.borrow_mut().push(signal);
            }
        }
        stopping.get()
    };
    let mut next_id = 0;
    while !stopping.get() {
        if let Err(error) = poll.poll(&mut events, None) {
            if interrupted(&error) {
                continue;
            }
            return Err(error);
        }
        for event in &events {
            if event.token() == SIGNALS {
                stop();
            } else {
                let ServiceListener { service, codec, listener } = &listeners[event.token().0];
                // Edge-triggered: take every waiting client.
                while !stopping.get() {
                    let Some((stream, peer)) = accept_next(listener)? else { break };
                    if model.serving() >= max_connections {
                        turn_away(stream, *codec);
                        continue;
                    }
                    next_id += 1;
                    model.dispatch(*service, Client { stream, id: ConnId(next_id), peer }, &stop)?;
                }
                model.accepted_all();
            }
            for signal in heard.take() {
                model.signalled(signal);
            }
        }
    }
    Ok(())
}

/// Takes the next waiting client from a non-blocking listener, as a blocking stream. `None`
/// when no client is waiting, or accepting failed (logged): either way, stop for now.
fn accept_next(listener: &TcpListener) -> io::Result<Option<(TcpStream, PeerAddr)>> {
    let (stream, peer) = match gate(|| listener.accept()) {
        Ok(Some(accepted)) => accepted,
        Ok(None) => return Ok(None),
        Err(error) => {
            warn!("accept failed; error={error}");
            return Ok(None);
        }
    };
    stream.set_nonblocking(false)?;
    let _ = stream.set_nodelay(true);
    Ok(Some((stream, PeerAddr::Tcp(peer))))
}

/// Tells a client the server is full (framed by `codec`) and closes it. The stream is
/// blocking (an accepted socket does not inherit the listener's `O_NONBLOCK`), so the few
/// bytes go out whole.
pub fn turn_away(stream: TcpStream, codec: Codec) {
    let mut reply = Vec::new();
    codec.notice(crate::codec::Notice::ServerFull, &mut reply);
    let _ = blocking::write_all(&stream, &reply);
    let _ = stream.shutdown(std::net::Shutdown::Write);
}
