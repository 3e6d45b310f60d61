//! What the workloads' payloads are made of: a header of hex numbers, each followed by a
//! `.`, that makes every request unique and lets a reply be traced back to its request, and
//! filler from an alphabet, compared in place. Pure, and on the hot path: the loader builds
//! every request it sends and checks every reply.
//!
//! Every payload is derived from (connection id, sequence number), so the expected reply can
//! be rebuilt when the reply arrives instead of being stored: memory stays flat however many
//! messages are in flight, and every byte of every reply is still checked.

/// The smallest `--size` for workloads whose payload starts with a header: the header
/// (connection and sequence in hex) must fit.
pub const MIN_SIZE: usize = 32;

/// Filler for payloads that need no particular letters.
const PLAIN_LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// Appends the header `values` then plain filler to `out` until it is `size` bytes longer
/// than it was (the header alone if it is longer): an echo request, a broadcast message.
pub fn header_and_filler(out: &mut Vec<u8>, values: &[u64], filler_start: usize, size: usize) {
    let end = out.len() + size;
    push_header(out, values);
    plain_filler(out, filler_start, end);
}

/// Appends filler from [`PLAIN_LETTERS`], starting at `start` in the alphabet, until `out`
/// is `size` bytes long. Copies slices of the alphabet written out twice, so that a filler
/// shorter than the alphabet (the usual case) is one copy: the loader builds every request
/// it sends, so this is on its hot path.
pub fn plain_filler(out: &mut Vec<u8>, start: usize, size: usize) {
    let mut index = start % PLAIN_LETTERS.len();
    while out.len() < size {
        let take = (size - out.len()).min(PLAIN_LETTERS.len());
        out.extend_from_slice(&PLAIN_LETTERS_TWICE[index..index + take]);
        index = (index + take) % PLAIN_LETTERS.len();
    }
}

/// Whether `bytes` is the filler [`plain_filler`] writes from `start`: compared in place,
/// slice by slice, with nothing built.
pub fn is_plain_filler(mut bytes: &[u8], start: usize) -> bool {
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
pub fn push_header(out: &mut Vec<u8>, values: &[u64]) {
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

/// Takes one header field from the front of `input`: lower-case hex as [`push_header`]
/// writes it (1 to 16 digits, no leading zeros), then a `.`. One pass with a table, as this
/// runs several times per reply.
pub fn take_hex(input: &mut &[u8]) -> Option<u64> {
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

    /// Headers are the values in hex, each followed by a dot, and read back.
    #[test]
    fn headers_are_hex() {
        let mut out = Vec::new();
        push_header(&mut out, &[0, 15, 16, u64::MAX]);
        assert_eq!(out, b"0.f.10.ffffffffffffffff.");
        let mut rest = &out[..];
        let values: Vec<u64> = std::iter::from_fn(|| take_hex(&mut rest)).collect();
        assert_eq!(values, [0, 15, 16, u64::MAX]);
        assert_eq!(take_hex(&mut &b"05."[..]), None, "a leading zero is not what was written");
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
}
