//! `generic`: the requests and replies typed on the command line (`-m`, `--expect`,
//! `--expect-prefix`, `--latency-marker`, `--preset`; parsed in `script.rs`), for servers no
//! one here wrote. Replies framed by a codec (line, length, ws) are cut by the engine like
//! every workload's; over the raw stream they are cut here: exact bytes, HTTP responses, or
//! a marker. A connection may open with a message of its own (`-1`) and await its answer
//! (`--first-expect`) before it is up.

use std::mem;
use std::sync::Arc;

use super::{Exchange, Opening, Request, Workload, WorkloadFlags};
use crate::codec::Codec;
use crate::load::config::LoadConfig;
use crate::load::engine::{MAX_REPLY, Replies};
use crate::load::plan::Plan;
use crate::load::script::{self, Check, Framing, MarkerScan, Script};
use crate::load::tally::Tally;

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Generic {
    script: Script,
    /// Replies come over the raw stream (`--codec raw`): cut here, not by a codec.
    raw: bool,
}

impl Exchange for Generic {
    const NAME: &'static str = "generic";
    const RAW_STREAMS: bool = true;
    type Run = ();
    /// `--latency-marker`: the search for it across reads.
    type Conn = MarkerScan;

    fn from_flags(flags: &mut WorkloadFlags) -> Result<Workload, String> {
        match flags.script.take() {
            Some(script) => Ok(Workload::Generic(script)),
            None => Err("--workload generic needs -m/--message (or --preset)".to_string()),
        }
    }

    /// Why the script cannot run as configured, if it cannot.
    fn validate(config: &LoadConfig) -> Result<(), String> {
        let Workload::Generic(script) = &config.workload else { return Ok(()) };
        let framed = !matches!(config.codec, Codec::Raw);
        match (&script.check, script.framing) {
            (Check::Prefix(_), Framing::Codec) if !framed => {
                Err("--expect-prefix needs replies cut apart: --codec line, length or ws, or --framing http"
                    .to_string())
            }
            (Check::Prefix(_) | Check::Marker(_), _) if config.target.is_datagram() => {
                Err("over UDP each datagram is a reply: use --expect".to_string())
            }
            (_, Framing::Http) if framed => {
                Err("--framing http reads HTTP from the raw stream: leave out --codec".to_string())
            }
            _ => Ok(()),
        }
    }

    fn share(_config: &LoadConfig, _plans: &[Plan]) -> std::io::Result<()> {
        Ok(())
    }

    fn new(config: &LoadConfig, _plan: &Plan, _run: &Arc<()>) -> Generic {
        let script = match &config.workload {
            Workload::Generic(script) => script.clone(),
            other => unreachable!("the generic workload runs {other}"),
        };
        Generic { script, raw: config.codec == Codec::Raw }
    }

    fn request(&self, request: &Request, out: &mut Vec<u8>, _tally: &mut Tally) {
        out.extend_from_slice(self.script.message(request.seq));
    }

    fn check(&self, _id: u32, seq: u64, reply: &[u8], _scratch: &mut Vec<u8>) -> bool {
        self.script.reply_matches(seq, reply)
    }

    fn expected(&self, _id: u32, seq: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.script.expected_text(seq));
    }

    /// Reported at its offset in the connection's stream: over the raw stream with
    /// `--expect` (a reply cut short), the offset of its first wrong byte, or of the first
    /// one missing.
    fn mismatch(
        &self,
        id: u32,
        seq: u64,
        reply: &[u8],
        offset: u64,
        tally: &mut Tally,
        _scratch: &mut Vec<u8>,
    ) {
        let expected = self.script.expected_text(seq);
        let at = match self.script.check {
            Check::Exact(_) if self.raw => {
                reply.iter().zip(&expected).position(|(got, want)| got != want).unwrap_or(reply.len())
            }
            _ => 0,
        };
        tally.mismatch_at(id, Some(offset + at as u64), &expected, reply);
    }

    fn take(&self, replies: &mut Replies<'_, Self>, bytes: &[u8]) {
        match (&self.script.check, self.script.framing) {
            (Check::Marker(marker), _) => self.take_marked(replies, marker, bytes),
            (_, Framing::Http) => self.take_http(replies, bytes),
            (Check::Exact(_), _) if self.raw => self.take_exact(replies, bytes),
            _ => replies.frames(bytes, |replies, reply, offset| self.reply(replies, reply, offset)),
        }
    }

    fn opening(&self) -> Option<Opening<'_>> {
        let message = self.script.first.as_deref()?;
        Some(Opening { message, answer: self.script.first_expect.as_deref() })
    }
}

impl Generic {
    /// `--expect` over the raw stream: the reply to the oldest request is the next as many
    /// bytes as it expects, compared where they lie (kept only when a read cuts a reply).
    /// A wrong byte is reported at its offset in the connection's stream; the reply is
    /// still taken at its expected length, so a wrong answer of the right length costs that
    /// reply only.
    fn take_exact(&self, replies: &mut Replies<'_, Self>, mut bytes: &[u8]) {
        while !bytes.is_empty() && replies.is_open() {
            let id = replies.id();
            let Some(flight) = replies.oldest() else {
                let offset = *replies.received_bytes();
                *replies.received_bytes() += bytes.len() as u64;
                replies.tally().received += 1;
                let what = b"(no reply: nothing was outstanding)";
                return replies.tally().mismatch_at(id, Some(offset), what, bytes);
            };
            let expected = self.script.exact(flight.seq).expect("--expect gives every reply");
            let whole_here = replies.partial().is_empty() && bytes.len() >= expected.len();
            let take = (expected.len() - replies.partial().len()).min(bytes.len());
            *replies.received_bytes() += take as u64;
            if !whole_here {
                replies.partial().extend_from_slice(&bytes[..take]);
                if replies.partial().len() < expected.len() {
                    return; // the rest of this reply is in a later read
                }
            }
            let start = *replies.received_bytes() - expected.len() as u64;
            let reply: &[u8] = if whole_here { &bytes[..take] } else { replies.partial() };
            let wrong = reply
                .iter()
                .zip(expected)
                .position(|(got, want)| got != want)
                .map(|at| (start + at as u64, reply.to_vec()));
            bytes = &bytes[take..];
            replies.partial().clear();
            replies.tally().received += 1;
            if let Some((offset, reply)) = &wrong {
                replies.tally().mismatch_at(id, Some(*offset), expected, reply);
            }
            replies.answer(expected.len(), wrong.is_none());
        }
    }

    /// `--framing http`: each HTTP response (head and Content-Length body) is one reply. A
    /// response that cannot be cut (chunked, not HTTP) ends the connection, counted as a
    /// mismatch: what follows it could not be found.
    fn take_http(&self, replies: &mut Replies<'_, Self>, bytes: &[u8]) {
        let mut input = mem::take(replies.partial());
        // Where `input` starts in the connection's stream of replies.
        let base = *replies.received_bytes() - input.len() as u64;
        *replies.received_bytes() += bytes.len() as u64;
        input.extend_from_slice(bytes);
        let mut used = 0;
        loop {
            let offset = base + used as u64;
            match script::http_response_len(&input[used..], MAX_REPLY) {
                Ok(Some(length)) => {
                    let response = &input[used..used + length];
                    replies.whole(response, offset, &mut |replies, reply, offset| {
                        self.reply(replies, reply, offset)
                    });
                    used += length;
                }
                Ok(None) => break,
                Err(problem) => {
                    let id = replies.id();
                    replies.tally().mismatch_at(id, Some(offset), problem.as_bytes(), &input[used..]);
                    return replies.close();
                }
            }
            if !replies.is_open() {
                return;
            }
        }
        input.drain(..used);
        *replies.partial() = input;
    }

    /// `--latency-marker`: each time the marker appears, the oldest request outstanding is
    /// answered; markers with nothing outstanding (a server that speaks first) are ignored.
    fn take_marked(&self, replies: &mut Replies<'_, Self>, marker: &[u8], bytes: &[u8]) {
        *replies.received_bytes() += bytes.len() as u64;
        let seen = replies.state().count(marker, bytes);
        for _ in 0..seen {
            if !replies.is_open() {
                return;
            }
            replies.tally().received += 1;
            if replies.oldest().is_some() {
                replies.answer(marker.len(), true);
            }
        }
    }
}
