//! Receiving: read replies, decode them with evloop's own codecs, and check each against
//! the exact bytes expected; count what is verified, mismatched or lost.

use std::io::{self, Read};
use std::mem;
use std::sync::atomic::Ordering;

use super::{
    DATAGRAM_MATCH_WINDOW, Download, Engine, InFlight, MAX_REPLY, Phase, REPLY_CHECK_MAX_NS,
    REPLY_CHECK_MIN_NS, REPLY_CHECKS_PER_TIMEOUT, TLS_READS_PER_TURN,
};
use crate::load::clock::now_ns;

/// What evloop answers a client it cannot take (`--max-connections`, select's FD_SETSIZE).
const TURNED_AWAY: &[u8] = b"ERR server full";
use crate::load::tally::Tally;
use crate::load::workload::{self, Workload};
use crate::sys::nonblocking::{interrupted, would_block};

impl Engine<'_> {
    /// Reads what `key`'s socket holds. Like the server, it stops at a short read (later
    /// bytes raise a new edge) unless `drain`: the event already announced the end of the
    /// stream, and no further edge would come for it.
    pub(super) fn read(&mut self, key: usize, drain: bool) {
        if self.conns.get(key).is_some_and(|conn| conn.stream.is_datagram()) {
            return self.read_datagrams(key);
        }
        let mut buffer = mem::take(&mut self.read_buf);
        // A TLS read may return less than the socket holds (see `load/tls.rs`): read again,
        // after the others have had their turn (`TLS_READS_PER_TURN`).
        let tls = self.conns.get(key).is_some_and(|conn| conn.stream.is_tls());
        let drain = drain || tls;
        let mut reads = 0;
        while let Some(conn) = self.conns.get_mut(key) {
            if tls && reads == TLS_READS_PER_TURN {
                self.owed_reads.push(key);
                break;
            }
            reads += 1;
            match conn.stream.read(&mut buffer) {
                Ok(0) => {
                    self.lose(key, None);
                    break;
                }
                Ok(n) => {
                    let now = now_ns();
                    conn.heard_ns = now;
                    self.take_replies(key, &buffer[..n], now);
                    if n < buffer.len() && !drain {
                        break; // drained for now; more raises a new edge
                    }
                }
                Err(error) if would_block(&error) => break,
                Err(error) if interrupted(&error) => continue,
                Err(error) => {
                    self.lose(key, Some(error));
                    break;
                }
            }
        }
        self.read_buf = buffer;
    }

    /// Reads the connections owed a read (see `TLS_READS_PER_TURN`).
    pub(super) fn read_owed(&mut self) {
        for key in mem::take(&mut self.owed_reads) {
            if self.conns.get(key).is_some_and(|conn| conn.up) {
                self.read(key, false);
            }
        }
    }

    /// UDP: every datagram waiting is one reply (an empty one included).
    pub(super) fn read_datagrams(&mut self, key: usize) {
        let mut buffer = mem::take(&mut self.read_buf);
        while let Some(conn) = self.conns.get_mut(key) {
            match conn.stream.read(&mut buffer) {
                Ok(length) => self.on_datagram(key, &buffer[..length], now_ns()),
                Err(error) if would_block(&error) => break,
                Err(error) if interrupted(&error) => continue,
                Err(error) => {
                    // ECONNREFUSED: an earlier datagram found nobody listening.
                    self.lose(key, Some(error));
                    break;
                }
            }
        }
        self.read_buf = buffer;
    }

    /// UDP may drop datagrams (and, off loopback, reorder them): a reply belongs to the first
    /// outstanding request it matches, within [`DATAGRAM_MATCH_WINDOW`]; the requests before
    /// that one lost their replies.
    pub(super) fn on_datagram(&mut self, key: usize, reply: &[u8], now: u64) {
        self.tally.received += 1;
        let conn = &self.conns[key];
        let id = conn.id;
        let mut matched = None;
        for (index, flight) in conn.in_flight.iter().take(DATAGRAM_MATCH_WINDOW).enumerate() {
            self.expected.clear();
            match &self.config.script {
                Some(script) => self.expected.extend_from_slice(&script.expected_text(flight.seq)),
                None => {
                    self.config.workload.expected_reply(id, flight.seq, self.config.size, &mut self.expected)
                }
            }
            if self.expected.as_slice() == reply {
                matched = Some(index);
                break;
            }
        }
        let Some(index) = matched else {
            return self.tally.mismatch(id, b"(a reply to an outstanding request)", reply);
        };
        for _ in 0..index {
            self.conns[key].in_flight.pop_front();
            self.count_lost_datagram(key, now);
        }
        let flight = self.conns[key].in_flight.pop_front().expect("the matched request");
        self.in_flight -= 1;
        self.count_verified(&flight, reply.len(), now);
        self.send_after_reply(key, now);
    }

    /// A reply matched its request: counted, and measured if the request was sent after the
    /// warmup.
    pub(super) fn count_verified(&mut self, flight: &InFlight, reply_len: usize, now: u64) {
        self.tally.verified += 1;
        if flight.intended_ns >= self.warmup_end_ns {
            let wire_bytes = u64::from(flight.wire_bytes) + reply_len as u64;
            self.count_measured(flight.intended_ns, flight.sent_ns, now, wire_bytes);
        }
    }

    /// A UDP request whose reply never came (already taken off `in_flight`).
    pub(super) fn count_lost_datagram(&mut self, key: usize, now: u64) {
        self.tally.lost += 1;
        self.in_flight -= 1;
        // The closed loop goes on: a lost datagram must not stall its connection.
        self.send_after_reply(key, now);
    }

    /// Every wait for a reply ends at `--reply-timeout` (checked a few times per timeout, see
    /// `REPLY_CHECKS_PER_TIMEOUT`), in every phase: the closed loop sends only when a reply
    /// comes, so a reply that never came, or never came whole, would stop its connection
    /// for good, and a counted run (`-n`) with it.
    pub(super) fn expire_replies(&mut self, now: u64) {
        if self.in_flight == 0 || now < self.next_reply_check_ns {
            return;
        }
        let timeout = self.config.reply_timeout.as_nanos() as u64;
        let every = (timeout / REPLY_CHECKS_PER_TIMEOUT).clamp(REPLY_CHECK_MIN_NS, REPLY_CHECK_MAX_NS);
        self.next_reply_check_ns = now + every;
        // Backwards: a connection given up is swapped out for the last one, already seen.
        for index in (0..self.up_keys.len()).rev() {
            self.expire_replies_of(self.up_keys[index], now, timeout);
        }
    }

    /// `key`'s overdue requests: over UDP each is lost and the closed loop goes on; a stream
    /// that heard nothing for the timeout is closed, its requests lost (a late reply could
    /// no longer be told from the next request's); a closed-loop broadcast sender gives its
    /// lines up (counted in the deliveries that never came) and stops sending.
    fn expire_replies_of(&mut self, key: usize, now: u64, timeout: u64) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        let Some(oldest) = conn.in_flight.front() else { return };
        if conn.stream.is_datagram() {
            while self.conns.get(key).is_some_and(|conn| {
                conn.in_flight.front().is_some_and(|flight| flight.sent_ns + timeout <= now)
            }) {
                self.conns[key].in_flight.pop_front();
                self.count_lost_datagram(key, now);
            }
        } else if self.config.workload == Workload::Broadcast {
            // A line's wait counts from its send: the sender hears the others' lines.
            if oldest.sent_ns + timeout <= now {
                log::debug!("lines not answered in time; conn={} lines={}", conn.id, conn.in_flight.len());
                self.in_flight -= conn.in_flight.len();
                conn.in_flight.clear();
                conn.answered = conn.next_seq;
                self.tally.run_failures.reply_timeout += 1;
            }
        } else if oldest.sent_ns.max(conn.heard_ns) + timeout <= now {
            log::debug!("no reply in time; conn={} outstanding={}", conn.id, conn.in_flight.len());
            self.tally.run_failures.reply_timeout += 1;
            self.drop_up(key);
        }
    }

    /// Decodes replies from `bytes` (after any incomplete tail) and checks each.
    /// `--workload file`: an `OK <size>` line, then exactly size bytes, whose CRC-32 must be
    /// the file's. Body bytes are hashed as they come and never kept; only a header line
    /// cut by a read waits in the connection's partial buffer.
    fn take_file_replies(&mut self, key: usize, mut bytes: &[u8], now: u64) {
        while !bytes.is_empty() {
            let Some(conn) = self.conns.get_mut(key) else { return };
            if let Some(download) = &mut conn.download {
                let take = (download.remaining.min(bytes.len() as u64)) as usize;
                download.hasher.update(&bytes[..take]);
                download.remaining -= take as u64;
                bytes = &bytes[take..];
                if download.remaining == 0 {
                    let download = conn.download.take().expect("a download");
                    self.finish_download(key, download, now);
                }
                continue;
            }
            let Some(end) = memchr::memchr(b'\n', bytes) else {
                conn.partial.extend_from_slice(bytes);
                if conn.partial.len() > 1024 {
                    let id = conn.id;
                    self.tally.mismatch(id, b"OK <size>", b"(a reply line over 1 KiB)");
                    return self.lose(key, None);
                }
                return;
            };
            let mut header = mem::take(&mut conn.partial);
            header.extend_from_slice(&bytes[..end]);
            bytes = &bytes[end + 1..];
            self.start_download(key, &header, now);
        }
    }

    /// A header line came: the download of the file the oldest request asked for begins.
    fn start_download(&mut self, key: usize, header: &[u8], now: u64) {
        self.tally.received += 1;
        let conn = &mut self.conns[key];
        let id = conn.id;
        let Some(flight) = conn.in_flight.front() else {
            return self.tally.mismatch(id, b"(no reply: nothing was outstanding)", header);
        };
        let file = self.shared.catalogue.pick(id, flight.seq);
        let size = self.shared.catalogue.files[file].size;
        let expected = format!("OK {size}");
        if header.strip_suffix(b"\r").unwrap_or(header) != expected.as_bytes() {
            let _ = conn.in_flight.pop_front();
            self.in_flight -= 1;
            self.tally.mismatch(id, expected.as_bytes(), header);
            return self.send_after_reply(key, now);
        }
        let download = Download { file, remaining: size, hasher: crc32fast::Hasher::new() };
        if size == 0 {
            self.finish_download(key, download, now);
        } else {
            conn.download = Some(download);
        }
    }

    /// All of a file came: check its checksum, count it, ask for the next.
    fn finish_download(&mut self, key: usize, download: Download, now: u64) {
        let conn = &mut self.conns[key];
        let id = conn.id;
        let flight = conn.in_flight.pop_front().expect("the request being answered");
        self.in_flight -= 1;
        let entry = &self.shared.catalogue.files[download.file];
        if download.hasher.finalize() == entry.crc {
            self.count_verified(&flight, entry.size as usize, now);
        } else {
            let expected = format!("{} bytes of {} with CRC-32 {:08x}", entry.size, entry.name, entry.crc);
            self.tally.mismatch(id, expected.as_bytes(), b"(bytes that differ from the file)");
        }
        self.send_after_reply(key, now);
    }

    pub(super) fn take_replies(&mut self, key: usize, bytes: &[u8], now: u64) {
        if self.config.workload == Workload::File {
            return self.take_file_replies(key, bytes, now);
        }
        if self.take_script_replies(key, bytes, now) {
            return;
        }
        let conn = &mut self.conns[key];
        // Where `input` starts in the connection's stream of replies.
        let base = conn.received_bytes - conn.partial.len() as u64;
        conn.received_bytes += bytes.len() as u64;
        let mut partial = mem::take(&mut conn.partial);
        let mut decoder = conn.decoder;
        let input: &[u8] = if partial.is_empty() {
            bytes
        } else {
            partial.extend_from_slice(bytes);
            &partial
        };
        let mut frames = decoder.frames(input, MAX_REPLY);
        loop {
            let at = base + (input.len() - frames.rest().len()) as u64;
            match frames.next() {
                None => break,
                Some(Ok(reply)) => self.on_reply(key, reply, at, now),
                Some(Err(error)) => {
                    let id = self.conns[key].id;
                    self.tally.mismatch_at(id, Some(at), b"(a reply)", error.to_string().as_bytes());
                }
            }
        }
        let used = input.len() - frames.rest().len();
        let tail_in_bytes = partial.is_empty();
        if let Some(conn) = self.conns.get_mut(key) {
            conn.decoder = decoder;
            if tail_in_bytes {
                conn.partial.extend_from_slice(&bytes[used..]);
            } else {
                partial.drain(..used);
                conn.partial = partial;
            }
        }
    }

    /// One whole reply of `key`, starting at byte `offset` of its stream: checked against
    /// the request it answers (a mismatch is reported at that offset).
    pub(super) fn on_reply(&mut self, key: usize, reply: &[u8], offset: u64, now: u64) {
        self.tally.received += 1;
        if reply == TURNED_AWAY {
            return self.turned_away(key);
        }
        if self.config.workload == Workload::Broadcast {
            return self.on_broadcast_line(key, reply, now);
        }
        let conn = &mut self.conns[key];
        let id = conn.id;
        let Some(flight) = conn.in_flight.pop_front() else {
            self.tally.mismatch(id, b"(no reply: nothing was outstanding)", reply);
            return;
        };
        self.in_flight -= 1;
        if let Some(script) = &self.config.script {
            if script.reply_matches(flight.seq, reply) {
                self.count_verified(&flight, reply.len(), now);
            } else {
                self.tally.mismatch_at(id, Some(offset), &script.expected_text(flight.seq), reply);
            }
            return self.send_after_reply(key, now);
        }
        let (workload, size) = (self.config.workload, self.config.size);
        if workload.reply_matches(id, flight.seq, size, reply, &mut self.expected) {
            self.count_verified(&flight, reply.len(), now);
        } else {
            let mut expected = mem::take(&mut self.expected);
            expected.clear();
            workload.expected_reply(id, flight.seq, size, &mut expected);
            self.tally.mismatch(id, &expected, reply);
            self.expected = expected;
        }
        self.send_after_reply(key, now);
    }

    /// Closed loop: an answered (or lost) request makes room for the next one.
    pub(super) fn send_after_reply(&mut self, key: usize, now: u64) {
        if self.pacer.is_none() && self.phase == Phase::Running && self.stop_ns.is_none_or(|stop| now < stop)
        {
            self.send_next(key, now, now);
        }
    }

    pub(super) fn on_broadcast_line(&mut self, key: usize, line: &[u8], now: u64) {
        let conn = &mut self.conns[key];
        if line.ends_with(b": sync") {
            self.tally.received -= 1;
            if !conn.synced {
                conn.synced = true;
                self.shared.synced.fetch_add(1, Ordering::AcqRel);
            }
            return;
        }
        let id = conn.id;
        let addrs = &self.sender_addrs;
        let sender_addr = |sender: u32| addrs.get(sender as usize).and_then(Option::as_deref);
        match workload::verify_broadcast(line, self.config.size, self.run_start_ns, sender_addr) {
            Some(delivery) => {
                // Each sender's lines come once each, in the order sent: a sequence number
                // that does not move forward is a duplicate or a reordering.
                let last = self.conns[key].last_seq_from.advance(delivery.sender, delivery.seq);
                if last.is_some_and(|last| delivery.seq <= last) {
                    let expected =
                        format!("(sender {}'s line after #{})", delivery.sender, last.unwrap_or(0));
                    return self.tally.mismatch(id, expected.as_bytes(), line);
                }
                self.tally.verified += 1;
                self.tally.deliveries_seen += 1;
                let measured = delivery.intended_ns >= self.warmup_end_ns;
                if let Some(acks) = &self.shared.acks {
                    let members = self.broadcast_members();
                    let last = acks.delivered(delivery.sender, delivery.seq, members, self.plan.index);
                    if last && measured {
                        Tally::record(&mut self.tally.reach, now.saturating_sub(delivery.intended_ns));
                    }
                }
                if measured {
                    self.count_measured(delivery.intended_ns, delivery.sent_ns, now, line.len() as u64);
                }
            }
            None => self.tally.mismatch(id, b"(a broadcast line from a loader connection)", line),
        }
    }

    pub(super) fn count_measured(&mut self, intended_ns: u64, sent_ns: u64, now: u64, wire_bytes: u64) {
        self.tally.measured += 1;
        self.tally.measured_bytes += wire_bytes;
        self.tally.last_reply_ns = now;
        Tally::record(&mut self.tally.latency, now.saturating_sub(intended_ns));
        if self.pacer.is_some() {
            Tally::record(&mut self.tally.uncorrected, now.saturating_sub(sent_ns));
        }
    }

    /// The server was full, said so, and closes: a connection it refused, counted as such
    /// (not as a wrong reply, nor its requests as lost: they were never taken).
    fn turned_away(&mut self, key: usize) {
        let Some(conn) = self.conns.try_remove(key) else { return };
        self.tally.run_failures.turned_away += 1;
        self.in_flight -= conn.in_flight.len();
        if let Some(position) = self.up_keys.iter().position(|&up| up == key) {
            self.up_keys.swap_remove(position);
        }
    }

    /// A connection that was up failed or was closed by the server: what it had
    /// outstanding is lost.
    pub(super) fn lose(&mut self, key: usize, error: Option<io::Error>) {
        if !self.conns.contains(key) {
            return;
        }
        match error {
            Some(error) => self.tally.run_failures.count(&error),
            None => self.tally.run_failures.closed += 1,
        }
        self.drop_up(key);
    }

    /// Closes a connection that was up: what it had outstanding is lost (broadcast lines are
    /// counted in the deliveries that never came, at the end).
    fn drop_up(&mut self, key: usize) {
        let Some(conn) = self.conns.try_remove(key) else {
            return;
        };
        if self.config.workload != Workload::Broadcast {
            self.tally.lost += conn.in_flight.len() as u64;
        }
        self.in_flight -= conn.in_flight.len();
        if let Some(position) = self.up_keys.iter().position(|&up| up == key) {
            self.up_keys.swap_remove(position);
        }
    }
}
