//! Talking to a running reactor from another thread: ask it to shut down, or for a copy of
//! its stats. Commands go through a channel, and a `mio::Waker` wakes the poll so they are
//! seen at once; nothing is shared with the reactor's hot path.

use std::io;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use mio::{Registry, Token, Waker};

use crate::stats::Stats;

/// How long [`ServerHandle::stats`] waits for the reactor before giving up.
const STATS_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A request to the reactor.
#[derive(Debug)]
pub enum Command {
    /// Stop accepting, flush, close, return (as SIGTERM does).
    Shutdown,
    /// Send back a copy of the stats.
    Stats(mpsc::SyncSender<Stats>),
}

/// A cloneable handle to a running server.
#[derive(Clone, Debug)]
pub struct ServerHandle {
    waker: Arc<Waker>,
    commands: Sender<Command>,
}

impl ServerHandle {
    /// Creates the handle and the reactor's end of the channel; the waker wakes `token`.
    pub(crate) fn new(registry: &Registry, token: Token) -> io::Result<(ServerHandle, Receiver<Command>)> {
        let waker = Arc::new(Waker::new(registry, token)?);
        let (commands, receiver) = mpsc::channel();
        Ok((ServerHandle { waker, commands }, receiver))
    }

    fn send(&self, command: Command) -> io::Result<()> {
        self.commands
            .send(command)
            .map_err(|_| io::Error::new(io::ErrorKind::NotConnected, "the server has stopped"))?;
        self.waker.wake()
    }

    /// Asks the server to shut down gracefully, as SIGTERM does. Returns at once.
    pub fn shutdown(&self) {
        // A server that has already stopped needs no telling.
        let _ = self.send(Command::Shutdown);
    }

    /// A copy of the server's stats, taken between two wakeups.
    pub fn stats(&self) -> io::Result<Stats> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Command::Stats(reply))?;
        answer
            .recv_timeout(STATS_REPLY_TIMEOUT)
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the server did not answer"))
    }
}
