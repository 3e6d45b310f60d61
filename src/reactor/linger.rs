//! Lingering close: how a connection that the server ends (a handler's `close`, shutdown)
//! goes away without losing its last replies.
//!
//! A write only hands bytes to the kernel. If the server then closes a socket that still has
//! unread input (a client that pipelined more requests, or kept sending), the kernel answers
//! with a reset and throws away whatever it had not delivered yet: the client loses replies
//! the server "wrote". So once everything is written, the server shuts down its sending side
//! (the kernel delivers what is queued, then FIN), keeps reading and discarding until the
//! client closes too, and only then closes: the lingering close of nginx and Apache. A
//! client that never closes is cut off after [`LINGER_TIMEOUT`].

use std::time::{Duration, Instant};

use log::debug;
use mio::Interest;

use super::connection::StopReason;
use super::{CloseReason, READS_PER_TURN, Reactor};

/// How long a closing connection waits for its client to close.
const LINGER_TIMEOUT: Duration = Duration::from_secs(2);

impl Reactor {
    /// A stopped connection has written everything: close it now if its client already
    /// closed (nothing more can arrive), else linger.
    pub(super) fn finish_stopped(&mut self, key: usize, reason: StopReason) {
        if reason == StopReason::PeerClosed {
            return self.close_later(key, CloseReason::Finished(reason));
        }
        let until_ms = (self.clocks.started.elapsed() + LINGER_TIMEOUT).as_millis() as u64;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let Err(error) = conn.linger(until_ms) {
            return self.close_later(key, CloseReason::Error(error));
        }
        if !self.update_interest(key, Interest::READABLE) {
            return;
        }
        debug!("lingering; conn={key} reason={reason:?}");
        self.queues.lingering.push_back((until_ms, key));
        // Input may be waiting already, and its edge came while reading was stopped.
        self.owe_read(key);
    }

    /// Reads and drops what a lingering connection's client sends; its end of stream
    /// closes the connection.
    pub(super) fn discard_input(&mut self, key: usize) {
        let mut buffer = std::mem::take(&mut self.scratch.read);
        let mut reads = 0;
        while let Some(conn) = self.conns.get_mut(key) {
            if conn.is_closing() {
                break;
            }
            if reads == READS_PER_TURN {
                self.owe_read(key);
                break;
            }
            match conn.read(&mut buffer, self.clocks.now_tick) {
                Ok(Some(0)) => {
                    self.close_later(key, CloseReason::Lingered);
                    break;
                }
                Ok(Some(n)) => {
                    reads += 1;
                    self.telemetry.stats.bytes_in += n as u64;
                }
                Ok(None) => break,
                Err(error) => {
                    self.close_later(key, CloseReason::Error(error));
                    break;
                }
            }
        }
        self.scratch.read = buffer;
    }

    /// Closes lingering connections whose time is up.
    pub(super) fn expire_lingering(&mut self, now: Instant) {
        let now_ms = now.saturating_duration_since(self.clocks.started).as_millis() as u64;
        while let Some(&(until_ms, key)) = self.queues.lingering.front() {
            if until_ms > now_ms {
                break;
            }
            self.queues.lingering.pop_front();
            let still_lingering = self.conns.get(key).is_some_and(|conn| conn.lingers_until(until_ms));
            if still_lingering {
                self.close_later(key, CloseReason::LingerTimeout);
            }
        }
    }
}
