//! The `ws` codec: WebSocket (RFC 6455), the server's side, so that browsers join the rooms.
//!
//! A connection opens with an HTTP/1.1 request (`handshake.rs`): an Upgrade switches it to
//! WebSocket, and only then is it ready (its handler hears of it, it joins its room);
//! without an Upgrade, `GET /` gets a small chat page built into the binary and the
//! connection closes. After the switch each WebSocket message is one message for the
//! handler; replies and room lines go out as one text frame each (binary when the bytes are
//! not UTF-8), unmasked, so one framed line serves every member of a room.
//!
//! The frame layer (`frame.rs`) takes a frame's payload as it arrives, unmasking it into the
//! message being assembled, so a big message is never held twice and bad UTF-8 is refused at
//! its first byte (`utf8.rs`). What a client gets wrong closes the connection with the code
//! the RFC names: 1002 for a protocol error (unmasked frame, reserved bits or opcodes, a
//! control frame fragmented or over 125 bytes, a continuation out of place), 1007 for text
//! that is not UTF-8, 1009 for a message over `--max-frame`. Pings are answered with pongs,
//! a close is answered with a close, and the server's own notices are close frames: 1001
//! (going away) for the drain, an idle timeout or an unanswered ping, 1008 for a client too
//! slow to read what the room sends it. docs/protocol.md lists them.

pub(crate) mod client;
#[cfg(feature = "deflate")]
mod deflate;
mod frame;
mod handshake;
mod utf8;

use std::fmt;
use std::sync::Arc;

use super::session::{Notice, Session, SessionEvents};
use frame::{BINARY, CLOSE, CONTINUATION, Header, PING, PONG, TEXT, code};
pub use handshake::{Page, accept_key, base64};
use utf8::Utf8;

/// Which pages may open a WebSocket here (browsers send the page's origin; a page from
/// another site opening a socket with the user's cookies is cross-site WebSocket hijacking).
/// A request without an Origin (not a browser) is always let in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Origins {
    /// Pages served by this same host and port (the default).
    #[default]
    SameHost,
    /// The same host, and these origins (`scheme://host[:port]`, as browsers send them).
    List(Vec<String>),
    /// Any origin at all (`--ws-origin '*'`).
    Any,
}

impl std::str::FromStr for Origins {
    type Err = String;

    /// `*`, or a comma-separated list of origins.
    fn from_str(text: &str) -> Result<Origins, String> {
        if text.trim() == "*" {
            return Ok(Origins::Any);
        }
        let origins: Vec<String> =
            text.split(',').map(|origin| origin.trim().trim_end_matches('/').to_string()).collect();
        for origin in &origins {
            if !(origin.starts_with("http://") || origin.starts_with("https://")) || origin.len() < 10 {
                return Err(format!(
                    "bad origin '{}': expected http://HOST[:PORT] or https://HOST[:PORT], or *",
                    origin.escape_debug()
                ));
            }
        }
        Ok(Origins::List(origins))
    }
}

/// The windows (in bits) a compressor here can keep to, for permessage-deflate: none
/// without the `deflate` feature.
fn deflate_windows() -> std::ops::RangeInclusive<u8> {
    #[cfg(feature = "deflate")]
    return deflate::WINDOW_BITS;
    #[cfg(not(feature = "deflate"))]
    #[allow(clippy::reversed_empty_ranges)]
    return 1..=0;
}

/// What a WebSocket connection is told by the server's configuration.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Which origins may connect.
    pub origins: Origins,
    /// Whether permessage-deflate is agreed when a client offers it (with the `deflate`
    /// feature).
    pub deflate: bool,
    /// What `GET /` serves: the chat page, or the console's.
    pub page: Page,
}

impl Options {
    /// Whether a page of `origin` may open a socket on a server its browser called `host`
    /// (the request's `Host`).
    fn origin_allowed(&self, origin: &str, host: &str) -> bool {
        let origin = origin.trim_end_matches('/');
        match &self.origins {
            Origins::Any => true,
            Origins::List(list) if list.iter().any(|allowed| allowed.eq_ignore_ascii_case(origin)) => true,
            Origins::List(_) | Origins::SameHost => same_host(origin, host),
        }
    }
}

/// Whether `origin` (`scheme://host[:port]`) names the same host and port as `host`.
fn same_host(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else { return false };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return false,
    };
    let strip =
        |authority: &str| authority.strip_suffix(default_port).unwrap_or(authority).to_ascii_lowercase();
    !host.is_empty() && strip(authority) == strip(host.trim())
}

/// Starts a text or binary frame written in place (see [`end_frame`]): room for the short
/// header.
#[inline]
pub fn begin_frame(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0, 0]);
}

/// Ends a frame begun at `start`: everything written since its header is its payload.
/// Binary if `binary` (a reply to a binary message) or if the payload is not UTF-8, text
/// otherwise; compressed (RSV1) with a window of `deflate` bits if permessage-deflate was
/// agreed; a payload of 126 bytes or more moves along for the longer header.
pub fn end_frame(out: &mut Vec<u8>, start: usize, binary: bool, deflate: Option<u8>) {
    let payload = start + 2;
    let opcode = if !binary && std::str::from_utf8(&out[payload..]).is_ok() { TEXT } else { BINARY };
    let first = 0x80 | opcode | compress(out, payload, deflate);
    let length = out.len() - payload;
    let mut header = Vec::with_capacity(10);
    frame::write_header(first, length, &mut header);
    if header.len() > 2 {
        out.splice(payload..payload, header[2..].iter().copied());
    }
    out[start..start + 2].copy_from_slice(&header[..2]);
}

/// Compresses the payload from `payload` to the end of `out` in place, if `deflate` says
/// so; returns the header bit that says it was (RSV1), or 0.
fn compress(out: &mut Vec<u8>, payload: usize, deflate: Option<u8>) -> u8 {
    #[cfg(feature = "deflate")]
    if let Some(bits) = deflate {
        let mut compressed = Vec::with_capacity(out.len() - payload);
        deflate::compress(&out[payload..], bits, &mut compressed);
        out.truncate(payload);
        out.extend_from_slice(&compressed);
        return frame::RSV1;
    }
    let _ = (out, payload, deflate);
    0
}

/// What a `ws` client that the server turns away at once (it is full) is told: an HTTP 503,
/// since its handshake has not happened.
pub fn refusal(notice: Notice, out: &mut Vec<u8>) -> bool {
    let body = match notice {
        Notice::ServerFull => "server full",
        Notice::TooManyFromAddress => "too many connections from your address",
        _ => return false,
    };
    let handshake::Answer::Respond { response, .. } =
        handshake::respond(503, "Service Unavailable", "Retry-After: 1\r\n", &format!("{body}\n"), body)
    else {
        return false;
    };
    out.extend_from_slice(&response);
    true
}

/// Where a WebSocket connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading the HTTP request.
    Handshake,
    /// Switched: frames.
    Open,
    /// A close was sent (or the HTTP answer): nothing more is read or sent.
    Closed,
}

/// The frame whose payload is arriving.
#[derive(Clone, Copy, Debug)]
struct Incoming {
    header: Header,
    /// Payload bytes still to come.
    remaining: u64,
    /// Payload bytes taken so far (where the mask stands).
    taken: usize,
}

/// A data message being put together from its frames.
#[derive(Debug)]
struct Assembling {
    text: bool,
    /// Compressed (permessage-deflate): inflated, and its UTF-8 checked, once whole.
    compressed: bool,
    /// Its payload so far, unmasked.
    bytes: Vec<u8>,
    utf8: Utf8,
}

/// See the module documentation.
#[derive(Debug)]
pub struct WsSession {
    options: Arc<Options>,
    state: State,
    frame: Option<Incoming>,
    message: Option<Assembling>,
    /// A control frame's payload as it arrives (at most 125 bytes).
    control: Vec<u8>,
    /// permessage-deflate agreed: the server's window, in bits.
    deflate: Option<u8>,
    /// Whether any bytes came since the last keepalive check.
    heard: bool,
    /// A ping went out at the last check, with nothing heard since.
    pinged: bool,
}

impl WsSession {
    /// A connection that has not sent its request yet.
    pub fn new(options: Arc<Options>) -> WsSession {
        WsSession {
            options,
            state: State::Handshake,
            frame: None,
            message: None,
            control: Vec::new(),
            deflate: None,
            heard: true,
            pinged: false,
        }
    }

    /// Fails the connection: a close frame with `code`, and nothing more read.
    fn fail(&mut self, code: u16, reason: &'static str, events: &mut SessionEvents) {
        let start = events.buffer().len();
        frame::write_close(code, reason, events.buffer());
        events.send_from(start);
        events.close(reason);
        self.state = State::Closed;
    }

    /// Reads the request head, answers it, and (after an upgrade) goes on with the frames
    /// behind it.
    fn handshake(&mut self, input: &[u8], max_frame: usize, events: &mut SessionEvents) -> usize {
        let Some(end) = input.windows(4).position(|window| window == b"\r\n\r\n") else {
            if input.len() > handshake::MAX_HEAD {
                if let handshake::Answer::Respond { response, reason } = handshake::respond(
                    431,
                    "Request Header Fields Too Large",
                    "",
                    "request head too large\n",
                    "request head too large",
                ) {
                    events.send(&response);
                    events.close(reason);
                }
                self.state = State::Closed;
                return input.len();
            }
            return 0;
        };
        let head = end + 4;
        match handshake::answer(&input[..head], &self.options) {
            handshake::Answer::Upgrade { response, deflate } => {
                events.send(&response);
                self.state = State::Open;
                self.deflate = deflate;
                events.ready();
                head + self.frames(&input[head..], max_frame, events)
            }
            handshake::Answer::Respond { response, reason } => {
                events.send(&response);
                events.close(reason);
                self.state = State::Closed;
                input.len()
            }
        }
    }

    /// Takes frames (and parts of frames) from `input`.
    fn frames(&mut self, input: &[u8], max_frame: usize, events: &mut SessionEvents) -> usize {
        let mut used = 0;
        while self.state == State::Open {
            let mut incoming = match self.frame.take() {
                Some(incoming) => incoming,
                None => match frame::parse_header(&input[used..]) {
                    Ok(None) => break,
                    Err(()) => {
                        self.fail(code::PROTOCOL_ERROR, "a frame length over 2^63", events);
                        break;
                    }
                    Ok(Some(header)) => {
                        used += header.size;
                        if let Err((code, reason)) = self.check(&header, max_frame) {
                            self.fail(code, reason, events);
                            break;
                        }
                        if !header.is_control() && header.opcode != CONTINUATION {
                            let (text, compressed) = (header.opcode == TEXT, header.rsv1);
                            self.message = Some(Assembling {
                                text,
                                compressed,
                                bytes: Vec::new(),
                                utf8: Utf8::default(),
                            });
                        }
                        Incoming { header, remaining: header.length, taken: 0 }
                    }
                },
            };
            let available = (input.len() - used).min(incoming.remaining.min(usize::MAX as u64) as usize);
            let payload = &input[used..used + available];
            used += available;
            let mask = incoming.header.mask.unwrap_or_default();
            if incoming.header.is_control() {
                let start = self.control.len();
                self.control.extend_from_slice(payload);
                frame::apply_mask(&mut self.control[start..], mask, incoming.taken);
            } else if let Some(message) = &mut self.message {
                let start = message.bytes.len();
                message.bytes.extend_from_slice(payload);
                frame::apply_mask(&mut message.bytes[start..], mask, incoming.taken);
                if message.text && !message.compressed && !message.utf8.feed(&message.bytes[start..]) {
                    self.fail(code::INVALID_DATA, "text that is not UTF-8", events);
                    break;
                }
            }
            incoming.taken += available;
            incoming.remaining -= available as u64;
            if incoming.remaining > 0 {
                self.frame = Some(incoming);
                break;
            }
            self.complete(incoming.header, max_frame, events);
        }
        if self.state == State::Closed {
            return input.len();
        }
        used
    }

    /// What a header must be, before any of its payload is taken.
    fn check(&self, header: &Header, max_frame: usize) -> Result<(), (u16, &'static str)> {
        if header.mask.is_none() {
            return Err((code::PROTOCOL_ERROR, "an unmasked frame from a client"));
        }
        // RSV1 marks the first frame of a compressed message, under permessage-deflate only.
        let compressed_start =
            header.rsv1 && self.deflate.is_some() && matches!(header.opcode, TEXT | BINARY);
        if (header.rsv1 && !compressed_start) || header.rsv2_3 {
            return Err((code::PROTOCOL_ERROR, "reserved bits set"));
        }
        match header.opcode {
            CLOSE | PING | PONG => {
                if !header.fin || header.length > frame::MAX_CONTROL {
                    return Err((code::PROTOCOL_ERROR, "a control frame fragmented or over 125 bytes"));
                }
                Ok(())
            }
            TEXT | BINARY | CONTINUATION => {
                let so_far = match (&self.message, header.opcode) {
                    (Some(message), CONTINUATION) => message.bytes.len() as u64,
                    (None, CONTINUATION) => {
                        return Err((code::PROTOCOL_ERROR, "a continuation with no message"));
                    }
                    (Some(_), _) => {
                        return Err((code::PROTOCOL_ERROR, "a new message inside a fragmented one"));
                    }
                    (None, _) => 0,
                };
                if so_far.saturating_add(header.length) > max_frame as u64 {
                    return Err((code::TOO_BIG, "a message over --max-frame"));
                }
                Ok(())
            }
            _ => Err((code::PROTOCOL_ERROR, "a reserved opcode")),
        }
    }

    /// A frame is all in: a control frame is answered, a final data frame ends its message.
    fn complete(&mut self, header: Header, max_frame: usize, events: &mut SessionEvents) {
        match header.opcode {
            PING => {
                let start = events.buffer().len();
                frame::write_frame(PONG, &self.control, events.buffer());
                events.send_from(start);
            }
            PONG => {}
            CLOSE => return self.closed_by_client(events),
            _ if header.fin => return self.message_done(events, max_frame),
            _ => {}
        }
        // Dropped, not kept: control frames are rare, idle connections many.
        self.control = Vec::new();
    }

    /// The message being assembled is whole: checked, then handed on. Its buffer goes: an
    /// idle connection holds none.
    fn message_done(&mut self, events: &mut SessionEvents, max_frame: usize) {
        let Some(message) = self.message.take() else { return };
        let start = events.buffer().len();
        if message.compressed {
            #[cfg(feature = "deflate")]
            match deflate::decompress(&message.bytes, max_frame, events.buffer()) {
                Ok(()) => {}
                Err(deflate::InflateError::TooBig) => {
                    events.buffer().truncate(start);
                    return self.fail(code::TOO_BIG, "a message that inflates over --max-frame", events);
                }
                Err(deflate::InflateError::Invalid) => {
                    events.buffer().truncate(start);
                    return self.fail(
                        code::INVALID_DATA,
                        "a compressed message that does not inflate",
                        events,
                    );
                }
            }
            let end = events.buffer().len();
            if message.text && std::str::from_utf8(events.bytes(start..end)).is_err() {
                events.buffer().truncate(start);
                return self.fail(code::INVALID_DATA, "text that is not UTF-8", events);
            }
        } else {
            if message.text && !message.utf8.is_complete() {
                return self.fail(code::INVALID_DATA, "text that is not UTF-8", events);
            }
            events.buffer().extend_from_slice(&message.bytes);
        }
        let _ = max_frame;
        events.message_from(start, !message.text);
    }

    /// The client sent a close: answered with the same code, then closed (RFC 6455 5.5.1).
    fn closed_by_client(&mut self, events: &mut SessionEvents) {
        let payload = std::mem::take(&mut self.control);
        let start = events.buffer().len();
        match payload.as_slice() {
            [] => frame::write_frame(CLOSE, &[], events.buffer()),
            [_] => return self.fail(code::PROTOCOL_ERROR, "a close payload of one byte", events),
            [high, low, reason @ ..] => {
                let code = u16::from_be_bytes([*high, *low]);
                if !frame::is_valid_close_code(code) {
                    return self.fail(code::PROTOCOL_ERROR, "a close code not allowed", events);
                }
                if std::str::from_utf8(reason).is_err() {
                    return self.fail(code::INVALID_DATA, "a close reason that is not UTF-8", events);
                }
                frame::write_frame(CLOSE, &code.to_be_bytes(), events.buffer());
            }
        }
        events.send_from(start);
        events.close("the client closed");
        self.state = State::Closed;
    }
}

impl Session for WsSession {
    fn is_ready(&self) -> bool {
        self.state != State::Handshake
    }

    fn accepts_messages(&self) -> bool {
        self.state == State::Open
    }

    fn compression(&self) -> Option<u8> {
        self.deflate
    }

    fn receive(&mut self, input: &[u8], max_frame: usize, events: &mut SessionEvents) -> usize {
        if !input.is_empty() {
            self.heard = true;
        }
        match self.state {
            State::Handshake => self.handshake(input, max_frame, events),
            State::Open => self.frames(input, max_frame, events),
            State::Closed => input.len(),
        }
    }

    fn notice(&mut self, notice: Notice, out: &mut Vec<u8>) -> bool {
        let (code, reason) = match (self.state, notice) {
            (State::Handshake, _) => return refusal(notice, out),
            (State::Closed, _) => return false,
            (State::Open, Notice::ServerFull) => (code::TRY_AGAIN_LATER, "server full"),
            (State::Open, Notice::IdleTimeout) => (code::GOING_AWAY, "idle timeout"),
            (State::Open, Notice::GoingAway) => (code::GOING_AWAY, "going away"),
            (State::Open, Notice::TooSlow) => (code::POLICY, "too slow"),
            // The session decodes its own frames and closes on bad ones itself; a codec's
            // error cannot reach it, but if one did, it would be the peer's.
            (State::Open, Notice::BadInput(_)) => (code::PROTOCOL_ERROR, "bad input"),
            (State::Open, Notice::Evicted) => (code::TRY_AGAIN_LATER, "server memory full"),
            (State::Open, Notice::TooManyFromAddress) => (code::TRY_AGAIN_LATER, "too many connections"),
        };
        frame::write_close(code, reason, out);
        self.state = State::Closed;
        true
    }

    fn held(&self) -> usize {
        self.message.as_ref().map_or(0, |message| message.bytes.capacity()) + self.control.capacity()
    }

    fn drop_input(&mut self) {
        self.message = None;
        self.control = Vec::new();
    }

    fn keepalive(&mut self, events: &mut SessionEvents) -> bool {
        if self.state != State::Open {
            return true;
        }
        if std::mem::take(&mut self.heard) {
            self.pinged = false;
            return true;
        }
        if self.pinged {
            self.fail(code::GOING_AWAY, "ping timeout", events);
            return false;
        }
        let start = events.buffer().len();
        frame::write_frame(PING, b"evloop", events.buffer());
        events.send_from(start);
        self.pinged = true;
        true
    }
}

impl Origins {
    /// As `--ws-origin` takes it (the same host is always in).
    pub fn to_arg(&self) -> String {
        match self {
            Origins::SameHost => String::new(),
            Origins::List(list) => list.join(","),
            Origins::Any => "*".to_string(),
        }
    }
}

impl fmt::Display for Origins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origins::SameHost => f.write_str("same host"),
            Origins::List(list) => write!(f, "same host, {}", list.join(", ")),
            Origins::Any => f.write_str("*"),
        }
    }
}
