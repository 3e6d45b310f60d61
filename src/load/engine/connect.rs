//! Connecting: open this thread's connections (paced by `--connect-rate` if given), find
//! out which succeeded, and time out the ones that take too long.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use mio::{Interest, Token};

use super::{Engine, Handshake, LoadConn, MAX_PENDING_CONNECTS};
use crate::codec::{Codec, ws};
use crate::load::clock::now_ns;
use crate::load::socket::LoadSocket;
use crate::load::tally::Tally;
use crate::load::workload::Workload;
use crate::sys::nonblocking::gate;
use std::io::Read as _;
use std::mem;

impl Engine<'_> {
    pub(super) fn start_connects(&mut self, now: u64) {
        while self.next_connect < self.plan.count && self.pending_connects < MAX_PENDING_CONNECTS {
            if let Some(rate) = self.plan.connect_rate {
                let due = self.connect_phase_start_ns + (f64::from(self.next_connect) * 1e9 / rate) as u64;
                if due > now {
                    break;
                }
            }
            let id = self.plan.first_id + self.next_connect;
            self.next_connect += 1;
            self.open(id, now);
        }
    }

    /// When the next paced connect is due, if one is waiting for its turn.
    pub(super) fn next_connect_due(&self) -> Option<u64> {
        let rate = self.plan.connect_rate?;
        (self.next_connect < self.plan.count && self.pending_connects < MAX_PENDING_CONNECTS)
            .then(|| self.connect_phase_start_ns + (f64::from(self.next_connect) * 1e9 / rate) as u64)
    }

    pub(super) fn open(&mut self, id: u32, now: u64) {
        self.tally.attempted += 1;
        if self.tally.first_connect_ns == 0 {
            self.tally.first_connect_ns = now;
        }
        let source = self.config.source_for(id);
        let tls = self.tls.as_ref().map(|config| (config, self.config.tls_name_for(id)));
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
                let key = self.conns.insert(LoadConn {
                    id,
                    stream,
                    up: false,
                    handshake: Handshake::None,
                    connect_started_ns: now,
                    decoder: self.config.codec.decoder(),
                    partial: Vec::new(),
                    received_bytes: 0,
                    marker: Default::default(),
                    output: Vec::new(),
                    written: 0,
                    queued_for_flush: false,
                    next_seq: 0,
                    in_flight: VecDeque::new(),
                    synced: false,
                    answered: 0,
                    last_seq_from: Default::default(),
                    download: None,
                    queued_datagrams: VecDeque::new(),
                    heard_ns: 0,
                });
                self.pending_connects += 1;
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
    /// opening request) before it is up.
    pub(super) fn finish_connect(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        match conn.handshake {
            Handshake::Tls { .. } => return self.drive_tls(key),
            Handshake::WebSocket => return self.read_ws_answer(key),
            Handshake::FirstReply => return self.read_first_reply(key),
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
                let error = std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "closed during the TLS handshake",
                );
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
        conn.output.extend_from_slice(&ws::client::request(&host, &self.config.ws_path, &key_text));
        self.flush(key);
        // The answer may be there already: its edge may have come with this one.
        self.read_ws_answer(key);
    }

    /// Reads the server's answer to the opening request: a switch makes the connection
    /// up (and what came after the answer is its first reply bytes); anything else fails it.
    fn read_ws_answer(&mut self, key: usize) {
        let mut buffer = [0u8; 4096];
        let Some(conn) = self.conns.get_mut(key) else { return };
        loop {
            match gate(|| conn.stream.read(&mut buffer)) {
                Ok(Some(0)) => {
                    let error =
                        std::io::Error::new(std::io::ErrorKind::ConnectionReset, "closed before switching");
                    return self.connected(key, Err(error));
                }
                Ok(Some(n)) => conn.partial.extend_from_slice(&buffer[..n]),
                Ok(None) => break,
                Err(error) => return self.connected(key, Err(error)),
            }
            if conn.partial.len() > 16 * 1024 {
                break;
            }
        }
        let Some((status, length)) = ws::client::response_head(&conn.partial) else {
            if conn.partial.len() > 16 * 1024 {
                let error = std::io::Error::other("an answer to the WebSocket request over 16 KiB");
                return self.connected(key, Err(error));
            }
            return;
        };
        if !ws::client::switched(status) {
            let error = std::io::Error::other(format!(
                "the server did not switch to WebSocket: {}",
                String::from_utf8_lossy(status)
            ));
            return self.connected(key, Err(error));
        }
        conn.partial.drain(..length);
        conn.handshake = Handshake::None;
        self.handshakes_done(key);
        if self.conns.get(key).is_some_and(|conn| conn.up && !conn.partial.is_empty()) {
            let early = mem::take(&mut self.conns[key].partial);
            self.take_replies(key, &early, now_ns());
        }
    }

    /// A connect finished (a WebSocket's once switched): the connection is up, or counted
    /// as failed and dropped.
    pub(super) fn connected(&mut self, key: usize, outcome: std::io::Result<()>) {
        let conn = &mut self.conns[key];
        self.pending_connects -= 1;
        self.shared.connects_finished.fetch_add(1, Ordering::AcqRel);
        let now = now_ns();
        self.tally.last_connect_ns = now;
        match outcome {
            Ok(()) => {
                conn.up = true;
                Tally::record(&mut self.tally.connect, now - conn.connect_started_ns);
                self.tally.established += 1;
                self.shared.established.fetch_add(1, Ordering::AcqRel);
                if self.config.workload == Workload::Broadcast {
                    // Unix clients have no address the server can print; they are counted
                    // as members (for the sync) with an empty name.
                    let name = conn.stream.local_name().unwrap_or_default();
                    self.shared.sender_addrs.lock().expect("not poisoned")[conn.id as usize] = Some(name);
                }
                self.up_keys.push(key);
            }
            Err(error) => {
                log::debug!("connect failed; id={} error={error}", conn.id);
                self.tally.connect_failures.count(&error);
                self.conns.remove(key);
            }
        }
    }

    /// Connects that took longer than `--connect-timeout` count as timeouts.
    pub(super) fn expire_connects(&mut self, now: u64) {
        if now < self.next_timeout_check_ns || self.pending_connects == 0 {
            return;
        }
        self.next_timeout_check_ns = now + 50_000_000;
        let timeout = self.config.connect_timeout.as_nanos() as u64;
        let expired: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, conn)| !conn.up && now - conn.connect_started_ns > timeout)
            .map(|(key, _)| key)
            .collect();
        for key in expired {
            self.conns.remove(key);
            self.pending_connects -= 1;
            self.tally.connect_failures.timeout += 1;
            self.shared.connects_finished.fetch_add(1, Ordering::AcqRel);
        }
    }
}
