//! The properties the fuzz targets check (`fuzz/`, `scripts/fuzz`), one function per parser
//! that meets bytes from outside. Each takes the fuzzer's bytes and panics when a property
//! fails, so a finding is a crash: not only "no panic inside the parser", but the same
//! messages whatever the split of the input, nothing consumed that was not there, no answer
//! that depends on how the bytes arrived, and a path never outside the served directory.
//!
//! They live in the library (feature `fuzzing`, hidden from the docs) so the fuzz crate can
//! reach parsers that are not public, and so `cargo test` runs every committed corpus file
//! (`fuzz/corpus/TARGET/`) through the same checks on stable: each crash found becomes a file
//! there, and a regression test by being there.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::backplane::{nats, resp};
use crate::codec::test_support::decode_in_pieces;
use crate::codec::ws::{Options, WsSession};
use crate::codec::{Codec, Event, Session, SessionEvents};
use crate::handlers::{ConnId, Handler, Intent, Outbox, Peer};
use crate::preamble;
use crate::sys::address::PeerAddr;

/// Frame limit used by the targets: small, so the fuzzer reaches the "too long" paths.
const MAX_FRAME: usize = 256;

/// Up to 4 cut points taken from the front of `data`, and the rest: the stream.
fn cuts_and_stream(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let count = usize::from(data.first().copied().unwrap_or(0) % 5);
    let data = data.get(1..).unwrap_or_default();
    let taken = (count * 2).min(data.len());
    let cuts = data[..taken]
        .chunks(2)
        .map(|pair| usize::from(u16::from_le_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .collect();
    (cuts, &data[taken..])
}

/// The line, length, fixed:N and raw decoders: every message within the frame limit, and
/// (but for raw, whose messages are its reads by design) the same messages and errors
/// whatever the split of the stream into reads.
pub fn decoders(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else { return };
    let codec = match selector % 4 {
        0 => Codec::Line,
        1 => Codec::Length,
        2 => Codec::Fixed(u32::from(selector / 4 % 16) + 1),
        _ => Codec::Raw,
    };
    let (cuts, stream) = cuts_and_stream(rest);
    let whole = decode_in_pieces(codec, stream, &[], MAX_FRAME);
    let split = decode_in_pieces(codec, stream, &cuts, MAX_FRAME);
    for message in whole.iter().chain(&split).flatten() {
        assert!(message.len() <= MAX_FRAME, "{codec:?}: a message of {} bytes", message.len());
    }
    if codec != Codec::Raw {
        assert_eq!(whole, split, "{codec:?}: the split {cuts:?} changed the messages");
    }
}

/// The PROXY v1/v2 header: a header found takes no more than the input and is found the
/// same in exactly its own bytes; every shorter prefix asks for more; bytes after a refused
/// header do not make it acceptable.
pub fn proxy(data: &[u8]) {
    match preamble::parse(data) {
        Ok(Some(header)) => {
            assert!(header.length > 0 && header.length <= data.len(), "{header:?} from {} bytes", data.len());
            assert_eq!(preamble::parse(&data[..header.length]), Ok(Some(header)));
            for end in 0..header.length {
                assert_eq!(preamble::parse(&data[..end]), Ok(None), "a prefix of {end} bytes");
            }
        }
        Ok(None) => {}
        Err(refused) => {
            let mut longer = data.to_vec();
            longer.extend_from_slice(b"\r\n\r\nPROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n");
            assert!(preamble::parse(&longer).is_err(), "refused ({refused:?}) until more bytes came");
        }
    }
}

/// RESP from a Redis that may be hostile: a frame takes no more than the input, is the same
/// parsed from exactly its bytes, and every shorter prefix asks for more.
pub fn resp(data: &[u8]) {
    if let Ok(Some((frame, used))) = resp::parse(data, MAX_FRAME) {
        assert!(used > 0 && used <= data.len(), "used {used} of {}", data.len());
        assert_eq!(resp::parse(&data[..used], MAX_FRAME), Ok(Some((frame, used))));
        for end in 0..used {
            assert_eq!(resp::parse(&data[..end], MAX_FRAME), Ok(None), "a prefix of {end} bytes");
        }
    }
}

/// NATS server operations from a server that may be hostile: as for RESP; and the addresses
/// an `INFO` announces (`connect_urls`) are bounded in number and each a piece of the input.
pub fn nats(data: &[u8]) {
    if let Ok(Some((op, used))) = nats::parse(data, MAX_FRAME) {
        if let nats::ServerOp::Info(info) = op {
            let urls = nats::connect_urls(info, 4);
            assert!(urls.len() <= 4);
            for url in urls {
                assert!(memchr::memmem::find(info, url.as_bytes()).is_some(), "{url:?} is not from the INFO");
            }
        }
        assert!(used > 0 && used <= data.len(), "used {used} of {}", data.len());
        assert_eq!(nats::parse(&data[..used], MAX_FRAME), Ok(Some((op, used))));
        for end in 0..used {
            assert_eq!(nats::parse(&data[..end], MAX_FRAME), Ok(None), "a prefix of {end} bytes");
        }
    }
}

/// What a session reported, with the bytes its events refer to copied out.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Ready,
    Message(Vec<u8>, bool),
    Send(Vec<u8>),
    Close(&'static str),
}

/// Feeds `stream` to a fresh WebSocket session in reads cut at `cuts`, presenting what it
/// did not consume again before the next read, as the reactor does. Stops at its close.
fn feed_session(options: &Arc<Options>, stream: &[u8], cuts: &[usize]) -> (Vec<Seen>, usize) {
    let mut session = WsSession::new(Arc::clone(options));
    let mut events = SessionEvents::default();
    let mut seen = Vec::new();
    let mut ends: Vec<usize> = cuts.iter().map(|&cut| cut.min(stream.len())).collect();
    ends.sort_unstable();
    ends.push(stream.len());
    let (mut start, mut pending) = (0, Vec::new());
    let mut kept = 0;
    for end in ends {
        if end <= start {
            continue;
        }
        pending.extend_from_slice(&stream[start..end]);
        start = end;
        events.clear();
        let used = session.receive(&pending, MAX_FRAME, &mut events);
        assert!(used <= pending.len(), "consumed {used} of {}", pending.len());
        for event in events.events() {
            seen.push(match event {
                Event::Ready => Seen::Ready,
                Event::Message { bytes, binary } => {
                    Seen::Message(events.bytes(bytes.clone()).to_vec(), *binary)
                }
                Event::Send(bytes) => Seen::Send(events.bytes(bytes.clone()).to_vec()),
                Event::Close { reason } => Seen::Close(reason),
            });
        }
        pending.drain(..used);
        kept = kept.max(pending.len());
        if seen.iter().any(|event| matches!(event, Seen::Close(_))) {
            break;
        }
    }
    (seen, kept)
}

/// The WebSocket opening handshake (HTTP, through httparse) and frames: the same events
/// (answers, messages, pongs, closes, in order) whatever the split of the input; every message
/// within the frame limit; what the session leaves unconsumed bounded (a request head, or a
/// frame's header and the frame limit).
pub fn websocket(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else { return };
    let options = Arc::new(Options { deflate: selector & 1 == 1, ..Options::default() });
    let (cuts, body) = cuts_and_stream(rest);
    // Half the time a valid opening request first, so the fuzzer spends its time on frames.
    let mut stream = Vec::new();
    if selector & 2 == 2 {
        stream.extend_from_slice(
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
        );
        if selector & 1 == 1 {
            stream.extend_from_slice(b"Sec-WebSocket-Extensions: permessage-deflate\r\n");
        }
        stream.extend_from_slice(b"\r\n");
    }
    stream.extend_from_slice(body);
    let (whole, _) = feed_session(&options, &stream, &[]);
    let (split, kept) = feed_session(&options, &stream, &cuts);
    assert_eq!(whole, split, "the split {cuts:?} changed what the session did");
    for event in &whole {
        if let Seen::Message(message, _) = event {
            assert!(message.len() <= MAX_FRAME, "a message of {} bytes", message.len());
        }
    }
    assert!(kept <= 16 * 1024 + MAX_FRAME + 14, "{kept} bytes left unconsumed");
}

/// The metrics listener's HTTP request: the same answer whatever the split of the request
/// into reads (the handler keeps what has come of the head), and a close after it.
pub fn metrics_request(data: &[u8]) {
    let (cuts, request) = cuts_and_stream(data);
    let answer = |cuts: &[usize]| {
        let mut handler = crate::handlers::Metrics::default();
        let addr = PeerAddr::Tcp(([127, 0, 0, 1], 1).into());
        let mut ends: Vec<usize> = cuts.iter().map(|&cut| cut.min(request.len())).collect();
        ends.sort_unstable();
        ends.push(request.len());
        let mut start = 0;
        for end in ends {
            if end <= start {
                continue;
            }
            let mut out = Outbox::default();
            handler.on_message(Peer { id: ConnId(1), addr: &addr }, &request[start..end], &mut out);
            start = end;
            if !out.intents().is_empty() {
                let said: Vec<String> =
                    out.iter().map(|(intent, payload)| format!("{intent:?} {payload:?}")).collect();
                assert!(matches!(out.intents().last(), Some(Intent::Close)), "{said:?}");
                return Some(said);
            }
        }
        None
    };
    assert_eq!(answer(&[]), answer(&cuts), "the split {cuts:?} changed the answer");
}

/// The directory the file target serves: a file, a subdirectory, and links leading out of it.
/// One directory for every process (the fuzzer's jobs, the test runs), made once and never
/// removed, so no run leaves one behind: it is built aside and renamed into place, and a
/// process that finds it there (or loses the race) uses the one there.
fn file_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = std::env::temp_dir().join("evloop-fuzz-files");
        let outside = root.with_extension("outside");
        if !outside.exists() {
            let aside = outside.with_extension(format!("outside.{}", std::process::id()));
            std::fs::write(&aside, b"secret").expect("write the file outside");
            std::fs::rename(&aside, &outside).expect("put the file outside in place");
        }
        if !root.exists() {
            let aside = root.with_extension(format!("{}", std::process::id()));
            std::fs::create_dir_all(aside.join("sub")).expect("make the fuzz directory");
            std::fs::write(aside.join("a.txt"), b"hello").expect("write a file");
            std::fs::write(aside.join("sub/b.txt"), b"world").expect("write a file");
            std::os::unix::fs::symlink(&outside, aside.join("out")).expect("a link out");
            std::os::unix::fs::symlink("..", aside.join("sub/up")).expect("a link up");
            if std::fs::rename(&aside, &root).is_err() {
                // Another process put its own in place first: the same, so use that one.
                let _ = std::fs::remove_dir_all(&aside);
            }
        }
        std::fs::canonicalize(&root).expect("the fuzz directory")
    })
}

/// The file handler's request and path confinement: whatever the request, a file it sends is
/// a regular file inside the served directory, and it sends no more than the file holds.
pub fn file_request(data: &[u8]) {
    let root = file_root();
    let mut handler = crate::handlers::FileServer::new(root).expect("serve the fuzz directory");
    let addr = PeerAddr::Tcp(([127, 0, 0, 1], 1).into());
    let mut out = Outbox::default();
    handler.on_message(Peer { id: ConnId(1), addr: &addr }, data, &mut out);
    for intent in out.intents() {
        if let Intent::SendFile { path, offset, length } = intent {
            let real = std::fs::canonicalize(path).expect("a file it sends exists");
            assert!(real.starts_with(root), "{} is outside {}", real.display(), root.display());
            let size = std::fs::metadata(&real).expect("metadata").len();
            assert!(offset + length <= size, "{offset} + {length} past the end of {size}");
        }
    }
}

/// A target's checks: the fuzzer's bytes in, a panic on a failed property.
pub type Check = fn(&[u8]);

/// Every target, by the name of its corpus directory and fuzz target.
pub const TARGETS: [(&str, Check); 7] = [
    ("decoders", decoders),
    ("proxy", proxy),
    ("resp", resp),
    ("nats", nats),
    ("websocket", websocket),
    ("metrics_request", metrics_request),
    ("file_request", file_request),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Every committed corpus file (seeds, and every crash ever found, kept as a regression
    /// test) passes its target's checks.
    #[test]
    fn every_corpus_file_passes_its_checks() {
        let corpora = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        for (name, check) in TARGETS {
            let dir = corpora.join(name);
            let files: Vec<_> = std::fs::read_dir(&dir)
                .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
                .map(|entry| entry.unwrap().path())
                .collect();
            assert!(!files.is_empty(), "{name}: no seeds in {}", dir.display());
            for file in files {
                // A fuzzer running beside the tests replaces its own finds as it shrinks them.
                let Ok(data) = std::fs::read(&file) else { continue };
                if let Err(panic) = std::panic::catch_unwind(|| check(&data)) {
                    let why = panic
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| panic.downcast_ref::<&str>().copied())
                        .unwrap_or("a panic");
                    panic!("{name}: {} fails: {why}", file.display());
                }
            }
        }
    }
}
