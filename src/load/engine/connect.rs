//! Connecting: open this thread's connections (paced by `--connect-rate` if given), find
//! out which succeeded, and time out the ones that take too long.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use mio::{Interest, Token};

use super::{Engine, LoadConn, MAX_PENDING_CONNECTS};
use crate::load::clock::now_ns;
use crate::load::socket::LoadSocket;
use crate::load::tally::Tally;
use crate::load::workload::Workload;

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
        let stream = LoadSocket::open(self.config.target_for(id), source).and_then(|mut stream| {
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
                    connect_started_ns: now,
                    decoder: self.config.codec.decoder(),
                    partial: Vec::new(),
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

    /// A connecting socket became writable (or failed): find out which.
    pub(super) fn finish_connect(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let outcome = match conn.stream.connect_result() {
            Ok(true) => Ok(()),
            Ok(false) => return, // not yet
            Err(error) => Err(error),
        };
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
