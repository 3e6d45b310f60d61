//! One connection to the pub/sub engine, and its life: connecting, up, lost, retried.
//!
//! A link never blocks the reactor: it connects without waiting, reads and writes until
//! `WouldBlock`, and when it fails it is closed and retried on a timer, with a backoff that
//! doubles from [`FIRST_RETRY`] to [`LAST_RETRY`] with jitter (so a fleet of servers does not
//! reconnect in lockstep after an engine restart). While it is up, a ping on a timer tells a
//! dead peer from a quiet one: a half-open TCP connection (the engine's host gone, a firewall
//! that forgot the flow) otherwise looks exactly like an idle one.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use log::{info, warn};
use mio::{Interest, Registry, Token};

use super::BackplaneUrl;
use crate::sys::socket::Stream;
use crate::sys::socket::{gate, write_until_full};

/// The first retry after a failure.
pub const FIRST_RETRY: Duration = Duration::from_millis(100);
/// The longest wait between retries.
pub const LAST_RETRY: Duration = Duration::from_secs(5);
/// Reads one link gets per turn (of the reactor's 64 KiB buffer) before clients get theirs.
pub const READS_PER_TURN: usize = 16;

/// Where a link is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not connected; the next attempt is at `retry_at`.
    Down { retry_at: Instant },
    /// The TCP (or Unix) connect is under way since `since`.
    Connecting { since: Instant },
    /// Connected; the engine's greeting or our handshake is under way (NATS: `INFO`, then
    /// `CONNECT` and a `PING` whose `PONG` means ready).
    Handshake { since: Instant },
    /// Ready: publishes go out, messages come in.
    Up,
}

/// What a link's socket event or timer brought about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Nothing the owner must act on.
    None,
    /// The connect finished: the owner sends its handshake.
    Connected,
    /// The link failed and was closed; a retry is scheduled.
    Lost,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Link {
    /// "publisher" or "subscriber", for logs.
    pub role: &'static str,
    /// Its token on the reactor's poll.
    pub token: Token,
    state: State,
    stream: Option<Stream>,
    /// Bytes read and not yet parsed (an incomplete frame).
    pub input: Vec<u8>,
    /// Bytes to write; `written` of them are.
    output: Vec<u8>,
    written: usize,
    backoff: Duration,
    /// When a ping went out that nothing has been heard since; `None` when none is owed.
    ping_sent: Option<Instant>,
    last_heard: Instant,
    /// Whether it has ever been up (a later up is a reconnect).
    was_up: bool,
    seed: u64,
    /// Which of the engine's addresses it connects to next (or is connected to).
    candidate: usize,
    /// After a loss: on to the next address (NATS: any server of the cluster will do), or
    /// back to the first (Redis: the list is in order of preference).
    rotate: bool,
    /// How many times it has failed: what was asked on it before is not coming back.
    losses: u64,
}

impl Link {
    /// A link that will connect at once (at the first timer pass).
    pub fn new(role: &'static str, token: Token, now: Instant, seed: u64, rotate: bool) -> Link {
        Link {
            role,
            token,
            state: State::Down { retry_at: now },
            stream: None,
            input: Vec::new(),
            output: Vec::new(),
            written: 0,
            backoff: FIRST_RETRY,
            ping_sent: None,
            last_heard: now,
            was_up: false,
            seed: seed | 1,
            candidate: 0,
            rotate,
            losses: 0,
        }
    }

    /// How many times it has failed so far (answers awaited from before a loss never come).
    pub fn losses(&self) -> u64 {
        self.losses
    }

    /// The address among `urls` it connects to next, or is connected to.
    pub fn url<'u>(&self, urls: &'u [BackplaneUrl]) -> &'u BackplaneUrl {
        &urls[self.candidate % urls.len()]
    }

    /// Where it is.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether it is ready.
    pub fn is_up(&self) -> bool {
        self.state == State::Up
    }

    /// Bytes waiting to be written.
    pub fn pending(&self) -> usize {
        self.output.len() - self.written
    }

    /// Where to append bytes to send; they go out at the next [`flush`](Self::flush).
    pub fn output(&mut self) -> &mut Vec<u8> {
        if self.written > 0 && self.written >= self.output.len() / 2 {
            self.output.drain(..self.written);
            self.written = 0;
        }
        &mut self.output
    }

    /// Starts connecting if a retry is due.
    pub fn connect_if_due(&mut self, urls: &[BackplaneUrl], registry: &Registry, now: Instant) -> Change {
        let State::Down { retry_at } = self.state else { return Change::None };
        if now < retry_at {
            return Change::None;
        }
        let stream = match self.url(urls) {
            BackplaneUrl::Redis(addr) | BackplaneUrl::Nats(addr) => Stream::connect_tcp(*addr, None),
            BackplaneUrl::RedisUnix(path) => Stream::connect_unix(path),
        };
        let registered = stream.and_then(|mut stream| {
            // Both interests from the start: edge-triggered, so this costs no wakeups, and
            // no re-registration is ever needed (the loader does the same).
            registry.register(&mut stream, self.token, Interest::READABLE | Interest::WRITABLE)?;
            Ok(stream)
        });
        match registered {
            Ok(stream) => {
                self.stream = Some(stream);
                self.state = State::Connecting { since: now };
                // A Unix connect may be done at once; its writable edge still comes.
                Change::None
            }
            Err(error) => self.fail(&error.to_string(), now),
        }
    }

    /// A readiness event: finishes a connect if one is under way.
    pub fn on_event(&mut self, now: Instant) -> Change {
        let State::Connecting { .. } = self.state else { return Change::None };
        let Some(stream) = &self.stream else { return Change::None };
        match stream.connect_result() {
            Ok(true) => {
                self.state = State::Handshake { since: now };
                self.last_heard = now;
                Change::Connected
            }
            Ok(false) => Change::None,
            Err(error) => self.fail(&error.to_string(), now),
        }
    }

    /// The handshake is done: publishes may go out. True if this is a reconnect.
    pub fn mark_up(&mut self, url: &BackplaneUrl) -> bool {
        self.state = State::Up;
        self.backoff = FIRST_RETRY;
        self.ping_sent = None;
        let reconnect = self.was_up;
        self.was_up = true;
        info!("backplane link up; engine={url} link={}", self.role);
        reconnect
    }

    /// Reads what the socket holds into [`input`](Self::input), up to [`READS_PER_TURN`]
    /// reads of `buffer`. `Ok(true)` if the budget ran out with bytes perhaps still waiting.
    /// An end of stream or error closes the link.
    pub fn read(&mut self, buffer: &mut [u8], now: Instant) -> Result<bool, Change> {
        let Some(stream) = &mut self.stream else { return Ok(false) };
        if matches!(self.state, State::Connecting { .. } | State::Down { .. }) {
            return Ok(false);
        }
        for _ in 0..READS_PER_TURN {
            match gate(|| stream.read(buffer)) {
                Ok(Some(0)) => return Err(self.fail("the engine closed the connection", now)),
                Ok(Some(n)) => {
                    self.last_heard = now;
                    self.ping_sent = None;
                    self.input.extend_from_slice(&buffer[..n]);
                    if n < buffer.len() {
                        return Ok(false);
                    }
                }
                Ok(None) => return Ok(false),
                Err(error) => return Err(self.fail(&error.to_string(), now)),
            }
        }
        Ok(true)
    }

    /// Writes what is pending until done or the socket is full.
    pub fn flush(&mut self, now: Instant) -> Change {
        let Some(stream) = &mut self.stream else { return Change::None };
        if matches!(self.state, State::Connecting { .. } | State::Down { .. }) {
            return Change::None;
        }
        match write_until_full(&self.output[self.written..], |bytes| stream.write(bytes)) {
            Ok(written) => self.written += written,
            Err(error) => return self.fail(&error.to_string(), now),
        }
        if self.written == self.output.len() {
            self.output.clear();
            self.written = 0;
        }
        Change::None
    }

    /// Timers: a connect or handshake that takes longer than `timeout`, or a ping unanswered
    /// for `timeout`, fails the link; a ping is due every `timeout` while up. `ping` writes
    /// the engine's ping into the output.
    pub fn check_timers(
        &mut self,
        timeout: Duration,
        now: Instant,
        ping: impl FnOnce(&mut Vec<u8>),
    ) -> Change {
        match self.state {
            State::Connecting { since } | State::Handshake { since } if now >= since + timeout => {
                self.fail("no answer from the engine in time", now)
            }
            State::Up => match self.ping_sent {
                Some(sent) if now >= sent + timeout => self.fail("the engine did not answer a ping", now),
                Some(_) => Change::None,
                None if now >= self.last_heard + timeout => {
                    self.ping_sent = Some(now);
                    ping(self.output());
                    self.flush(now)
                }
                None => Change::None,
            },
            _ => Change::None,
        }
    }

    /// When [`check_timers`](Self::check_timers) or [`connect_if_due`](Self::connect_if_due)
    /// next has something to do.
    pub fn next_deadline(&self, timeout: Duration) -> Instant {
        match self.state {
            State::Down { retry_at } => retry_at,
            State::Connecting { since } | State::Handshake { since } => since + timeout,
            State::Up => match self.ping_sent {
                Some(sent) => sent + timeout,
                None => self.last_heard + timeout,
            },
        }
    }

    /// Closes the link because of a protocol error the owner found in its input.
    pub fn reset(&mut self, why: &str, now: Instant) -> Change {
        self.fail(why, now)
    }

    /// Closes the link (dropping the socket takes it off the poll) and schedules a retry.
    fn fail(&mut self, why: &str, now: Instant) -> Change {
        let was = self.state;
        self.losses += 1;
        // Where to try next: a connect that failed moves on down the list; a link lost
        // after being up starts again from the first (Redis) or moves on (NATS).
        self.candidate = match was {
            State::Up if !self.rotate => 0,
            _ => self.candidate.wrapping_add(1),
        };
        self.stream = None;
        self.input.clear();
        self.output.clear();
        self.written = 0;
        self.ping_sent = None;
        let delay = self.jittered(self.backoff);
        self.backoff = (self.backoff * 2).min(LAST_RETRY);
        self.state = State::Down { retry_at: now + delay };
        let retry_ms = delay.as_millis();
        // Lost once: a warning. Attempts that fail while the engine is away: debug, or a
        // restart of the engine would fill the log.
        match was {
            State::Up => warn!("backplane link lost; link={} error=\"{why}\" retry_ms={retry_ms}", self.role),
            _ => log::debug!(
                "backplane connect failed; link={} error=\"{why}\" retry_ms={retry_ms}",
                self.role
            ),
        }
        Change::Lost
    }

    /// `delay` times a factor between 0.5 and 1 (xorshift: no need for a random crate).
    fn jittered(&mut self, delay: Duration) -> Duration {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let factor = 0.5 + (self.seed % 1000) as f64 / 2000.0;
        delay.mul_f64(factor)
    }
}
