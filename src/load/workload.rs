//! What the loader sends, and the exact reply it expects: one module per question, pure.
//!
//! Every request is derived from (connection id, sequence number), so the expected reply can
//! be rebuilt when the reply arrives instead of being stored: memory stays flat however many
//! messages are in flight, and every byte of every reply is still checked.

use std::fmt;
use std::io::Write as _;
use std::str::FromStr;

/// The smallest `--size` for workloads whose payload starts with a header: the header
/// (connection and sequence in hex) must fit.
pub const MIN_SIZE: usize = 32;

/// The payload a broadcast sync message carries (see `engine.rs`): never a real message,
/// which always starts with a hex header.
pub const SYNC: &[u8] = b"sync";

/// Which handler's traffic to generate and check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Replies must equal requests.
    Echo,
    /// Requests mix ASCII and non-ASCII letters; replies must be their full uppercasing.
    Uppercase,
    /// Requests are random integer lists; replies must be their sums.
    Sum,
    /// Each message must reach every other connection, as `<sender-addr>: <message>`.
    Broadcast,
    /// `GET` each file of `--files` in turn from a `file` listener; every byte must match
    /// (CRC-32 against the file).
    File,
    /// The requests and replies given on the command line (`-m`, `--expect`...; see
    /// `script.rs`): any server's protocol.
    Generic,
}

impl FromStr for Workload {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "echo" => Ok(Workload::Echo),
            "uppercase" => Ok(Workload::Uppercase),
            "sum" => Ok(Workload::Sum),
            "broadcast" => Ok(Workload::Broadcast),
            "file" => Ok(Workload::File),
            "generic" => Ok(Workload::Generic),
            _ => Err(format!(
                "unknown workload '{text}': expected echo, uppercase, sum, broadcast, file or generic"
            )),
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Workload::Echo => "echo",
            Workload::Uppercase => "uppercase",
            Workload::Sum => "sum",
            Workload::Broadcast => "broadcast",
            Workload::File => "file",
            Workload::Generic => "generic",
        })
    }
}

/// Letters for `uppercase` payloads: ASCII and non-ASCII, including `ß` (which becomes `SS`)
/// so a server that only uppercases ASCII, or maps one character to one, is caught.
const MIXED_LETTERS: &[char] = &[
    'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', 'p', 'q', 'r', 's', 't', 'u',
    'v', 'w', 'x', 'y', 'z', 'ß', 'ä', 'ö', 'ü', 'é', 'ñ', 'ø', 'å', 'λ', 'ж', 'я', 'œ',
];

/// Filler for payloads that need no particular letters.
const PLAIN_LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

impl Workload {
    /// Appends the payload (no framing) of request `seq` of connection `conn` to `out`.
    /// Not for broadcast, whose messages carry times (see `broadcast_message`), for file,
    /// whose requests name files (see `catalogue.rs`), nor generic (see `script.rs`).
    pub fn request(self, conn: u32, seq: u64, size: usize, out: &mut Vec<u8>) {
        let end = out.len() + size;
        match self {
            Workload::File | Workload::Generic => {}
            Workload::Echo | Workload::Broadcast => {
                push_header(out, &[u64::from(conn), seq]);
                plain_filler(out, (conn as usize) ^ (seq as usize), end);
            }
            Workload::Uppercase => {
                push_header(out, &[u64::from(conn), seq]);
                let mut index = (conn as usize) ^ (seq as usize);
                let mut utf8 = [0; 4];
                loop {
                    let letter = MIXED_LETTERS[index % MIXED_LETTERS.len()];
                    if out.len() + letter.len_utf8() > end {
                        break;
                    }
                    out.extend_from_slice(letter.encode_utf8(&mut utf8).as_bytes());
                    index += 1;
                }
                out.resize(end.max(out.len()), b'a');
            }
            Workload::Sum => {
                let (numbers, _) = sum_terms(conn, seq, size);
                for (index, number) in numbers.enumerate() {
                    if index > 0 {
                        out.extend_from_slice([&b","[..], b", ", b" "][index % 3]);
                    }
                    let _ = write!(out, "{number}");
                }
            }
        }
    }

    /// Whether `reply` is the reply expected for request `seq` of connection `conn`. An echo
    /// reply is checked in place, its header read and its filler compared, with nothing
    /// built: this runs for every reply. Other workloads build the expected reply in
    /// `scratch`.
    pub fn reply_matches(
        self,
        conn: u32,
        seq: u64,
        size: usize,
        reply: &[u8],
        scratch: &mut Vec<u8>,
    ) -> bool {
        if self == Workload::Echo {
            let mut rest = reply;
            let header_matches =
                take_hex(&mut rest) == Some(u64::from(conn)) && take_hex(&mut rest) == Some(seq);
            let header = reply.len() - rest.len();
            let filler_start = (conn as usize) ^ (seq as usize);
            return header_matches && reply.len() == size.max(header) && is_plain_filler(rest, filler_start);
        }
        scratch.clear();
        self.expected_reply(conn, seq, size, scratch);
        reply == scratch.as_slice()
    }

    /// Writes the reply expected for request `seq` of connection `conn` into `out`.
    pub fn expected_reply(self, conn: u32, seq: u64, size: usize, out: &mut Vec<u8>) {
        match self {
            Workload::File | Workload::Generic => {}
            Workload::Echo | Workload::Broadcast => self.request(conn, seq, size, out),
            Workload::Uppercase => {
                let start = out.len();
                self.request(conn, seq, size, out);
                let upper = String::from_utf8_lossy(&out[start..]).to_uppercase();
                out.truncate(start);
                out.extend_from_slice(upper.as_bytes());
            }
            Workload::Sum => {
                let (_, total) = sum_terms(conn, seq, size);
                let _ = write!(out, "{total}");
            }
        }
    }
}

/// The integers of a `sum` request and their total: about one per 8 bytes of `size`, each
/// within ±999,999, so no sum can overflow.
fn sum_terms(conn: u32, seq: u64, size: usize) -> (impl Iterator<Item = i64>, i64) {
    let count = (size / 8).max(1);
    let seed = (u64::from(conn) << 40) ^ seq;
    let numbers =
        (0..count as u64).map(move |index| (splitmix64(seed ^ (index << 20)) % 1_999_999) as i64 - 999_999);
    let total = numbers.clone().sum();
    (numbers, total)
}

/// A small, well-mixed hash (splitmix64): reproducible pseudo-random numbers from a seed.
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Appends filler from [`PLAIN_LETTERS`], starting at `start` in the alphabet, until `out`
/// is `size` bytes long. Copies slices of the alphabet written out twice, so that a filler
/// shorter than the alphabet (the usual case) is one copy: the loader builds every request
/// it sends, so this is on its hot path.
fn plain_filler(out: &mut Vec<u8>, start: usize, size: usize) {
    let mut index = start % PLAIN_LETTERS.len();
    while out.len() < size {
        let take = (size - out.len()).min(PLAIN_LETTERS.len());
        out.extend_from_slice(&PLAIN_LETTERS_TWICE[index..index + take]);
        index = (index + take) % PLAIN_LETTERS.len();
    }
}

/// Whether `bytes` is the filler [`plain_filler`] writes from `start`: compared in place,
/// slice by slice, with nothing built.
fn is_plain_filler(mut bytes: &[u8], start: usize) -> bool {
    let mut index = start % PLAIN_LETTERS.len();
    while !bytes.is_empty() {
        let take = bytes.len().min(PLAIN_LETTERS.len());
        if bytes[..take] != PLAIN_LETTERS_TWICE[index..index + take] {
            return false;
        }
        bytes = &bytes[take..];
        index = (index + take) % PLAIN_LETTERS.len();
    }
    true
}

/// [`PLAIN_LETTERS`] twice: any stretch of it, from any start, is one slice.
const PLAIN_LETTERS_TWICE: [u8; 2 * PLAIN_LETTERS.len()] = {
    let mut twice = [0u8; 2 * PLAIN_LETTERS.len()];
    let mut index = 0;
    while index < twice.len() {
        twice[index] = PLAIN_LETTERS[index % PLAIN_LETTERS.len()];
        index += 1;
    }
    twice
};

/// Appends each value in lower-case hex followed by a `.`: the header that makes every
/// request unique and lets a reply be traced back to its request.
fn push_header(out: &mut Vec<u8>, values: &[u64]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &value in values {
        let digits = (u64::BITS - value.leading_zeros()).div_ceil(4).max(1);
        out.reserve(digits as usize + 1);
        for digit in (0..digits).rev() {
            out.push(HEX[((value >> (digit * 4)) & 0xf) as usize]);
        }
        out.push(b'.');
    }
}

/// A broadcast message: sender, sequence, and the times it was scheduled and sent, in hex,
/// then filler to `size`. The times travel with the message so any receiving connection, in
/// any loader thread, can measure its delivery latency; they are written as the schedule
/// since `epoch_ns` (the run's start, which every thread knows) and the lateness of the send
/// after it, a dozen hex digits rather than thirty: every delivery reads them.
pub fn broadcast_message(
    sender: u32,
    seq: u64,
    (intended_ns, sent_ns, epoch_ns): (u64, u64, u64),
    size: usize,
    out: &mut Vec<u8>,
) {
    let start = out.len();
    let (scheduled, lateness) = (intended_ns.saturating_sub(epoch_ns), sent_ns.saturating_sub(intended_ns));
    push_header(out, &[u64::from(sender), seq, scheduled, lateness]);
    plain_filler(out, (sender as usize) ^ (seq as usize), start + size);
}

/// A verified broadcast delivery.
#[derive(Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The sending connection.
    pub sender: u32,
    /// Its sequence number among that sender's messages.
    pub seq: u64,
    /// When it was scheduled to be sent.
    pub intended_ns: u64,
    /// When it was sent.
    pub sent_ns: u64,
}

/// Checks a line a broadcast receiver got: `<sender-addr>: <message>`, where the address
/// must be the sender's (`sender_addr(sender)`) and the message exactly what that sender
/// sent. `None` for anything else.
///
/// It reads the header and compares the rest with the filler in place, rather than
/// rebuilding the message: this runs once per delivery, and the loader must stay cheaper per
/// message than the server it measures.
pub fn verify_broadcast<'a>(
    line: &[u8],
    size: usize,
    epoch_ns: u64,
    sender_addr: impl Fn(u32) -> Option<&'a str>,
) -> Option<Delivery> {
    // The address has no spaces; the message follows its ": ".
    let space = memchr::memchr(b' ', line)?;
    let addr = line[..space].strip_suffix(b":")?;
    let message = &line[space + 1..];
    let mut rest = message;
    let sender = u32::try_from(take_hex(&mut rest)?).ok()?;
    let (seq, scheduled, lateness) = (take_hex(&mut rest)?, take_hex(&mut rest)?, take_hex(&mut rest)?);
    let intended_ns = epoch_ns.saturating_add(scheduled);
    let sent_ns = intended_ns.saturating_add(lateness);
    // Unix clients have no address the loader could know (the server numbers them by
    // accept order, `unix#3`): for them the name is empty and only the message is checked.
    let expected_addr = sender_addr(sender)?;
    if !expected_addr.is_empty() && expected_addr.as_bytes() != addr {
        return None;
    }
    let header = message.len() - rest.len();
    let filler_start = (sender as usize) ^ (seq as usize);
    (message.len() == size.max(header) && is_plain_filler(rest, filler_start)).then_some(Delivery {
        sender,
        seq,
        intended_ns,
        sent_ns,
    })
}

/// Takes one header field from the front of `input`: lower-case hex as [`push_header`]
/// writes it (1 to 16 digits, no leading zeros), then a `.`. One pass with a table, as this
/// runs several times per reply.
fn take_hex(input: &mut &[u8]) -> Option<u64> {
    let bytes = *input;
    let mut value = 0u64;
    let mut digits = 0;
    while let Some(&nibble) = bytes.get(digits).map(|&byte| &HEX_VALUES[byte as usize]) {
        if nibble > 15 || digits == 16 {
            break;
        }
        value = (value << 4) | u64::from(nibble);
        digits += 1;
    }
    let canonical = digits == 1 || (digits > 1 && bytes[0] != b'0');
    if !canonical || bytes.get(digits) != Some(&b'.') {
        return None;
    }
    *input = &bytes[digits + 1..];
    Some(value)
}

/// The value of each lower-case hex digit; 255 for every other byte.
const HEX_VALUES: [u8; 256] = {
    let mut values = [255u8; 256];
    let mut digit = 0;
    while digit < 16 {
        values[b"0123456789abcdef"[digit] as usize] = digit as u8;
        digit += 1;
    }
    values
};

#[cfg(test)]
mod tests {
    use super::*;

    fn request(workload: Workload, conn: u32, seq: u64, size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        workload.request(conn, seq, size, &mut out);
        out
    }

    fn expected(workload: Workload, conn: u32, seq: u64, size: usize) -> String {
        let mut out = Vec::new();
        workload.expected_reply(conn, seq, size, &mut out);
        String::from_utf8(out).unwrap()
    }

    /// Headers are the values in hex, each followed by a dot.
    #[test]
    fn headers_are_hex() {
        let mut out = Vec::new();
        push_header(&mut out, &[0, 15, 16, u64::MAX]);
        assert_eq!(out, b"0.f.10.ffffffffffffffff.");
    }

    /// The filler is the alphabet over and over from its start, and checks as such.
    #[test]
    fn filler_cycles_through_the_alphabet() {
        for start in [0, 1, 61, 62, 100] {
            for size in [0, 1, 61, 62, 63, 200] {
                let mut out = b"head".to_vec();
                plain_filler(&mut out, start, 4 + size);
                let cycle: Vec<u8> =
                    (0..size).map(|i| PLAIN_LETTERS[(start + i) % PLAIN_LETTERS.len()]).collect();
                assert_eq!(&out[4..], cycle.as_slice(), "start {start} size {size}");
                assert!(is_plain_filler(&out[4..], start));
                assert!(size == 0 || !is_plain_filler(&out[4..], start + 1));
            }
        }
    }

    /// Echo and uppercase requests are exactly --size bytes, distinct, and line-safe.
    #[test]
    fn requests_have_the_asked_size() {
        for workload in [Workload::Echo, Workload::Uppercase] {
            for size in [32, 64, 100, 1000] {
                let one = request(workload, 7, 3, size);
                assert_eq!(one.len(), size, "{workload} {size}");
                assert!(!one.contains(&b'\n') && !one.contains(&b'\r'));
                assert_ne!(one, request(workload, 7, 4, size));
            }
        }
    }

    /// Uppercase payloads include non-ASCII letters, and the expected reply is the full
    /// Unicode uppercasing.
    #[test]
    fn uppercase_expects_full_unicode_uppercasing() {
        let payload = String::from_utf8(request(Workload::Uppercase, 1, 0, 200)).unwrap();
        assert!(payload.contains('ß') && !payload.is_ascii());
        assert_eq!(expected(Workload::Uppercase, 1, 0, 200), payload.to_uppercase());
    }

    /// Sum requests parse back to the expected total with evloop's own sum.
    #[test]
    fn sum_expects_the_sum() {
        for seq in 0..50 {
            let payload = request(Workload::Sum, 3, seq, 64);
            let total = crate::handlers::sum(&payload).unwrap();
            assert_eq!(expected(Workload::Sum, 3, seq, 64), total.to_string());
        }
    }

    /// A broadcast line verifies only with the right sender address and exact message.
    #[test]
    fn broadcast_lines_verify() {
        let mut message = Vec::new();
        broadcast_message(5, 9, (1000, 1200, 100), 64, &mut message);
        assert_eq!(message.len(), 64);
        let addrs = |sender: u32| (sender == 5).then_some("127.0.0.1:4000");
        let mut line = b"127.0.0.1:4000: ".to_vec();
        line.extend_from_slice(&message);
        assert_eq!(
            verify_broadcast(&line, 64, 100, addrs),
            Some(Delivery { sender: 5, seq: 9, intended_ns: 1000, sent_ns: 1200 })
        );
        let mut wrong_addr = b"127.0.0.1:4001: ".to_vec();
        wrong_addr.extend_from_slice(&message);
        assert_eq!(verify_broadcast(&wrong_addr, 64, 100, addrs), None);
        assert_eq!(verify_broadcast(b"127.0.0.1:4000: sync", 64, 100, addrs), None);
        // Any byte changed, dropped or added is caught, except in the two times, which
        // the receiver has nothing to check against (it measures with them).
        let times = "127.0.0.1:4000: 5.9.".len().."127.0.0.1:4000: 5.9.384.c8".len();
        for at in 0..line.len() {
            let mut damaged = line.clone();
            damaged[at] ^= 1;
            if !times.contains(&at) {
                assert_eq!(verify_broadcast(&damaged, 64, 100, addrs), None, "byte {at} changed");
            }
            let mut short = line.clone();
            short.remove(at);
            assert_eq!(verify_broadcast(&short, 64, 100, addrs), None, "byte {at} dropped");
        }
        let mut long = line.clone();
        long.push(b'x');
        assert_eq!(verify_broadcast(&long, 64, 100, addrs), None);
        // A header with a leading zero is not what was sent.
        let mut padded = b"127.0.0.1:4000: 05".to_vec();
        padded.extend_from_slice(&message[1..]);
        assert_eq!(verify_broadcast(&padded, 65, 100, addrs), None);
        // A header longer than --size: the message is the header alone.
        let mut long_header = Vec::new();
        broadcast_message(5, u64::MAX, (u64::MAX, u64::MAX, 0), 32, &mut long_header);
        let mut line = b"127.0.0.1:4000: ".to_vec();
        line.extend_from_slice(&long_header);
        assert!(long_header.len() > 32 && verify_broadcast(&line, 32, 0, addrs).is_some());
    }

    /// An echo reply matches only the exact request, checked in place; other workloads'
    /// replies are checked against the reply built in full.
    #[test]
    fn replies_match_only_what_is_expected() {
        let mut scratch = Vec::new();
        for (workload, size) in
            [(Workload::Echo, 64), (Workload::Echo, 32), (Workload::Uppercase, 64), (Workload::Sum, 64)]
        {
            let reply = expected(workload, 7, 300, size).into_bytes();
            assert!(workload.reply_matches(7, 300, size, &reply, &mut scratch), "{workload}");
            assert!(!workload.reply_matches(7, 301, size, &reply, &mut scratch), "{workload}");
            for at in 0..reply.len() {
                let mut damaged = reply.clone();
                damaged[at] ^= 1;
                assert!(
                    !workload.reply_matches(7, 300, size, &damaged, &mut scratch),
                    "{workload} byte {at}"
                );
            }
            assert!(!workload.reply_matches(7, 300, size, &reply[1..], &mut scratch), "{workload}");
        }
    }
}
