//! permessage-deflate (RFC 7692), with no context takeover in either direction: every
//! message is compressed and inflated on its own, so no zlib state lives between messages,
//! and none in any connection. The (de)compressors are one per thread (the reactor's), reset
//! for each message; a compressed room line is made once per turn for all the members that
//! share its window size.
//!
//! A message is raw DEFLATE (no zlib header) ending with a sync flush, whose last four bytes
//! (`00 00 ff ff`) are left off on the wire and put back before inflating.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The tail of a sync flush, left off each message.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The smallest and largest window a compressor here can keep to (zlib cannot do 8).
pub const WINDOW_BITS: std::ops::RangeInclusive<u8> = 9..=15;

thread_local! {
    /// Compressors by window size (`bits - 9`), made when first needed.
    static COMPRESSORS: RefCell<[Option<Compress>; 7]> = const { RefCell::new([None, None, None, None, None, None, None]) };
    static DECOMPRESSOR: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// Compresses `payload` onto the end of `out` with a window of `2^bits` bytes.
pub fn compress(payload: &[u8], bits: u8, out: &mut Vec<u8>) {
    COMPRESSORS.with(|compressors| {
        let mut compressors = compressors.borrow_mut();
        let slot = usize::from(bits.clamp(*WINDOW_BITS.start(), *WINDOW_BITS.end()) - WINDOW_BITS.start());
        let compressor = compressors[slot].get_or_insert_with(|| {
            Compress::new_with_window_bits(Compression::fast(), false, WINDOW_BITS.start() + slot as u8)
        });
        compressor.reset();
        let start = out.len();
        let mut input = payload;
        loop {
            out.reserve(input.len() / 2 + 64);
            let before = compressor.total_in();
            // `compress_vec` writes into the spare capacity only.
            let status =
                compressor.compress_vec(input, out, FlushCompress::Sync).expect("deflate takes any input");
            input = &input[(compressor.total_in() - before) as usize..];
            if input.is_empty() && out.len() < out.capacity() && status == Status::Ok {
                break;
            }
        }
        if out[start..].ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
    });
}

/// What went wrong inflating a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates to more than the limit.
    TooBig,
    /// It is not DEFLATE data.
    Invalid,
}

/// Inflates `payload` (one message, its tail left off) onto the end of `out`, at most
/// `max` bytes: a small message cannot make the server hold a big one (a zip bomb).
///
/// The output is produced into a window that ends one byte past the limit, never into
/// whatever capacity `out` happens to have: whether a message is too big (1009) or not
/// DEFLATE (1007) must not depend on the buffer's history. (The fuzzer found that: with
/// room to spare, bad data past the limit was seen first; without, the size was.)
pub fn decompress(payload: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), InflateError> {
    DECOMPRESSOR.with(|decompressor| {
        let mut decompressor = decompressor.borrow_mut();
        let decompressor = decompressor.get_or_insert_with(|| Decompress::new(false));
        decompressor.reset(false);
        let start = out.len();
        // One byte past the limit: reaching it means too big.
        let end = start + max + 1;
        for mut input in [payload, &TAIL[..]] {
            while !input.is_empty() {
                let (taken, produced) = inflate_step(decompressor, input, out, end)?;
                input = &input[taken..];
                if out.len() == end {
                    return Err(InflateError::TooBig);
                }
                if taken == 0 && produced == 0 {
                    // No progress with room to spare: the data is not DEFLATE.
                    return Err(InflateError::Invalid);
                }
            }
        }
        // What is still buffered inside comes out with more room.
        loop {
            let (_, produced) = inflate_step(decompressor, &[], out, end)?;
            if out.len() == end {
                return Err(InflateError::TooBig);
            }
            if produced == 0 {
                return Ok(());
            }
        }
    })
}

/// One call of the inflater, its output appended to `out` but never past `end`: how much
/// input it took and how much it produced.
fn inflate_step(
    decompressor: &mut Decompress,
    input: &[u8],
    out: &mut Vec<u8>,
    end: usize,
) -> Result<(usize, usize), InflateError> {
    let at = out.len();
    let room = (end - at).min((input.len() * 4).clamp(256, 64 * 1024));
    out.resize(at + room, 0);
    let (before_in, before_out) = (decompressor.total_in(), decompressor.total_out());
    let result = decompressor.decompress(input, &mut out[at..], FlushDecompress::Sync);
    let produced = (decompressor.total_out() - before_out) as usize;
    out.truncate(at + produced);
    result.map_err(|_| InflateError::Invalid)?;
    Ok(((decompressor.total_in() - before_in) as usize, produced))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What is compressed inflates back, at every window size, big or small, many times
    /// over (each message on its own).
    #[test]
    fn round_trips_at_every_window() {
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8 ^ (i / 1000) as u8).collect();
        for bits in WINDOW_BITS {
            for payload in [&b""[..], b"hello hello hello hello", &big] {
                for _ in 0..2 {
                    let mut compressed = Vec::new();
                    compress(payload, bits, &mut compressed);
                    let mut inflated = Vec::new();
                    decompress(&compressed, payload.len(), &mut inflated).unwrap();
                    assert_eq!(inflated, payload, "window bits {bits}");
                }
            }
        }
    }

    /// A small message that inflates past the limit is refused; garbage is not DEFLATE.
    #[test]
    fn refuses_bombs_and_garbage() {
        let mut compressed = Vec::new();
        compress(&vec![0u8; 1 << 20], 15, &mut compressed);
        assert!(compressed.len() < 16 * 1024, "{} bytes", compressed.len());
        assert_eq!(decompress(&compressed, 64 * 1024, &mut Vec::new()), Err(InflateError::TooBig));
        assert_eq!(decompress(&[0xff; 64], 1024, &mut Vec::new()), Err(InflateError::Invalid));
    }
}
