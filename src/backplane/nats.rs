//! The NATS client protocol, the subset a publisher and a subscriber need, sans I/O.
//!
//! The server speaks first (`INFO {...}`); the client answers `CONNECT {...}` and then
//! `PUB <subject> [reply-to] <#bytes>\r\n<payload>\r\n` (`HPUB` with headers, NATS 2.2+:
//! what JetStream's conditions ride on) or `SUB <subject> <sid>\r\n`. The server sends
//! `MSG <subject> <sid> [reply-to] <#bytes>\r\n<payload>\r\n` for each message on a
//! subscription (`HMSG` when it has headers, such as a `503` status: no one answers a
//! request), `PING` (answered `PONG`) to check the link, `+OK`/`-ERR` in verbose mode or on
//! a protocol error. Operation names are case-insensitive. [`parse`] takes the next whole
//! operation from the front of a buffer, or says it is not complete yet.

use std::fmt;
use std::fmt::Write as _;
use std::io::Write as _;

/// One operation from the server, borrowing its bytes from the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerOp<'a> {
    /// `INFO {json}`: the server's description, first thing on a connection.
    Info(&'a [u8]),
    /// A message on a subscription.
    Msg {
        /// Its subject.
        subject: &'a [u8],
        /// The subscription it matched.
        sid: &'a [u8],
        /// Where an answer goes (JetStream: what a pushed message is, `$JS.ACK...`).
        reply: Option<&'a [u8]>,
        /// The status its headers carry (`HMSG`: `NATS/1.0 503` when no one answered a
        /// request), if any.
        status: Option<u16>,
        /// Its bytes (after its headers).
        payload: &'a [u8],
    },
    /// `PING`: answer `PONG` or be disconnected.
    Ping,
    /// `PONG`: the answer to our `PING`.
    Pong,
    /// `+OK`.
    Ok,
    /// `-ERR 'message'`.
    Err(&'a [u8]),
}

/// Input that is not the NATS protocol, or a message over the size allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NatsError {
    /// An unknown operation or a malformed line.
    Malformed,
    /// A control line or payload longer than allowed.
    TooLong,
}

impl fmt::Display for NatsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NatsError::Malformed => f.write_str("malformed NATS protocol line"),
            NatsError::TooLong => f.write_str("NATS message over the size allowed"),
        }
    }
}

/// The longest control line accepted (nats-server's own default `max_control_line`), and
/// longer than any `INFO` it sends.
const MAX_CONTROL_LINE: usize = 64 * 1024;

/// Takes the next whole operation from the front of `input`: `Ok(Some((op, used)))`,
/// `Ok(None)` if it is not all there yet, or an error. `max_payload` bounds a message.
pub fn parse(input: &[u8], max_payload: usize) -> Result<Option<(ServerOp<'_>, usize)>, NatsError> {
    let Some(end) = memchr::memchr(b'\n', input) else {
        return if input.len() > MAX_CONTROL_LINE { Err(NatsError::TooLong) } else { Ok(None) };
    };
    if end == 0 || input[end - 1] != b'\r' {
        return Err(NatsError::Malformed);
    }
    let line = &input[..end - 1];
    let after_line = end + 1;
    let (op, rest) = match memchr::memchr2(b' ', b'\t', line) {
        Some(space) => (&line[..space], trim(&line[space + 1..])),
        None => (line, &b""[..]),
    };
    let op = match op.to_ascii_uppercase().as_slice() {
        b"INFO" => ServerOp::Info(rest),
        b"PING" => ServerOp::Ping,
        b"PONG" => ServerOp::Pong,
        b"+OK" => ServerOp::Ok,
        b"-ERR" => ServerOp::Err(rest),
        op @ (b"MSG" | b"HMSG") => {
            let headers = op == b"HMSG";
            let fields: Vec<&[u8]> =
                rest.split(|&b| b == b' ' || b == b'\t').filter(|f| !f.is_empty()).collect();
            let (subject, sid, reply, lengths) = match (fields.as_slice(), headers) {
                ([subject, sid, length], false) => (*subject, *sid, None, (None, *length)),
                ([subject, sid, reply, length], false) => (*subject, *sid, Some(*reply), (None, *length)),
                ([subject, sid, head, total], true) => (*subject, *sid, None, (Some(*head), *total)),
                ([subject, sid, reply, head, total], true) => {
                    (*subject, *sid, Some(*reply), (Some(*head), *total))
                }
                _ => return Err(NatsError::Malformed),
            };
            let number = |text: &[u8]| -> Result<usize, NatsError> {
                std::str::from_utf8(text).ok().and_then(|n| n.parse().ok()).ok_or(NatsError::Malformed)
            };
            let length = number(lengths.1)?;
            let head = lengths.0.map(number).transpose()?.unwrap_or(0);
            if length > max_payload {
                return Err(NatsError::TooLong);
            }
            if head > length {
                return Err(NatsError::Malformed);
            }
            let end = after_line + length;
            if input.len() < end + 2 {
                return Ok(None);
            }
            if &input[end..end + 2] != b"\r\n" {
                return Err(NatsError::Malformed);
            }
            let status = headers.then(|| status_of(&input[after_line..after_line + head])).flatten();
            let payload = &input[after_line + head..end];
            return Ok(Some((ServerOp::Msg { subject, sid, reply, status, payload }, end + 2)));
        }
        _ => return Err(NatsError::Malformed),
    };
    Ok(Some((op, after_line)))
}

/// The status in a header block's first line (`NATS/1.0 503`), if it has one.
fn status_of(headers: &[u8]) -> Option<u16> {
    let line = headers.split(|&b| b == b'\r').next()?;
    let code = line.strip_prefix(b"NATS/1.0")?;
    let code = trim(code).split(|&b| b == b' ').next()?;
    std::str::from_utf8(code).ok()?.parse().ok()
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |end| end + 1);
    &bytes[start..end]
}

/// The `connect_urls` of an `INFO` (the client addresses of the cluster's servers, as
/// `HOST:PORT`), at most `max` of them; none if the field is absent or not a list of strings.
/// Read by hand, not with a JSON parser: the backplane is core, and this one flat field is
/// all it needs.
pub fn connect_urls(info: &[u8], max: usize) -> Vec<String> {
    let key = b"\"connect_urls\"";
    let Some(at) = memchr::memmem::find(info, key) else { return Vec::new() };
    let rest = trim(&info[at + key.len()..]);
    let Some(rest) = rest.strip_prefix(b":") else { return Vec::new() };
    let Some(mut rest) = trim(rest).strip_prefix(b"[") else { return Vec::new() };
    let mut urls = Vec::new();
    loop {
        rest = trim(rest);
        match rest.first() {
            Some(b'"') => {
                let Some(end) = memchr::memchr(b'"', &rest[1..]) else { return Vec::new() };
                // An address is ASCII; anything else is skipped, not mangled.
                if let (true, Ok(url)) = (urls.len() < max, std::str::from_utf8(&rest[1..1 + end])) {
                    urls.push(url.to_string());
                }
                rest = trim(&rest[end + 2..]);
                match rest.first() {
                    Some(b',') => rest = &rest[1..],
                    Some(b']') => return urls,
                    _ => return Vec::new(),
                }
            }
            Some(b']') => return urls,
            _ => return Vec::new(),
        }
    }
}

/// Appends `CONNECT`: not verbose (no `+OK` for every `PUB`), and `echo: false`, so a
/// connection never receives what it published itself (nor, from JetStream, a stored
/// message it published: history is read on the other link). Headers on, and told when no
/// one answers a request (an `HMSG` with status 503, at once: JetStream is not there).
pub fn encode_connect(out: &mut Vec<u8>, name: &str) {
    let _ = write!(
        out,
        "CONNECT {{\"verbose\":false,\"pedantic\":false,\"echo\":false,\"headers\":true,\"no_responders\":true,\"lang\":\"rust\",\"version\":\"{}\",\"name\":\"{name}\",\"protocol\":1}}\r\n",
        env!("CARGO_PKG_VERSION")
    );
}

/// Appends `PUB subject #bytes` and the payload.
pub fn encode_pub(out: &mut Vec<u8>, subject: &str, payload: &[u8]) {
    let _ = write!(out, "PUB {subject} {}\r\n", payload.len());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// Appends `PUB subject reply-to #bytes` and the payload: a request, answered on `reply`.
pub fn encode_request(out: &mut Vec<u8>, subject: &str, reply: &str, payload: &[u8]) {
    let _ = write!(out, "PUB {subject} {reply} {}\r\n", payload.len());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// Appends `HPUB subject reply-to #header-bytes #total-bytes`, the headers (`Name: value`
/// each) and the payload: a request with headers.
pub fn encode_hrequest(
    out: &mut Vec<u8>,
    subject: &str,
    reply: &str,
    headers: &[(&str, &str)],
    payload: &[u8],
) {
    let mut block = String::from("NATS/1.0\r\n");
    for (name, value) in headers {
        let _ = write!(block, "{name}: {value}\r\n");
    }
    block.push_str("\r\n");
    let _ = write!(out, "HPUB {subject} {reply} {} {}\r\n", block.len(), block.len() + payload.len());
    out.extend_from_slice(block.as_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// Appends `SUB subject sid` (a sid is any word: the server gives it back with each message;
/// the chat rooms name theirs by kind and room, the agents' bus numbers its own).
pub fn encode_sub(out: &mut Vec<u8>, subject: &str, sid: impl fmt::Display) {
    let _ = write!(out, "SUB {subject} {sid}\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &[u8] = b"INFO {\"server_id\":\"x\",\"max_payload\":1048576}\r\nPING\r\n+OK\r\n\
        MSG evloop.room.a 1 5\r\na\r\nb!\r\nmsg evloop.room.a 2 reply.to 0\r\n\r\npong\r\n-ERR 'Slow Consumer'\r\n\
        HMSG _INBOX.x 7 16 16\r\nNATS/1.0 503\r\n\r\n\r\nHMSG s r re.ply 12 14\r\nNATS/1.0\r\n\r\nhi\r\n";

    fn parse_all(bytes: &[u8]) -> Vec<ServerOp<'_>> {
        let mut ops = Vec::new();
        let mut at = 0;
        while let Some((op, used)) = parse(&bytes[at..], 1 << 20).unwrap() {
            ops.push(op);
            at += used;
        }
        assert_eq!(at, bytes.len(), "bytes left over");
        ops
    }

    /// What a server sends parses to what it says; names are case-insensitive.
    #[test]
    fn parses_server_operations() {
        let ops = parse_all(STREAM);
        assert_eq!(ops.len(), 9);
        assert!(matches!(ops[0], ServerOp::Info(info) if info.starts_with(b"{")));
        assert_eq!(ops[1], ServerOp::Ping);
        assert_eq!(ops[2], ServerOp::Ok);
        let msg =
            |subject, sid, reply, status, payload| ServerOp::Msg { subject, sid, reply, status, payload };
        assert_eq!(ops[3], msg(b"evloop.room.a", b"1", None, None, b"a\r\nb!"));
        assert_eq!(ops[4], msg(b"evloop.room.a", b"2", Some(b"reply.to"), None, b""));
        assert_eq!(ops[5], ServerOp::Pong);
        assert_eq!(ops[6], ServerOp::Err(b"'Slow Consumer'"));
        assert_eq!(ops[7], msg(b"_INBOX.x", b"7", None, Some(503), b""), "no one answered");
        assert_eq!(ops[8], msg(b"s", b"r", Some(b"re.ply"), None, b"hi"), "headers apart from the payload");
    }

    /// Cut anywhere, a stream parses to the same operations.
    #[test]
    fn any_split_parses_the_same() {
        let whole: Vec<String> = parse_all(STREAM).iter().map(|op| format!("{op:?}")).collect();
        for cut in 0..=STREAM.len() {
            let mut buffer = STREAM[..cut].to_vec();
            let mut ops = Vec::new();
            let mut consumed = 0;
            while let Some((op, used)) = parse(&buffer[consumed..], 1 << 20).unwrap() {
                ops.push(format!("{op:?}"));
                consumed += used;
            }
            buffer.extend_from_slice(&STREAM[cut..]);
            while let Some((op, used)) = parse(&buffer[consumed..], 1 << 20).unwrap() {
                ops.push(format!("{op:?}"));
                consumed += used;
            }
            assert_eq!(consumed, STREAM.len(), "cut at {cut}");
            assert_eq!(ops, whole, "cut at {cut}");
        }
    }

    /// Unknown operations, bad lengths and oversize messages are errors.
    #[test]
    fn refuses_garbage_and_oversize() {
        assert_eq!(parse(b"HELLO\r\n", 100), Err(NatsError::Malformed));
        assert_eq!(parse(b"MSG a 1\r\n", 100), Err(NatsError::Malformed));
        assert_eq!(parse(b"MSG a 1 x\r\n", 100), Err(NatsError::Malformed));
        assert_eq!(parse(b"MSG a 1 101\r\n", 100), Err(NatsError::TooLong));
        assert_eq!(parse(b"MSG a 1 2\r\nabXX", 100), Err(NatsError::Malformed));
        assert_eq!(parse(b"PING\n", 100), Err(NatsError::Malformed));
        assert_eq!(parse(b"HMSG a 1 5 3\r\n", 100), Err(NatsError::Malformed), "headers past the end");
    }

    /// A cluster's client addresses come out of INFO; anything else gives none.
    #[test]
    fn reads_connect_urls_from_info() {
        let info = br#"{"server_id":"x","connect_urls":["10.1.0.2:4222", "[::1]:4222"],"max_payload":1}"#;
        assert_eq!(connect_urls(info, 8), ["10.1.0.2:4222", "[::1]:4222"]);
        assert_eq!(connect_urls(info, 1), ["10.1.0.2:4222"]);
        assert_eq!(connect_urls(br#"{"connect_urls":[]}"#, 8), Vec::<String>::new());
        for bad in [&br#"{"server_id":"x"}"#[..], br#"{"connect_urls":"x"}"#, br#"{"connect_urls":["a""#] {
            assert!(connect_urls(bad, 8).is_empty(), "{}", String::from_utf8_lossy(bad));
        }
    }

    /// What the client sends is the protocol's text.
    #[test]
    fn encodes_client_operations() {
        let mut out = Vec::new();
        encode_pub(&mut out, "evloop.room.a", b"x\r\ny");
        encode_sub(&mut out, "evloop.room.a", "r3");
        assert_eq!(out, b"PUB evloop.room.a 4\r\nx\r\ny\r\nSUB evloop.room.a r3\r\n");
        let mut out = Vec::new();
        encode_hrequest(&mut out, "a.b", "in.1", &[("Nats-Expected-Last-Subject-Sequence", "0")], b"o");
        let head = "NATS/1.0\r\nNats-Expected-Last-Subject-Sequence: 0\r\n\r\n";
        let expected = format!("HPUB a.b in.1 {} {}\r\n{head}o\r\n", head.len(), head.len() + 1);
        assert_eq!(String::from_utf8(out).unwrap(), expected);
        let parsed =
            parse(format!("HMSG a.b 1 {} {}\r\n{head}o\r\n", head.len(), head.len() + 1).as_bytes(), 100)
                .unwrap()
                .map(|(op, _)| format!("{op:?}"));
        assert!(parsed.unwrap().contains("payload: [111]"), "what we send, read back");
        let mut connect = Vec::new();
        encode_connect(&mut connect, "evloop");
        assert!(connect.starts_with(b"CONNECT {\"verbose\":false"));
        assert!(connect.windows(12).any(|w| w == b"\"echo\":false"));
    }
}
