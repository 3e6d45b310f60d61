//! Finding the newlines of one read, 64 bytes at a time: each block of input becomes a
//! bitmap of its newlines once (`positions_of`, below: 16 bytes per instruction), and each line
//! ending in the block is then two bit operations away. Searching from the start of each
//! line with `memchr` instead costs a call and a vector loop per line, which for short lines
//! was a third of the server's own time per message (docs/benchmarks.md, "Speed").

/// The size of a block scanned at once.
const BLOCK: usize = 64;

/// The newlines of one stretch of input, in order, found block by block as they are asked
/// for: a cursor that only moves forward.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Newlines<'a> {
    input: &'a [u8],
    /// Where the block scanned last starts; blocks lie on a grid of 64 from the start of
    /// the input, so each byte is scanned once, whatever the length of the lines.
    start: usize,
    /// Bit `i`: `input[start + i]` is a newline not passed yet.
    ahead: u64,
    /// Whether the block at `start` was scanned (nothing is, until asked).
    scanned: bool,
}

impl<'a> Newlines<'a> {
    /// Finds newlines in `input`, from its start.
    pub(crate) fn new(input: &'a [u8]) -> Newlines<'a> {
        Newlines { input, start: 0, ahead: 0, scanned: false }
    }

    /// The length of the input searched.
    pub(crate) fn len(&self) -> usize {
        self.input.len()
    }

    /// Passes over the bytes before `from` (known to hold no newline the caller wants).
    // Kept out of line: it runs once per read, and inlined into the per-line loop it made
    // that loop longer (callgrind: +6 instructions per message).
    #[inline(never)]
    pub(crate) fn skip_to(&mut self, from: usize) {
        let block = from - from % BLOCK;
        if !self.scanned || block != self.start {
            if from >= self.input.len() {
                self.start = self.input.len();
                self.ahead = 0;
                self.scanned = true;
                return;
            }
            self.scan(block);
        }
        self.ahead &= u64::MAX << (from - block);
    }

    /// The position of the next newline, if there is one.
    #[inline]
    pub(crate) fn next(&mut self) -> Option<usize> {
        if !self.scanned {
            self.skip_to(0);
        }
        while self.ahead == 0 {
            let next = self.start + BLOCK;
            if next >= self.input.len() {
                return None;
            }
            self.scan(next);
        }
        let at = self.start + self.ahead.trailing_zeros() as usize;
        self.ahead &= self.ahead - 1;
        Some(at)
    }

    /// Scans the block that begins at `start`. The last, short block of an input of at
    /// least one block is read as the last whole block, overlapping the one before, and
    /// its bitmap shifted into place (no copy); only an input shorter than a block is
    /// zero-padded (a zero byte is no newline).
    fn scan(&mut self, start: usize) {
        let rest = &self.input[start..];
        self.ahead = match rest.first_chunk::<BLOCK>() {
            Some(block) => positions_of(b'\n', block),
            None => match self.input.last_chunk::<BLOCK>() {
                Some(last) => positions_of(b'\n', last) >> (BLOCK - rest.len()),
                None => positions_of(b'\n', &padded(rest)),
            },
        };
        self.start = start;
        self.scanned = true;
    }
}

/// The last, short block of an input, zero-padded to a whole one.
#[cold]
fn padded(rest: &[u8]) -> [u8; BLOCK] {
    let mut block = [0u8; BLOCK];
    block[..rest.len()].copy_from_slice(rest);
    block
}

// ----- where a byte occurs in a block, with the CPU's vector instructions -----
//
// The line codec's newline search is the server's hottest loop after the system calls. On
// x86_64, SSE2 (part of every x86_64 CPU) compares 16 bytes at a time and gathers one bit per
// byte; elsewhere a plain loop does the same, more slowly. (The one `unsafe` outside system
// calls.)
/// Bit `i` is set where `block[i] == byte`.
#[inline]
pub(crate) fn positions_of(byte: u8, block: &[u8; 64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        let mut positions = 0;
        for (index, chunk) in block.chunks_exact(16).enumerate() {
            let chunk = chunk.try_into().expect("chunks of 16");
            // SAFETY: `positions_in_16` needs SSE2, which every x86_64 CPU has (it is in the
            // x86_64 baseline that rustc compiles for).
            positions |= u64::from(unsafe { sse2::positions_in_16(byte, chunk) }) << (index * 16);
        }
        positions
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        block
            .iter()
            .enumerate()
            .fold(0, |positions, (index, &at)| positions | (u64::from(at == byte) << index))
    }
}

#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_movemask_epi8, _mm_set_epi64x, _mm_set1_epi8};

    /// Bit `i` is set where `chunk[i] == byte`: one compare of 16 bytes, one gather of their
    /// top bits.
    #[target_feature(enable = "sse2")]
    pub(super) fn positions_in_16(byte: u8, chunk: &[u8; 16]) -> u16 {
        let (low, high) = chunk.split_at(8);
        let low = i64::from_le_bytes(low.try_into().expect("8 bytes"));
        let high = i64::from_le_bytes(high.try_into().expect("8 bytes"));
        let equal = _mm_cmpeq_epi8(_mm_set_epi64x(high, low), _mm_set1_epi8(byte as i8));
        _mm_movemask_epi8(equal) as u16
    }
}

#[cfg(test)]
mod tests {
    use super::Newlines;
    use proptest::prelude::*;

    proptest! {
        /// The bitmap marks exactly the bytes that match.
        #[test]
        fn marks_exactly_the_matching_bytes(block in proptest::array::uniform32(0u8..4), more in proptest::array::uniform32(0u8..4)) {
            let mut whole = [0u8; 64];
            whole[..32].copy_from_slice(&block);
            whole[32..].copy_from_slice(&more);
            let positions = super::positions_of(1, &whole);
            for (index, &byte) in whole.iter().enumerate() {
                prop_assert_eq!(positions >> index & 1 == 1, byte == 1, "byte {}", index);
            }
        }

        /// Every newline is found, in order, whatever the input's length and wherever the
        /// search resumes, exactly as a plain search finds them.
        #[test]
        fn finds_what_a_plain_search_finds(
            input in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'x')], 0..300),
            skip in 0usize..320,
        ) {
            let plain = |from: usize| input.iter().skip(from).position(|&b| b == b'\n').map(|at| at + from);
            let mut newlines = Newlines::new(&input);
            let mut from = 0;
            while let Some(at) = newlines.next() {
                prop_assert_eq!(Some(at), plain(from));
                from = at + 1;
            }
            prop_assert_eq!(plain(from), None);
            let mut newlines = Newlines::new(&input);
            newlines.skip_to(skip);
            prop_assert_eq!(newlines.next(), plain(skip), "after skipping to {}", skip);
        }
    }
}
