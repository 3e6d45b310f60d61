//! The agents' bus: one connection to NATS, as a `mio` source, for an agent or a
//! coordinator. It is the backplane's own client (`backplane::link` for the connection's
//! life: connect, ping, retry with backoff, the next server of the cluster after a loss;
//! `backplane::nats` for the protocol), with subscriptions of its own that it makes again
//! after every reconnect, and publishes made while it is down kept until it is up.
//!
//! NATS core is at most once: what was on its way when a link went down is gone, and what
//! was published to a subject while this end was away is never seen. The agents' protocol
//! (`wire.rs`) is made for that: every message that matters is repeated until answered.

use std::time::{Duration, Instant};

use log::{info, warn};
use mio::{Registry, Token};

use crate::backplane::link::{Change, Link, State};
use crate::backplane::nats::{self, ServerOp};
use crate::backplane::{BackplaneUrl, BackplaneUrls};

/// Largest message taken from NATS (its own default `max_payload` is 1 MiB; results are sent
/// in chunks smaller than that, see `wire.rs`).
const MAX_MESSAGE: usize = 8 * 1024 * 1024;
/// Bytes of publishes kept while the link is down, at most; past that, publishes are
/// dropped (and logged): every message that matters is repeated anyway.
const MAX_WAITING: usize = 16 * 1024 * 1024;
/// Addresses learnt from the cluster's `connect_urls`, at most, beside those given.
const MAX_LEARNT_URLS: usize = 32;
/// Reads of the 64 KiB buffer per turn: a result of a few hundred kilobytes in one turn.
const READ_BUFFER: usize = 64 * 1024;

/// A message that came on a subscription.
#[derive(Clone, Debug)]
pub(crate) struct Message {
    /// Its subject.
    pub subject: String,
    /// Its bytes.
    pub payload: Vec<u8>,
}

/// What a turn of the bus brought about, beside messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Turn {
    /// Nothing new.
    Same,
    /// The link is up (again): subscribed, publishes flowing.
    Up,
    /// The link was lost; it is being retried.
    Lost,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Bus {
    /// The servers: those given, then those their `INFO` named.
    urls: Vec<BackplaneUrl>,
    link: Link,
    /// The client name sent in `CONNECT`.
    name: String,
    /// Subscriptions by sid - 1; `None` once unsubscribed.
    subjects: Vec<Option<String>>,
    /// `CONNECT` went out on this connection: a new `SUB` may follow it at once.
    connected: bool,
    /// Publishes made while the link was down, in order, and their bytes.
    waiting: Vec<(String, Vec<u8>)>,
    waiting_bytes: usize,
    /// How often an idle link is pinged, and how long an answer may take.
    ping: Duration,
    read_buf: Vec<u8>,
}

impl Bus {
    /// A bus to `urls`, its link on `token`, pinged every `ping`; it connects at the first
    /// [`turn`](Bus::turn).
    pub fn new(urls: &BackplaneUrls, name: &str, token: Token, ping: Duration) -> Bus {
        let seed = crate::sys::random_u64();
        Bus {
            urls: urls.addrs().to_vec(),
            link: Link::new("agents", token, Instant::now(), seed, true),
            name: name.chars().filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c)).collect(),
            subjects: Vec::new(),
            connected: false,
            waiting: Vec::new(),
            waiting_bytes: 0,
            ping,
            read_buf: vec![0; READ_BUFFER],
        }
    }

    /// Whether the link is up.
    pub fn is_up(&self) -> bool {
        self.link.is_up()
    }

    /// The server it is connected to, or trying next.
    pub fn server(&self) -> &BackplaneUrl {
        self.link.url(&self.urls)
    }

    /// Subscribes to `subject` (now, and again after every reconnect); returns its sid.
    pub fn subscribe(&mut self, subject: &str) -> usize {
        self.subjects.push(Some(subject.to_string()));
        let sid = self.subjects.len();
        if self.connected {
            nats::encode_sub(self.link.output(), subject, sid);
        }
        sid
    }

    /// Ends subscription `sid`.
    pub fn unsubscribe(&mut self, sid: usize) {
        if let Some(subject) = self.subjects.get_mut(sid - 1) {
            *subject = None;
            if self.connected {
                let _ = std::io::Write::write_fmt(self.link.output(), format_args!("UNSUB {sid}\r\n"));
            }
        }
    }

    /// Publishes `payload` on `subject`: at the next flush if the link is up, else once it
    /// is up again.
    pub fn publish(&mut self, subject: &str, payload: &[u8]) {
        if self.link.is_up() {
            nats::encode_pub(self.link.output(), subject, payload);
        } else if self.waiting_bytes + payload.len() <= MAX_WAITING {
            self.waiting_bytes += payload.len();
            self.waiting.push((subject.to_string(), payload.to_vec()));
        } else {
            warn!("agents bus down, publish dropped; subject={subject} bytes={}", payload.len());
        }
    }

    /// One turn: the link's readiness (`ready`: an event came for its token), its timers,
    /// what it read (each message on a subscription appended to `received`), and what it
    /// has to write.
    pub fn turn(&mut self, registry: &Registry, ready: bool, received: &mut Vec<Message>) -> Turn {
        let now = Instant::now();
        let mut turn = Turn::Same;
        if ready && self.link.on_event(now) == Change::Connected {
            self.connected = false;
        }
        let was_up = self.link.is_up();
        while let Ok(more) = self.link.read(&mut self.read_buf, now) {
            if let Err(why) = self.take_input(received) {
                let _ = self.link.reset(&why, now);
                break;
            }
            if !more {
                break;
            }
        }
        if self.link.is_up() && !was_up {
            for (subject, payload) in std::mem::take(&mut self.waiting) {
                nats::encode_pub(self.link.output(), &subject, &payload);
            }
            self.waiting_bytes = 0;
            turn = Turn::Up;
        }
        let _ = self.link.check_timers(self.ping, now, |out| out.extend_from_slice(b"PING\r\n"));
        if self.link.connect_if_due(&self.urls, registry, now) == Change::Connected {
            self.connected = false;
        }
        if was_up && !self.link.is_up() {
            turn = Turn::Lost;
        }
        if matches!(self.link.state(), State::Down { .. } | State::Connecting { .. }) {
            self.connected = false;
        }
        let _ = self.link.flush(now);
        turn
    }

    /// Writes what is pending now (a turn does too; this is for a last word before exit).
    pub fn flush(&mut self) -> usize {
        let _ = self.link.flush(Instant::now());
        self.link.pending()
    }

    /// When [`turn`](Bus::turn) must run again at the latest.
    pub fn next_deadline(&self) -> Instant {
        self.link.next_deadline(self.ping)
    }

    /// Parses what the link read: the handshake, pings, and messages.
    fn take_input(&mut self, received: &mut Vec<Message>) -> Result<(), String> {
        let input = std::mem::take(&mut self.link.input);
        let mut used = 0;
        let outcome = loop {
            let (op, length) = match nats::parse(&input[used..], MAX_MESSAGE) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => break Ok(()),
                Err(error) => break Err(error.to_string()),
            };
            used += length;
            match op {
                ServerOp::Info(info) => {
                    self.learn_urls(info);
                    if matches!(self.link.state(), State::Handshake { .. }) && !self.connected {
                        self.connected = true;
                        nats::encode_connect(self.link.output(), &self.name);
                        for (index, subject) in self.subjects.iter().enumerate() {
                            if let Some(subject) = subject {
                                nats::encode_sub(self.link.output(), subject, index + 1);
                            }
                        }
                        // Its PONG says the server took CONNECT and the SUBs.
                        self.link.output().extend_from_slice(b"PING\r\n");
                    }
                }
                ServerOp::Pong if matches!(self.link.state(), State::Handshake { .. }) && self.connected => {
                    // The turn sees it up, and sends what waited.
                    let url = self.link.url(&self.urls).clone();
                    self.link.mark_up(&url);
                }
                ServerOp::Ping => self.link.output().extend_from_slice(b"PONG\r\n"),
                ServerOp::Err(message) => {
                    break Err(format!("NATS said: {}", String::from_utf8_lossy(message)));
                }
                ServerOp::Msg { subject, payload, .. } => received.push(Message {
                    subject: String::from_utf8_lossy(subject).into_owned(),
                    payload: payload.to_vec(),
                }),
                _ => {}
            }
        };
        if outcome.is_ok() {
            let mut input = input;
            input.drain(..used);
            self.link.input = input;
        }
        outcome
    }

    /// Adds the cluster's addresses a server announced to those the link may move to.
    fn learn_urls(&mut self, info: &[u8]) {
        for text in nats::connect_urls(info, MAX_LEARNT_URLS) {
            let Ok(url) = format!("nats://{text}").parse::<BackplaneUrl>() else { continue };
            if !self.urls.contains(&url) && self.urls.len() < MAX_LEARNT_URLS {
                info!("agents bus: NATS address learnt; server={url}");
                self.urls.push(url);
            }
        }
    }
}
