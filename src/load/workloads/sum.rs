//! `sum`: each request is a list of random integers (about one per 8 bytes of `--size`,
//! separated by commas and spaces in turn); its reply must be their sum.

use std::io::Write as _;
use std::sync::Arc;

use super::{Exchange, Request, Workload, WorkloadFlags};
use crate::load::config::LoadConfig;
use crate::load::plan::Plan;
use crate::load::tally::Tally;

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Sum {
    size: usize,
}

/// The integers of request `seq` of connection `id` and their total: about one per 8
/// bytes of `size`, each within ±999,999, so no sum can overflow.
fn sum_terms(id: u32, seq: u64, size: usize) -> (impl Iterator<Item = i64>, i64) {
    let count = (size / 8).max(1);
    let seed = (u64::from(id) << 40) ^ seq;
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

impl Exchange for Sum {
    const NAME: &'static str = "sum";
    type Run = ();
    type Conn = ();

    fn from_flags(_flags: &mut WorkloadFlags) -> Result<Workload, String> {
        Ok(Workload::Sum)
    }

    fn share(_config: &LoadConfig, _plans: &[Plan]) -> std::io::Result<()> {
        Ok(())
    }

    fn new(config: &LoadConfig, _plan: &Plan, _run: &Arc<()>) -> Sum {
        Sum { size: config.size }
    }

    fn request(&self, request: &Request, out: &mut Vec<u8>, _tally: &mut Tally) {
        let (numbers, _) = sum_terms(request.id, request.seq, self.size);
        for (index, number) in numbers.enumerate() {
            if index > 0 {
                out.extend_from_slice([&b","[..], b", ", b" "][index % 3]);
            }
            let _ = write!(out, "{number}");
        }
    }

    fn check(&self, id: u32, seq: u64, reply: &[u8], scratch: &mut Vec<u8>) -> bool {
        scratch.clear();
        self.expected(id, seq, scratch);
        reply == scratch.as_slice()
    }

    fn expected(&self, id: u32, seq: u64, out: &mut Vec<u8>) {
        let (_, total) = sum_terms(id, seq, self.size);
        let _ = write!(out, "{total}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests parse back to the expected total with evloop's own sum, and only that total
    /// checks.
    #[test]
    fn sum_expects_the_sum() {
        let workload = Sum { size: 64 };
        let mut scratch = Vec::new();
        for seq in 0..50 {
            let mut payload = Vec::new();
            let request = Request { id: 3, seq, intended_ns: 0, sent_ns: 0, epoch_ns: 0 };
            workload.request(&request, &mut payload, &mut Tally::default());
            let total = crate::handlers::sum(&payload).unwrap().to_string();
            assert!(workload.check(3, seq, total.as_bytes(), &mut scratch));
            for at in 0..total.len() {
                let mut damaged = total.clone().into_bytes();
                damaged[at] ^= 1;
                assert!(!workload.check(3, seq, &damaged, &mut scratch), "byte {at}");
            }
            assert!(!workload.check(3, seq, &total.as_bytes()[1..], &mut scratch));
        }
    }
}
