//! Sending: the open-loop schedule or the closed loop's next request, queued per
//! connection and written in one `write` per turn.

use std::io::{self, Write};
use std::mem;
use std::sync::atomic::Ordering;

use super::{Engine, InFlight};
use crate::codec::{Codec, ws};
use crate::load::socket::LoadSocket;
use crate::load::tally::Tally;
use crate::load::workload::{self, Workload};
use crate::sys::nonblocking::{interrupted, would_block};

impl Engine<'_> {
    /// Open loop: sends every message whose scheduled time has come, round robin over the
    /// connections that are up, then arms the pacer for the next one.
    pub(super) fn send_due(&mut self, now: u64) {
        while let Some(due) = self.next_due() {
            if due > now || self.up_keys.is_empty() {
                break;
            }
            let senders = self.sending_keys();
            if senders.is_empty() {
                break;
            }
            let key = senders[(self.next_send % senders.len() as u64) as usize];
            self.next_send += 1;
            self.send_next(key, due, now);
        }
        if let (Some(pacer), Some(due)) = (&self.pacer, self.next_due()) {
            if let Err(error) = pacer.arm_at(due) {
                log::error!("cannot arm the pacer; error={error}");
            }
        }
    }

    /// Closed-loop broadcast: each line that has reached every other member makes room
    /// for its sender's next one.
    pub(super) fn send_after_answered(&mut self, now: u64) {
        let Some(acks) = &self.shared.acks else { return };
        let members = self.broadcast_members();
        for index in 0..self.sending_keys().len() {
            let key = self.sending_keys()[index];
            loop {
                let conn = &mut self.conns[key];
                if conn.answered == conn.next_seq || !acks.take_answered(conn.id, conn.answered, members) {
                    break;
                }
                conn.answered += 1;
                conn.in_flight.pop_front();
                self.in_flight -= 1;
                self.send_after_reply(key, now);
            }
        }
    }

    /// Broadcast: how many members each line goes to (every connection but its sender).
    pub(super) fn broadcast_members(&self) -> u32 {
        self.shared.established.load(Ordering::Relaxed).saturating_sub(1) as u32
    }

    /// The connections that send: the first `--active` of those up.
    pub(super) fn sending_keys(&self) -> &[usize] {
        &self.up_keys[..self.up_keys.len().min(self.plan.active as usize)]
    }

    /// When the next scheduled message is due, unless the schedule has ended.
    pub(super) fn next_due(&self) -> Option<u64> {
        if self.budget == Some(0) || !self.interval_ns.is_finite() {
            return None;
        }
        let due = self.run_start_ns + (self.next_send as f64 * self.interval_ns) as u64;
        self.stop_ns.is_none_or(|stop| due < stop).then_some(due)
    }

    /// Queues the next request (or broadcast message) of `key`, scheduled for `intended_ns`.
    pub(super) fn send_next(&mut self, key: usize, intended_ns: u64, now: u64) {
        if let Some(budget) = &mut self.budget {
            if *budget == 0 {
                return;
            }
            *budget -= 1;
        }
        let conn = &mut self.conns[key];
        let seq = conn.next_seq;
        conn.next_seq += 1;
        if self.config.workload == Workload::Broadcast {
            let members = self.shared.established.load(Ordering::Relaxed).saturating_sub(1);
            self.tally.deliveries_expected += members as u64;
        }
        // The payload of this request, appended to `out`.
        let (config, catalogue) = (self.config, &self.shared.catalogue);
        let (id, size, run_start_ns) = (conn.id, config.size, self.run_start_ns);
        let write_payload = |out: &mut Vec<u8>| match config.workload {
            Workload::Broadcast => {
                workload::broadcast_message(id, seq, (intended_ns, now, run_start_ns), size, out)
            }
            Workload::Generic => out
                .extend_from_slice(config.script.as_ref().expect("a generic run has a script").message(seq)),
            Workload::File => {
                out.extend_from_slice(b"GET ");
                out.extend_from_slice(catalogue.files[catalogue.pick(id, seq)].name.as_bytes());
            }
            workload => workload.request(id, seq, size, out),
        };
        let mut failed = None;
        let wire_bytes = if conn.stream.is_datagram() {
            self.scratch.clear();
            write_payload(&mut self.scratch);
            // One message, one datagram: UDP has nothing to batch, so it goes now, and is
            // copied into the queue only if the socket is full.
            if conn.queued_datagrams.is_empty() {
                match send_datagram(&mut conn.stream, &self.scratch) {
                    Ok(true) => {}
                    Ok(false) => conn.queued_datagrams.push_back(self.scratch.clone()),
                    Err(error) => failed = Some(error),
                }
            } else {
                conn.queued_datagrams.push_back(self.scratch.clone());
            }
            self.scratch.len()
        } else {
            // Framed in place, in the buffer it is written from.
            frame_request(config.codec, &mut conn.output, (id, seq), write_payload)
        };
        // Broadcast lines in a closed loop are in flight until every member has them; in the
        // open loop nothing answers them (their deliveries are counted apart).
        if self.config.workload != Workload::Broadcast || self.pacer.is_none() {
            conn.in_flight.push_back(InFlight {
                seq,
                intended_ns,
                sent_ns: now,
                wire_bytes: wire_bytes as u32,
            });
            self.in_flight += 1;
        }
        self.tally.sent += 1;
        if self.pacer.is_some() {
            Tally::record(&mut self.tally.schedule_lag, now.saturating_sub(intended_ns));
        }
        if let Some(error) = failed {
            return self.lose(key, Some(error));
        }
        let conn = &self.conns[key];
        if !conn.output.is_empty() || !conn.queued_datagrams.is_empty() {
            if self.config.write_each && !conn.queued_for_flush {
                // Now, in a write of its own (unless output is already waiting).
                self.flush(key);
            } else {
                self.queue_flush(key);
            }
        }
    }

    pub(super) fn queue_flush(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if !conn.queued_for_flush {
            conn.queued_for_flush = true;
            self.flush_queue.push(key);
        }
    }

    pub(super) fn flush_queued(&mut self) {
        let queue = mem::take(&mut self.flush_queue);
        for &key in &queue {
            self.flush(key);
        }
        if self.flush_queue.is_empty() {
            self.flush_queue = queue;
            self.flush_queue.clear();
        }
    }

    pub(super) fn flush(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.queued_for_flush = false;
        while let Some(datagram) = conn.queued_datagrams.front() {
            match send_datagram(&mut conn.stream, datagram) {
                Ok(true) => drop(conn.queued_datagrams.pop_front()),
                Ok(false) => return,
                Err(error) => return self.lose(key, Some(error)),
            }
        }
        while conn.written < conn.output.len() {
            match conn.stream.write(&conn.output[conn.written..]) {
                Ok(n) => conn.written += n,
                Err(error) if would_block(&error) => return,
                Err(error) if interrupted(&error) => continue,
                Err(error) => return self.lose(key, Some(error)),
            }
        }
        conn.output.clear();
        conn.written = 0;
        // What a TLS session took in but could not write yet: written on this writable edge,
        // not left until the next request.
        match conn.stream.flush() {
            Ok(()) => {}
            Err(error) if would_block(&error) => {}
            Err(error) => self.lose(key, Some(error)),
        }
    }
}

/// Sends one datagram: `Ok(true)` sent, `Ok(false)` the socket is full (try again when it is
/// writable).
fn send_datagram(socket: &mut LoadSocket, datagram: &[u8]) -> io::Result<bool> {
    loop {
        match socket.write(datagram) {
            Ok(_) => return Ok(true),
            Err(error) if would_block(&error) => return Ok(false),
            Err(error) if interrupted(&error) => continue,
            Err(error) => return Err(error),
        }
    }
}

/// Frames a request written in place by `write` onto `out` with `codec`, as a client sends
/// it (over WebSocket, masked with a key that changes from frame to frame, from `id` and
/// `seq`); returns its length on the wire.
pub(super) fn frame_request(
    codec: Codec,
    out: &mut Vec<u8>,
    (id, seq): (u32, u64),
    write: impl FnOnce(&mut Vec<u8>),
) -> usize {
    let before = out.len();
    let frame = codec.begin_frame(out);
    write(out);
    codec.end_frame(out, frame);
    if codec == Codec::Ws {
        let mask = (u64::from(id).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seq) as u32;
        ws::client::mask_frame(out, before, mask.to_ne_bytes());
    }
    out.len() - before
}
