//! Finding the newlines of one read, 64 bytes at a time: each block of input becomes a
//! bitmap of its newlines once (`sys/bytes.rs`, 16 bytes per instruction), and each line
//! ending in the block is then two bit operations away. Searching from the start of each
//! line with `memchr` instead costs a call and a vector loop per line, which for short lines
//! was a third of the server's own time per message (docs/benchmarks.md, "Speed").

use super::simd::positions_of;

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

    /// Scans the block that begins at `start` (zero-padded at the end of the input: a zero
    /// byte is no newline).
    fn scan(&mut self, start: usize) {
        self.ahead = match self.input[start..].first_chunk::<BLOCK>() {
            Some(block) => positions_of(b'\n', block),
            None => positions_of(b'\n', &padded(&self.input[start..])),
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

#[cfg(test)]
mod tests {
    use super::Newlines;
    use proptest::prelude::*;

    proptest! {
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
