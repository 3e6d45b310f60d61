//! The generic workload: requests typed on the command line (`-m`), and what makes a reply
//! right: its exact bytes (`--expect`), a prefix of a framed reply (`--expect-prefix`), or
//! only a marker to time it by (`--latency-marker`), for servers no one here wrote.
//!
//! Pure: parsing the flags' text (escapes, presets) and deciding about bytes. The engine
//! (`workloads/generic.rs`) feeds it what the sockets bring.

use std::fmt::Write as _;

/// What the generic workload sends and checks. Message `seq` of a connection is
/// `messages[seq % messages.len()]`, and so is its expected reply: requests cycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Script {
    /// `-1/--first-message`: sent once per connection as soon as it is up, before the load.
    pub first: Option<Vec<u8>>,
    /// `--first-expect`: the exact bytes the server answers the first message with, awaited
    /// before the connection counts as up. Without it, no answer is awaited.
    pub first_expect: Option<Vec<u8>>,
    /// `-m/--message`, in order.
    pub messages: Vec<Vec<u8>>,
    /// How replies are checked.
    pub check: Check,
    /// How replies are cut from the stream (for `--expect-prefix`).
    pub framing: Framing,
}

/// How a reply is judged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// `--expect`: reply `seq` is exactly `replies[seq % len]`. With the raw codec the
    /// reply is the next that many bytes of the stream; with another codec, the next frame.
    Exact(Vec<Vec<u8>>),
    /// `--expect-prefix`: reply `seq` is the next frame (of the codec, or of `--framing`)
    /// and starts with `prefixes[seq % len]`.
    Prefix(Vec<Vec<u8>>),
    /// `--latency-marker`: nothing is checked; each time the marker is seen in the stream,
    /// the oldest request outstanding is answered (tcpkali's model, for servers whose
    /// replies do not map one to one).
    Marker(Vec<u8>),
}

/// How `--expect-prefix` replies are cut from the stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Framing {
    /// By `--codec` (line, length, ws).
    #[default]
    Codec,
    /// HTTP/1.1 responses: the head, then `Content-Length` bytes of body.
    Http,
}

impl Script {
    /// Message `seq`.
    pub fn message(&self, seq: u64) -> &[u8] {
        &self.messages[(seq % self.messages.len() as u64) as usize]
    }

    /// `--expect`: the exact reply to message `seq`.
    pub fn exact(&self, seq: u64) -> Option<&[u8]> {
        match &self.check {
            Check::Exact(replies) => Some(&replies[(seq % replies.len() as u64) as usize]),
            _ => None,
        }
    }

    /// Whether `reply`, a whole framed reply, is right for message `seq`.
    pub fn reply_matches(&self, seq: u64, reply: &[u8]) -> bool {
        match &self.check {
            Check::Exact(replies) => reply == replies[(seq % replies.len() as u64) as usize],
            Check::Prefix(prefixes) => reply.starts_with(&prefixes[(seq % prefixes.len() as u64) as usize]),
            Check::Marker(_) => true,
        }
    }

    /// What was expected for message `seq`, in words, for a mismatch report.
    pub fn expected_text(&self, seq: u64) -> Vec<u8> {
        match &self.check {
            Check::Exact(replies) => replies[(seq % replies.len() as u64) as usize].clone(),
            Check::Prefix(prefixes) => {
                let mut text = prefixes[(seq % prefixes.len() as u64) as usize].clone();
                text.extend_from_slice(b"...");
                text
            }
            Check::Marker(marker) => marker.clone(),
        }
    }

    /// The run's mode in words, for the report: what is sent and how replies are judged.
    pub fn describe(&self) -> String {
        let mut text = String::new();
        if let Some(first) = &self.first {
            let _ = write!(text, "first '{}', ", escape(first));
        }
        let messages: Vec<String> = self.messages.iter().map(|message| escape(message)).collect();
        let _ = write!(text, "messages '{}'", messages.join("', '"));
        match &self.check {
            Check::Exact(_) => text.push_str(", replies checked byte for byte"),
            Check::Prefix(_) if self.framing == Framing::Http => {
                text.push_str(", HTTP responses checked by their start")
            }
            Check::Prefix(_) => text.push_str(", replies checked by their start"),
            Check::Marker(marker) => {
                let _ = write!(text, ", timed to the marker '{}' (replies not checked)", escape(marker));
            }
        }
        text
    }

    /// The command-line flags that make this script (for loader processes, and to show
    /// what a preset stands for).
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let mut flag = |name: &str, value: &[u8]| args.extend([format!("--{name}"), escape(value)]);
        if let Some(first) = &self.first {
            flag("first-message", first);
        }
        if let Some(expect) = &self.first_expect {
            flag("first-expect", expect);
        }
        for message in &self.messages {
            flag("message", message);
        }
        match &self.check {
            Check::Exact(replies) => replies.iter().for_each(|reply| flag("expect", reply)),
            Check::Prefix(prefixes) => prefixes.iter().for_each(|prefix| flag("expect-prefix", prefix)),
            Check::Marker(marker) => flag("latency-marker", marker),
        }
        if self.framing == Framing::Http {
            args.extend(["--framing".to_string(), "http".to_string()]);
        }
        args
    }
}

/// The flags' text as typed: the messages, their checks, the first message.
#[derive(Clone, Debug, Default)]
pub struct ScriptFlags {
    /// `-m`.
    pub messages: Vec<String>,
    /// `--expect`.
    pub expect: Vec<String>,
    /// `--expect-prefix`.
    pub expect_prefix: Vec<String>,
    /// `--latency-marker`.
    pub marker: Option<String>,
    /// `-1`.
    pub first: Option<String>,
    /// `--first-expect`.
    pub first_expect: Option<String>,
    /// `--framing http`.
    pub http: bool,
}

impl ScriptFlags {
    /// The script these flags describe, or a one-line reason they describe none.
    pub fn script(&self) -> Result<Script, String> {
        let parse_all =
            |texts: &[String]| texts.iter().map(|text| unescape(text)).collect::<Result<Vec<_>, _>>();
        let messages = parse_all(&self.messages)?;
        if messages.is_empty() {
            return Err("the generic workload needs at least one -m/--message".to_string());
        }
        if messages.iter().any(Vec::is_empty) {
            return Err("-m/--message cannot be empty".to_string());
        }
        let count_fits = |name: &str, count: usize| {
            if count == 1 || count == messages.len() {
                Ok(())
            } else {
                Err(format!(
                    "{count} {name} for {} messages: give one for all, or one per -m, in order",
                    messages.len()
                ))
            }
        };
        let checks = usize::from(!self.expect.is_empty())
            + usize::from(!self.expect_prefix.is_empty())
            + usize::from(self.marker.is_some());
        if checks != 1 {
            return Err("say how replies are checked: one of --expect, --expect-prefix or --latency-marker"
                .to_string());
        }
        let check = if !self.expect.is_empty() {
            count_fits("--expect", self.expect.len())?;
            let replies = parse_all(&self.expect)?;
            if replies.iter().any(Vec::is_empty) {
                return Err("--expect cannot be empty: every message has a reply to check".to_string());
            }
            Check::Exact(replies)
        } else if !self.expect_prefix.is_empty() {
            count_fits("--expect-prefix", self.expect_prefix.len())?;
            Check::Prefix(parse_all(&self.expect_prefix)?)
        } else {
            let marker = unescape(self.marker.as_deref().unwrap_or_default())?;
            if marker.is_empty() {
                return Err("--latency-marker cannot be empty".to_string());
            }
            Check::Marker(marker)
        };
        if self.http && !matches!(check, Check::Prefix(_)) {
            return Err("--framing http cuts replies for --expect-prefix".to_string());
        }
        let first = self.first.as_deref().map(unescape).transpose()?;
        let first_expect = self.first_expect.as_deref().map(unescape).transpose()?;
        if first_expect.is_some() && first.is_none() {
            return Err("--first-expect is the reply to -1/--first-message".to_string());
        }
        if first_expect.as_ref().is_some_and(Vec::is_empty) {
            return Err("--first-expect cannot be empty (leave it out: no reply is awaited)".to_string());
        }
        Ok(Script {
            first,
            first_expect,
            messages,
            check,
            framing: if self.http { Framing::Http } else { Framing::Codec },
        })
    }

    /// Whether any of the flags was given.
    pub fn any(&self) -> bool {
        !self.messages.is_empty()
            || !self.expect.is_empty()
            || !self.expect_prefix.is_empty()
            || self.marker.is_some()
            || self.first.is_some()
            || self.first_expect.is_some()
            || self.http
    }
}

/// A request and reply pair people load every day, as flags (`--preset`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Preset {
    /// Redis `PING`, inline, as `redis-benchmark -t ping_inline` sends it.
    RedisPing,
    /// Redis `SET` then `GET` of one key, as RESP arrays (as `redis-benchmark -t set,get`).
    RedisSetGet,
    /// memcached: the key stored once per connection, then `get` over and over.
    MemcachedGet,
    /// HTTP/1.1 `GET PATH` with keep-alive; the status line must say 200.
    HttpGet(String),
}

/// The names `--preset` takes, for `--help` and errors.
pub const PRESET_NAMES: &[&str] = &["redis-ping", "redis-set-get", "memcached-get", "http-get"];

impl Preset {
    /// A preset from its name and, for `http-get`, the path.
    pub fn parse(name: &str, path: Option<&str>) -> Result<Preset, String> {
        let preset = match name {
            "redis-ping" => Preset::RedisPing,
            "redis-set-get" => Preset::RedisSetGet,
            "memcached-get" => Preset::MemcachedGet,
            "http-get" => {
                let path = path.unwrap_or("/");
                if !path.starts_with('/') || path.bytes().any(|byte| byte.is_ascii_whitespace()) {
                    return Err(format!("http-get takes a path such as /index.html, not '{path}'"));
                }
                return Ok(Preset::HttpGet(path.to_string()));
            }
            other => {
                return Err(format!("unknown preset '{other}': expected {}", PRESET_NAMES.join(", ")));
            }
        };
        match path {
            Some(extra) => Err(format!("preset {name} takes no argument (got '{extra}')")),
            None => Ok(preset),
        }
    }

    /// The flags this preset stands for; `host` goes in HTTP's `Host` header.
    pub fn flags(&self, host: &str) -> ScriptFlags {
        let strings = |texts: &[&str]| texts.iter().map(|text| text.to_string()).collect();
        match self {
            Preset::RedisPing => ScriptFlags {
                messages: strings(&[r"PING\r\n"]),
                expect: strings(&[r"+PONG\r\n"]),
                ..ScriptFlags::default()
            },
            Preset::RedisSetGet => ScriptFlags {
                messages: strings(&[
                    r"*3\r\n$3\r\nSET\r\n$10\r\nkey:evloop\r\n$3\r\nxxx\r\n",
                    r"*2\r\n$3\r\nGET\r\n$10\r\nkey:evloop\r\n",
                ]),
                expect: strings(&[r"+OK\r\n", r"$3\r\nxxx\r\n"]),
                ..ScriptFlags::default()
            },
            Preset::MemcachedGet => ScriptFlags {
                first: Some(r"set key:evloop 0 0 3\r\nxxx\r\n".to_string()),
                first_expect: Some(r"STORED\r\n".to_string()),
                messages: strings(&[r"get key:evloop\r\n"]),
                expect: strings(&[r"VALUE key:evloop 0 3\r\nxxx\r\nEND\r\n"]),
                ..ScriptFlags::default()
            },
            Preset::HttpGet(path) => ScriptFlags {
                messages: vec![format!(r"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n")],
                expect_prefix: strings(&[r"HTTP/1.1 200 "]),
                http: true,
                ..ScriptFlags::default()
            },
        }
    }
}

/// Bytes from a flag's text: `\r`, `\n`, `\t`, `\0`, `\\` and `\xNN` are escapes; other
/// bytes stand for themselves.
pub fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(byte) = bytes.next() {
        if byte != b'\\' {
            out.push(byte);
            continue;
        }
        match bytes.next() {
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'0') => out.push(0),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let digits = [bytes.next(), bytes.next()];
                let value = match digits {
                    [Some(high), Some(low)] => std::str::from_utf8(&[high, low])
                        .ok()
                        .and_then(|hex| u8::from_str_radix(hex, 16).ok()),
                    _ => None,
                };
                out.push(value.ok_or_else(|| format!("\\x takes two hex digits, in '{text}'"))?);
            }
            Some(other) => {
                return Err(format!(
                    "unknown escape '\\{}' in '{text}': use \\r \\n \\t \\0 \\\\ or \\xNN",
                    other as char
                ));
            }
            None => return Err(format!("'{text}' ends in a lone backslash (write \\\\)")),
        }
    }
    Ok(out)
}

/// The text [`unescape`] turns back into `bytes`: printable ASCII as is, the rest escaped.
pub fn escape(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len());
    for &byte in bytes {
        match byte {
            b'\r' => text.push_str(r"\r"),
            b'\n' => text.push_str(r"\n"),
            b'\t' => text.push_str(r"\t"),
            b'\\' => text.push_str(r"\\"),
            b' '..=b'~' => text.push(byte as char),
            other => {
                let _ = write!(text, "\\x{other:02x}");
            }
        }
    }
    text
}

/// `--framing http`: the length of the HTTP response at the start of `bytes` once it is all
/// there (`Ok(None)`: not yet), or why it cannot be cut (a chunked body, a bad head).
pub fn http_response_len(bytes: &[u8], max: usize) -> Result<Option<usize>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(bytes) {
        Ok(httparse::Status::Complete(head)) => head,
        Ok(httparse::Status::Partial) if bytes.len() > max => {
            return Err(format!("an HTTP head over {max} bytes"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(format!("not an HTTP response: {error}")),
    };
    let mut body = 0usize;
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            body = std::str::from_utf8(header.value)
                .ok()
                .and_then(|value| value.trim().parse().ok())
                .ok_or("a Content-Length that is not a number")?;
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("a chunked HTTP body (only Content-Length bodies are cut)".to_string());
        }
    }
    // A 1xx, 204 or 304 answer has no body whatever its headers say.
    if matches!(response.code, Some(100..=199 | 204 | 304)) {
        body = 0;
    }
    let total = head.saturating_add(body);
    if total > max {
        return Err(format!("an HTTP response of {total} bytes, over {max}"));
    }
    Ok((bytes.len() >= total).then_some(total))
}

/// Finds `marker` in a stream read in pieces: the end of a piece that could begin the marker
/// is kept for the next one, and only the join (that end and the start of the next piece) is
/// copied, never a whole read.
#[derive(Clone, Debug, Default)]
pub struct MarkerScan {
    /// The last bytes of the stream so far (fewer than the marker's) that could be the
    /// start of a marker: never a whole marker, nor part of one already counted.
    carry: Vec<u8>,
    /// The carry and the start of the next piece, searched for a marker across the join.
    join: Vec<u8>,
}

impl MarkerScan {
    /// How many times `marker` ends within `bytes` (with what came before). Occurrences do
    /// not overlap, as they would not in a stream of replies.
    pub fn count(&mut self, marker: &[u8], bytes: &[u8]) -> usize {
        let keep = marker.len() - 1;
        let carried = self.carry.len();
        self.join.clear();
        self.join.extend_from_slice(&self.carry);
        self.join.extend_from_slice(&bytes[..bytes.len().min(keep)]);
        // A marker across the join ends inside `bytes` (the carry holds no whole marker);
        // the search of `bytes` starts after it.
        let mut seen = 0;
        let mut from = 0;
        if let Some(found) = memchr::memmem::find(&self.join, marker) {
            seen += 1;
            from = found + marker.len() - carried;
        }
        let mut next = from;
        for found in memchr::memmem::find_iter(&bytes[from..], marker) {
            seen += 1;
            next = from + found + marker.len();
        }
        self.carry.clear();
        if bytes.len() >= keep {
            self.carry.extend_from_slice(&bytes[(bytes.len() - keep).max(next)..]);
        } else if seen == 0 {
            // A short piece: the stream's tail is the join's, less what may not begin a marker.
            self.carry.extend_from_slice(&self.join[self.join.len().saturating_sub(keep)..]);
        } else {
            self.carry.extend_from_slice(&bytes[next..]);
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Escapes turn into their bytes and back.
    #[test]
    fn escapes_round_trip() {
        let bytes = unescape(r"PING\r\n\x00\xff\t\\ok").unwrap();
        assert_eq!(bytes, b"PING\r\n\x00\xff\t\\ok");
        assert_eq!(unescape(&escape(&bytes)).unwrap(), bytes);
        for bad in [r"\q", r"\x4", r"\xzz", "end\\"] {
            assert!(unescape(bad).is_err(), "{bad}");
        }
    }

    /// Checks: exact bytes, a prefix, cycling with the messages.
    #[test]
    fn replies_are_judged_per_message() {
        let flags = ScriptFlags {
            messages: vec!["a".into(), "b".into()],
            expect: vec!["A".into(), "B".into()],
            ..Default::default()
        };
        let script = flags.script().unwrap();
        assert_eq!((script.message(0), script.message(3)), (&b"a"[..], &b"b"[..]));
        assert!(script.reply_matches(2, b"A") && !script.reply_matches(1, b"A"));
        let prefix = ScriptFlags {
            messages: vec!["GET".into()],
            expect_prefix: vec!["HTTP/1.1 200 ".into()],
            http: true,
            ..Default::default()
        };
        let script = prefix.script().unwrap();
        assert!(script.reply_matches(9, b"HTTP/1.1 200 OK\r\n\r\n"));
        assert!(!script.reply_matches(9, b"HTTP/1.1 404 Not Found\r\n\r\n"));
    }

    /// Flags that say nothing, or too much, are refused with a reason.
    #[test]
    fn incomplete_flags_are_refused() {
        let message = || vec!["x".to_string()];
        let bad = [
            ScriptFlags::default(),
            ScriptFlags { messages: message(), ..Default::default() },
            ScriptFlags {
                messages: message(),
                expect: message(),
                marker: Some("x".into()),
                ..Default::default()
            },
            ScriptFlags {
                messages: vec!["a".into(), "b".into(), "c".into()],
                expect: vec!["a".into(), "b".into()],
                ..Default::default()
            },
            ScriptFlags { messages: message(), expect: message(), http: true, ..Default::default() },
            ScriptFlags {
                messages: message(),
                expect: message(),
                first_expect: Some("ok".into()),
                ..Default::default()
            },
        ];
        for flags in bad {
            assert!(flags.script().is_err(), "{flags:?}");
        }
    }

    /// Every preset is a valid script, and its flags make the same script again.
    #[test]
    fn presets_are_flags() {
        for name in PRESET_NAMES {
            let preset = Preset::parse(name, None).unwrap();
            let script = preset.flags("127.0.0.1:80").script().unwrap();
            let args = script.to_args();
            let mut again = ScriptFlags::default();
            for pair in args.chunks(2) {
                let value = pair.get(1).cloned().unwrap_or_default();
                match pair[0].as_str() {
                    "--message" => again.messages.push(value),
                    "--expect" => again.expect.push(value),
                    "--expect-prefix" => again.expect_prefix.push(value),
                    "--first-message" => again.first = Some(value),
                    "--first-expect" => again.first_expect = Some(value),
                    "--framing" => again.http = true,
                    other => panic!("unexpected flag {other}"),
                }
            }
            assert_eq!(again.script().unwrap(), script, "{name}");
        }
        assert!(Preset::parse("http-get", Some("no-slash")).is_err());
        assert!(Preset::parse("redis-ping", Some("/")).is_err());
        assert!(Preset::parse("mysql", None).is_err());
    }

    /// An HTTP response is cut after its head and Content-Length body, not before.
    #[test]
    fn http_responses_are_cut_by_content_length() {
        let response = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1";
        let whole = response.len() - b"HTTP/1.1".len();
        assert_eq!(http_response_len(response, 1 << 20), Ok(Some(whole)));
        for cut in 0..whole {
            assert_eq!(http_response_len(&response[..cut], 1 << 20), Ok(None), "cut at {cut}");
        }
        assert!(
            http_response_len(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 1 << 20).is_err()
        );
        assert!(http_response_len(b"SSH-2.0-OpenSSH\r\n\r\n", 1 << 20).is_err());
        assert_eq!(http_response_len(b"HTTP/1.1 204 No Content\r\n\r\n", 1 << 20), Ok(Some(27)));
    }

    /// A marker is counted once wherever the reads cut the stream.
    #[test]
    fn markers_are_found_across_reads() {
        let stream = b"xxENDyyENDENDzEN".repeat(3);
        let whole = MarkerScan::default().count(b"END", &stream);
        assert_eq!(whole, 9);
        for piece in 1..stream.len() {
            let mut scan = MarkerScan::default();
            let seen: usize = stream.chunks(piece).map(|chunk| scan.count(b"END", chunk)).sum();
            assert_eq!(seen, whole, "pieces of {piece}");
        }
    }
}
