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

use log::{debug, warn};
use mio::Interest;

use super::connection::StopReason;
use super::{CloseReason, READS_PER_TURN, Reactor};
use crate::codec::Notice;

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
        if let Err(error) = conn.linger(until_ms, reason) {
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
                    let reason = conn.lingering_reason().unwrap_or(StopReason::HandlerClosed);
                    self.close_later(key, CloseReason::Lingered(reason));
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

    /// A member that does not read what others send it: told so in its protocol where the
    /// protocol has words for it (a WebSocket close 1008, after what is queued), then given
    /// [`LINGER_TIMEOUT`] to read it before it is cut; cut at once where it has none (a line
    /// client has always been closed without a word).
    pub(super) fn drop_slow_consumer(&mut self, key: usize) {
        let until_ms = (self.clocks.started.elapsed() + LINGER_TIMEOUT).as_millis() as u64;
        let Some(conn) = self.conns.get_mut(key) else { return };
        self.telemetry.stats.slow_consumers += 1;
        warn!("slow consumer; conn={key} peer={} max_output={}", conn.peer(), self.limits.max_output);
        let codec = self.services[conn.service()].codec;
        if conn.push_notice(codec, Notice::TooSlow, &mut self.scratch.pool) {
            conn.tell_too_slow(until_ms);
            self.queues.lingering.push_back((until_ms, key));
            self.queue_flush(key);
        } else {
            self.close_later(key, CloseReason::SlowConsumer);
        }
    }

    /// Closes lingering connections whose time is up.
    pub(super) fn expire_lingering(&mut self, now: Instant) {
        let now_ms = now.saturating_duration_since(self.clocks.started).as_millis() as u64;
        while let Some(&(until_ms, key)) = self.queues.lingering.front() {
            if until_ms > now_ms {
                break;
            }
            self.queues.lingering.pop_front();
            let Some(conn) = self.conns.get(key) else { continue };
            if let Some(reason) = conn.lingers_until(until_ms) {
                self.close_later(key, CloseReason::LingerTimeout(reason));
            } else if conn.told_until(until_ms) {
                // Told it is too slow, and it still has not read it.
                self.close_later(key, CloseReason::SlowConsumer);
            }
        }
    }
}
