//! The generic workload's side of the engine (`--workload generic`, see `script.rs`): the
//! first message and its answer, and replies cut from the stream the ways a server no one
//! here wrote may answer: exact bytes over the raw stream, HTTP responses, or a marker.
//! Replies framed by a codec (line, length, ws) go through `receive.rs` like every
//! workload's.

use std::io::Read as _;
use std::mem;

use super::{Engine, Handshake, MAX_REPLY};
use crate::codec::Codec;
use crate::load::clock::now_ns;
use crate::load::script::{self, Check, Framing};
use crate::sys::nonblocking::gate;

impl Engine<'_> {
    /// Every handshake below is done: send the first message (`-1`) if there is one, and
    /// await its answer (`--first-expect`) before the connection is up.
    pub(super) fn handshakes_done(&mut self, key: usize) {
        let config = self.config;
        let Some(script) = &config.script else { return self.connected(key, Ok(())) };
        let Some(first) = &script.first else { return self.connected(key, Ok(())) };
        let codec = self.config.codec;
        let conn = &mut self.conns[key];
        let id = conn.id;
        super::send::frame_request(codec, &mut conn.output, (id, u64::MAX), |out| {
            out.extend_from_slice(first)
        });
        if script.first_expect.is_none() {
            self.connected(key, Ok(()));
            return self.flush(key);
        }
        conn.handshake = Handshake::FirstReply;
        self.flush(key);
        // The answer may be there already.
        self.read_first_reply(key);
    }

    /// Reads the answer to the first message: exactly `--first-expect`'s bytes make the
    /// connection up (what came after them is its first reply bytes); anything else fails
    /// it, counted as a mismatch at its offset.
    pub(super) fn read_first_reply(&mut self, key: usize) {
        let config = self.config;
        let Some(expected) = config.script.as_ref().and_then(|script| script.first_expect.as_ref()) else {
            return;
        };
        let mut buffer = [0u8; 4096];
        let Some(conn) = self.conns.get_mut(key) else { return };
        while conn.partial.len() < expected.len() {
            match gate(|| conn.stream.read(&mut buffer)) {
                Ok(Some(0)) => {
                    let error = std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
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
            let error = std::io::Error::other("the answer to the first message differed");
            return self.connected(key, Err(error));
        }
        if conn.partial.len() < expected.len() {
            return; // so far so good; the rest is to come
        }
        conn.partial.drain(..expected.len());
        conn.received_bytes = expected.len() as u64;
        conn.handshake = Handshake::None;
        self.connected(key, Ok(()));
        if self.conns.get(key).is_some_and(|conn| conn.up && !conn.partial.is_empty()) {
            let early = mem::take(&mut self.conns[key].partial);
            self.take_replies(key, &early, now_ns());
        }
    }

    /// Takes the generic workload's replies from `bytes`, if its replies are not a codec's
    /// frames; returns false when they are (`receive.rs` decodes them).
    pub(super) fn take_script_replies(&mut self, key: usize, bytes: &[u8], now: u64) -> bool {
        let config = self.config;
        let Some(script) = &config.script else { return false };
        match (&script.check, script.framing) {
            (Check::Marker(marker), _) => self.take_marked_replies(key, marker, bytes, now),
            (_, Framing::Http) => self.take_http_replies(key, bytes, now),
            (Check::Exact(_), _) if self.config.codec == Codec::Raw => self.take_exact_bytes(key, bytes, now),
            _ => return false,
        }
        true
    }

    /// `--expect` over the raw stream: the reply to the oldest request is the next as many
    /// bytes as it expects, compared where they lie (kept only when a read cuts a reply).
    /// A wrong byte is reported at its offset in the connection's stream; the reply is
    /// still taken at its expected length, so a wrong answer of the right length costs that
    /// reply only.
    fn take_exact_bytes(&mut self, key: usize, mut bytes: &[u8], now: u64) {
        let config = self.config;
        let script = config.script.as_ref().expect("a generic run has a script");
        while !bytes.is_empty() {
            let Some(conn) = self.conns.get_mut(key) else { return };
            let id = conn.id;
            let Some(&flight) = conn.in_flight.front() else {
                let offset = conn.received_bytes;
                conn.received_bytes += bytes.len() as u64;
                self.tally.received += 1;
                let what = b"(no reply: nothing was outstanding)";
                return self.tally.mismatch_at(id, Some(offset), what, bytes);
            };
            let expected = script.exact(flight.seq).expect("--expect gives every reply");
            let take = (expected.len() - conn.partial.len()).min(bytes.len());
            conn.received_bytes += take as u64;
            let reply: &[u8] = if conn.partial.is_empty() && take == expected.len() {
                &bytes[..take]
            } else {
                conn.partial.extend_from_slice(&bytes[..take]);
                if conn.partial.len() < expected.len() {
                    return; // the rest of this reply is in a later read
                }
                &conn.partial
            };
            bytes = &bytes[take..];
            let start = conn.received_bytes - expected.len() as u64;
            let wrong = reply
                .iter()
                .zip(expected)
                .position(|(got, want)| got != want)
                .map(|at| (start + at as u64, reply.to_vec()));
            conn.partial.clear();
            conn.in_flight.pop_front();
            self.in_flight -= 1;
            self.tally.received += 1;
            match wrong {
                None => self.count_verified(&flight, expected.len(), now),
                Some((offset, reply)) => self.tally.mismatch_at(id, Some(offset), expected, &reply),
            }
            self.send_after_reply(key, now);
        }
    }

    /// `--framing http`: each HTTP response (head and Content-Length body) is one reply. A
    /// response that cannot be cut (chunked, not HTTP) ends the connection, counted as a
    /// mismatch: what follows it could not be found.
    fn take_http_replies(&mut self, key: usize, bytes: &[u8], now: u64) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        let mut input = mem::take(&mut conn.partial);
        input.extend_from_slice(bytes);
        let mut used = 0;
        loop {
            match script::http_response_len(&input[used..], MAX_REPLY) {
                Ok(Some(length)) => {
                    let offset = self.conns[key].received_bytes + used as u64;
                    self.on_reply(key, &input[used..used + length], offset, now);
                    used += length;
                }
                Ok(None) => break,
                Err(problem) => {
                    let id = self.conns[key].id;
                    let offset = self.conns[key].received_bytes + used as u64;
                    self.tally.mismatch_at(id, Some(offset), problem.as_bytes(), &input[used..]);
                    return self.lose(key, None);
                }
            }
            if !self.conns.contains(key) {
                return;
            }
        }
        if let Some(conn) = self.conns.get_mut(key) {
            input.drain(..used);
            conn.received_bytes += used as u64;
            conn.partial = input;
        }
    }

    /// `--latency-marker`: each time the marker appears, the oldest request outstanding is
    /// answered; markers with nothing outstanding (a server that speaks first) are ignored.
    fn take_marked_replies(&mut self, key: usize, marker: &[u8], bytes: &[u8], now: u64) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        conn.received_bytes += bytes.len() as u64;
        let seen = conn.marker.count(marker, bytes);
        for _ in 0..seen {
            let Some(conn) = self.conns.get_mut(key) else { return };
            self.tally.received += 1;
            let Some(flight) = conn.in_flight.pop_front() else { continue };
            self.in_flight -= 1;
            self.count_verified(&flight, marker.len(), now);
            self.send_after_reply(key, now);
        }
    }
}
