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
            _ => Err(format!("unknown workload '{text}': expected echo, uppercase, sum, broadcast or file")),
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
    /// Writes the payload (no framing) of request `seq` of connection `conn` into `out`.
    /// Not for broadcast, whose messages carry times (see `broadcast_message`), nor for file,
    /// whose requests name files (see `catalogue.rs`).
    pub fn request(self, conn: u32, seq: u64, size: usize, out: &mut Vec<u8>) {
        match self {
            Workload::File => {}
            Workload::Echo | Workload::Broadcast => {
                push_header(out, &[u64::from(conn), seq]);
                plain_filler(out, (conn as usize) ^ (seq as usize), size);
            }
            Workload::Uppercase => {
                push_header(out, &[u64::from(conn), seq]);
                let mut index = (conn as usize) ^ (seq as usize);
                let mut utf8 = [0; 4];
                loop {
                    let letter = MIXED_LETTERS[index % MIXED_LETTERS.len()];
                    if out.len() + letter.len_utf8() > size {
                        break;
                    }
                    out.extend_from_slice(letter.encode_utf8(&mut utf8).as_bytes());
                    index += 1;
                }
                out.resize(size.max(out.len()), b'a');
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

    /// Writes the reply expected for request `seq` of connection `conn` into `out`.
    pub fn expected_reply(self, conn: u32, seq: u64, size: usize, out: &mut Vec<u8>) {
        match self {
            Workload::File => {}
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
/// is `size` bytes long. Copies slices: the loader builds every request twice (to send it and
/// to check its reply), so this is on its hot path.
fn plain_filler(out: &mut Vec<u8>, start: usize, size: usize) {
    let mut index = start % PLAIN_LETTERS.len();
    while out.len() < size {
        let take = (size - out.len()).min(PLAIN_LETTERS.len() - index);
        out.extend_from_slice(&PLAIN_LETTERS[index..index + take]);
        index = 0;
    }
}

/// Appends each value in lower-case hex followed by a `.`: the header that makes every
/// request unique and lets a reply be traced back to its request.
fn push_header(out: &mut Vec<u8>, values: &[u64]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &value in values {
        let digits = ((u64::BITS - value.leading_zeros()).div_ceil(4)).max(1);
        for digit in (0..digits).rev() {
            out.push(HEX[((value >> (digit * 4)) & 0xf) as usize]);
        }
        out.push(b'.');
    }
}

/// A broadcast message: sender, sequence, scheduled and actual send times (nanoseconds on
/// the monotonic clock) in hex, then filler to `size`. The times travel with the message so
/// any receiving connection, in any loader thread, can measure its delivery latency.
pub fn broadcast_message(
    sender: u32,
    seq: u64,
    intended_ns: u64,
    sent_ns: u64,
    size: usize,
    out: &mut Vec<u8>,
) {
    let start = out.len();
    push_header(out, &[u64::from(sender), seq, intended_ns, sent_ns]);
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
pub fn verify_broadcast<'a>(
    line: &[u8],
    size: usize,
    sender_addr: impl Fn(u32) -> Option<&'a str>,
    scratch: &mut Vec<u8>,
) -> Option<Delivery> {
    let split = line.windows(2).position(|pair| pair == b": ")?;
    let (addr, message) = (&line[..split], &line[split + 2..]);
    let mut fields = message.split(|&byte| byte == b'.');
    let mut hex =
        || -> Option<u64> { u64::from_str_radix(std::str::from_utf8(fields.next()?).ok()?, 16).ok() };
    let (sender, seq, intended_ns, sent_ns) = (u32::try_from(hex()?).ok()?, hex()?, hex()?, hex()?);
    // Unix clients have no address the loader could know (the server numbers them by
    // accept order, `unix#3`): for them the name is empty and only the message is checked.
    let expected_addr = sender_addr(sender)?;
    if !expected_addr.is_empty() && expected_addr.as_bytes() != addr {
        return None;
    }
    scratch.clear();
    broadcast_message(sender, seq, intended_ns, sent_ns, size, scratch);
    (scratch.as_slice() == message).then_some(Delivery { sender, seq, intended_ns, sent_ns })
}

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
        broadcast_message(5, 9, 1000, 1200, 64, &mut message);
        assert_eq!(message.len(), 64);
        let addrs = |sender: u32| (sender == 5).then_some("127.0.0.1:4000");
        let mut line = b"127.0.0.1:4000: ".to_vec();
        line.extend_from_slice(&message);
        let mut scratch = Vec::new();
        assert_eq!(
            verify_broadcast(&line, 64, addrs, &mut scratch),
            Some(Delivery { sender: 5, seq: 9, intended_ns: 1000, sent_ns: 1200 })
        );
        let mut wrong_addr = b"127.0.0.1:4001: ".to_vec();
        wrong_addr.extend_from_slice(&message);
        assert_eq!(verify_broadcast(&wrong_addr, 64, addrs, &mut scratch), None);
        let mut damaged = line.clone();
        *damaged.last_mut().unwrap() ^= 1;
        assert_eq!(verify_broadcast(&damaged, 64, addrs, &mut scratch), None);
        assert_eq!(verify_broadcast(b"127.0.0.1:4000: sync", 64, addrs, &mut scratch), None);
    }
}
