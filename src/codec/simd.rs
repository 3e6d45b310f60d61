//! Where a byte occurs in a block of 64, as a bitmap, with the CPU's vector instructions:
//! the line codec's newline search (`codec/newlines.rs`) is the server's hottest loop after
//! the system calls. On x86_64, SSE2 (part of every x86_64 CPU) compares 16 bytes at a time
//! and gathers one bit per byte; elsewhere a plain loop does the same, more slowly.

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
    }
}
