//! Connecting: open this thread's connections (paced by `--connect-rate` if given), find
//! out which succeeded, time out the ones that take too long, and take each through its
//! handshakes (TLS, WebSocket, the workload's opening message) until it is up.

use std::io;
use std::mem;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use mio::{Interest, Token};

use super::Engine;
use super::conns::{Handshake, LoadConn};
use crate::codec::{Codec, ws};
use crate::load::clock::now_ns;
use crate::load::config::LoadConfig;
use crate::load::socket::LoadSocket;
use crate::load::tally::Tally;
use crate::load::workloads::Exchange;

/// Connects in progress at once when no `--connect-rate` is given: as fast as the server
/// accepts, without flooding its backlog.
const MAX_PENDING_CONNECTS: usize = 256;
/// How often connects in progress are checked against `--connect-timeout`.
const CONNECT_CHECK_EVERY_NS: u64 = 50_000_000;
/// Longest answer to the WebSocket opening request.
const MAX_WS_ANSWER: usize = 16 * 1024;

/// The connect phase's own state.
#[derive(Debug)]
pub(super) struct Connecting {
    /// `--tls`: the client settings every connection's session is made with.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The next connection to open (0-based within the plan).
    next: u32,
    /// Connects (and handshakes) in progress.
    pending: usize,
    started_ns: u64,
    next_timeout_check_ns: u64,
}

impl Connecting {
    /// Nothing opened yet; the phase starts at `now`.
    pub fn new(config: &LoadConfig, now: u64) -> io::Result<Connecting> {
        let tls = match &config.tls {
            Some(trust) => Some(crate::load::tls::client_config(trust).map_err(io::Error::other)?),
            None => None,
        };
        Ok(Connecting { tls, next: 0, pending: 0, started_ns: now, next_timeout_check_ns: now })
    }
}

impl<W: Exchange> Engine<'_, W> {
    /// Opens the connections whose turn has come.
    pub(super) fn start_connects(&mut self, now: u64) {
        while self.connecting.next < self.plan.count && self.connecting.pending < MAX_PENDING_CONNECTS {
            if self.next_connect_due().is_some_and(|due| due > now) {
                break;
            }
            let id = self.plan.first_id + self.connecting.next;
            self.connecting.next += 1;
            self.open(id, now);
        }
    }

    /// When the next paced connect is due, if one is waiting for its turn.
    pub(super) fn next_connect_due(&self) -> Option<u64> {
        let rate = self.plan.connect_rate?;
        let connecting = &self.connecting;
        (connecting.next < self.plan.count && connecting.pending < MAX_PENDING_CONNECTS)
            .then(|| connecting.started_ns + (f64::from(connecting.next) * 1e9 / rate) as u64)
    }

    /// Whether every connection of this thread was tried and has finished connecting.
    pub(super) fn connects_done(&self) -> bool {
        self.connecting.next == self.plan.count && self.connecting.pending == 0
    }

    fn open(&mut self, id: u32, now: u64) {
        self.tally.attempted += 1;
        if self.tally.first_connect_ns == 0 {
            self.tally.first_connect_ns = now;
        }
        let source = self.config.source_for(id);
        let tls = self.connecting.tls.as_ref().map(|config| (config, self.config.tls_name_for(id)));
        let stream = LoadSocket::open(self.config.target_for(id), source, tls).and_then(|mut stream| {
            let key = self.conns.vacant_key();
            self.poll.registry().register(
                &mut stream,
                Token(key),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(stream)
        });
        match stream {
            Ok(stream) => {
                let datagram = stream.is_datagram();
                let key = self.conns.insert(LoadConn::new(id, stream, self.config.codec, now));
                self.connecting.pending += 1;
                if datagram {
                    // No handshake: a UDP socket is ready at once.
                    self.finish_connect(key);
                }
            }
            Err(error) => {
                self.tally.connect_failures.count(&error);
                self.shared.connects_finished.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// A connecting socket became writable (or failed), or a handshake has news: find out
    /// which. A connected socket goes through its handshakes (TLS's, then WebSocket's
    /// opening request, then the workload's opening message) before it is up.
    pub(super) fn finish_connect(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        match conn.handshake {
            Handshake::Tls { .. } => return self.drive_tls(key),
            Handshake::WebSocket => return self.read_ws_answer(key),
            Handshake::Opening => return self.read_opening_answer(key),
            Handshake::None => {}
        }
        let outcome = match conn.stream.connect_result() {
            Ok(true) => Ok(()),
            Ok(false) => return, // not yet
            Err(error) => Err(error),
        };
        if outcome.is_ok() && conn.stream.is_tls() {
            conn.handshake = Handshake::Tls { started_ns: now_ns() };
            return self.drive_tls(key);
        }
        if outcome.is_ok() && self.config.codec == Codec::Ws {
            return self.open_ws(key);
        }
        match outcome {
            Ok(()) => self.handshakes_done(key),
            Err(error) => self.connected(key, Err(error)),
        }
    }

    /// Moves a TLS handshake on; once done, the connection is up (or opens its WebSocket).
    fn drive_tls(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        match conn.stream.drive_tls() {
            Ok(true) if conn.stream.tls_ready() => {
                if let Handshake::Tls { started_ns } = conn.handshake {
                    Tally::record(&mut self.tally.tls_handshake, now_ns() - started_ns);
                }
                conn.handshake = Handshake::None;
                if self.config.codec == Codec::Ws {
                    return self.open_ws(key);
                }
                self.handshakes_done(key);
                // Plaintext that came with the handshake's end (a server that speaks first).
                if self.conns.get(key).is_some_and(|conn| conn.up) {
                    self.read(key, true);
                }
            }
            Ok(true) => {}
            Ok(false) => {
                let error = io::Error::new(io::ErrorKind::ConnectionReset, "closed during the TLS handshake");
                self.connected(key, Err(error));
            }
            Err(error) => self.connected(key, Err(error)),
        }
    }

    /// Sends the WebSocket opening request; the connection is up once the server switches.
    fn open_ws(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        conn.handshake = Handshake::WebSocket;
        let host = self.config.target_for(conn.id).to_string();
        let key_text = ws::base64(&u128::from(conn.id).to_be_bytes());
        conn.queue_raw(&ws::client::request(&host, &self.config.ws_path, &key_text));
        self.wire().flush(key);
        // The answer may be there already: its edge may have come with this one.
        self.read_ws_answer(key);
    }

    /// Reads the server's answer to the opening request: a switch makes the connection
    /// up (and what came after the answer is its first reply bytes); anything else fails it.
    fn read_ws_answer(&mut self, key: usize) {
        let mut buffer = [0u8; 4096];
        let Some(conn) = self.conns.get_mut(key) else { return };
        loop {
            match conn.read(&mut buffer) {
                Ok(Some(0)) => {
                    let error = io::Error::new(io::ErrorKind::ConnectionReset, "closed before switching");
                    return self.connected(key, Err(error));
                }
                Ok(Some(n)) => conn.partial.extend_from_slice(&buffer[..n]),
                Ok(None) => break,
                Err(error) => return self.connected(key, Err(error)),
            }
            if conn.partial.len() > MAX_WS_ANSWER {
                break;
            }
        }
        let Some((status, length)) = ws::client::response_head(&conn.partial) else {
            if conn.partial.len() > MAX_WS_ANSWER {
                let error = io::Error::other("an answer to the WebSocket request over 16 KiB");
                return self.connected(key, Err(error));
            }
            return;
        };
        if !ws::client::switched(status) {
            let error = io::Error::other(format!(
                "the server did not switch to WebSocket: {}",
                String::from_utf8_lossy(status)
            ));
            return self.connected(key, Err(error));
        }
        conn.partial.drain(..length);
        conn.handshake = Handshake::None;
        self.handshakes_done(key);
        self.take_early_replies(key);
    }

    /// Every handshake below the workload's is done: send its opening message (`-1`) if it
    /// has one, and await its answer (`--first-expect`) before the connection is up.
    fn handshakes_done(&mut self, key: usize) {
        let Some(opening) = self.workload.opening() else { return self.connected(key, Ok(())) };
        let conn = &mut self.conns[key];
        conn.frame(self.config.codec, u64::MAX, |out| out.extend_from_slice(opening.message));
        if opening.answer.is_none() {
            self.connected(key, Ok(()));
            return self.wire().flush(key);
        }
        conn.handshake = Handshake::Opening;
        self.wire().flush(key);
        // The answer may be there already.
        self.read_opening_answer(key);
    }

    /// Reads the answer to the opening message: exactly the bytes expected make the
    /// connection up (what came after them is its first reply bytes); anything else fails
    /// it, counted as a mismatch at its offset.
    fn read_opening_answer(&mut self, key: usize) {
        let Some(expected) = self.workload.opening().and_then(|opening| opening.answer) else { return };
        let mut buffer = [0u8; 4096];
        let Some(conn) = self.conns.get_mut(key) else { return };
        while conn.partial.len() < expected.len() {
            match conn.read(&mut buffer) {
                Ok(Some(0)) => {
                    let error = io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "closed before answering the first message",
                    );
                    return self.connected(key, Err(error));
                }
                Ok(Some(n)) => conn.partial.extend_from_slice(&buffer[..n]),
                Ok(None) => break,
                Err(error) => return self.connected(key, Err(error)),
            }
        }
        let got = &conn.partial[..conn.partial.len().min(expected.len())];
        if let Some(at) = got.iter().zip(expected.iter()).position(|(got, want)| got != want) {
            let id = conn.id;
            self.tally.mismatch_at(id, Some(at as u64), expected, &conn.partial);
            let error = io::Error::other("the answer to the first message differed");
            return self.connected(key, Err(error));
        }
        if conn.partial.len() < expected.len() {
            return; // so far so good; the rest is to come
        }
        conn.partial.drain(..expected.len());
        conn.received_bytes = expected.len() as u64;
        conn.handshake = Handshake::None;
        self.connected(key, Ok(()));
        self.take_early_replies(key);
    }

    /// Reply bytes that came with the end of a handshake, once the connection is up.
    fn take_early_replies(&mut self, key: usize) {
        if self.conns.get(key).is_some_and(|conn| conn.up && !conn.partial.is_empty()) {
            let early = mem::take(&mut self.conns[key].partial);
            self.take(key, &early, now_ns());
        }
    }

    /// A connect finished (a WebSocket's once switched): the connection is up, or counted
    /// as failed and dropped.
    fn connected(&mut self, key: usize, outcome: io::Result<()>) {
        self.connecting.pending -= 1;
        let now = now_ns();
        self.tally.last_connect_ns = now;
        let conn = &self.conns[key];
        match outcome {
            Ok(()) => {
                Tally::record(&mut self.tally.connect, now - conn.connect_started_ns);
                self.tally.established += 1;
                self.shared.established.fetch_add(1, Ordering::AcqRel);
                self.workload.on_up(conn.id, &conn.stream);
                self.conns.mark_up(key);
            }
            Err(error) => {
                log::debug!("connect failed; id={} error={error}", conn.id);
                self.tally.connect_failures.count(&error);
                self.conns.remove(key);
            }
        }
        // Counted last: a thread that sees every connect finished then sees every
        // connection up counted, and every member known to its workload (a room's members
        // and their addresses are taken then).
        self.shared.connects_finished.fetch_add(1, Ordering::AcqRel);
    }

    /// Connects that took longer than `--connect-timeout` count as timeouts.
    pub(super) fn expire_connects(&mut self, now: u64) {
        if now < self.connecting.next_timeout_check_ns || self.connecting.pending == 0 {
            return;
        }
        self.connecting.next_timeout_check_ns = now + CONNECT_CHECK_EVERY_NS;
        let timeout = self.config.connect_timeout.as_nanos() as u64;
        let expired: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, conn)| !conn.up && now - conn.connect_started_ns > timeout)
            .map(|(key, _)| key)
            .collect();
        for key in expired {
            self.conns.remove(key);
            self.connecting.pending -= 1;
            self.tally.connect_failures.timeout += 1;
            self.shared.connects_finished.fetch_add(1, Ordering::AcqRel);
        }
    }
}
