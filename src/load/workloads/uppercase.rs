//! `uppercase`: each request is a header and letters, ASCII and not, to `--size`; its reply
//! must be their full Unicode uppercasing (`ß` becomes `SS`), so a server that uppercases
//! only ASCII, or maps one character to one, is caught.

use std::sync::Arc;

use super::payload::push_header;
use super::{Exchange, Request, Workload, WorkloadFlags, header_fits};
use crate::load::config::LoadConfig;
use crate::load::plan::Plan;
use crate::load::tally::Tally;

/// Letters for the payloads: ASCII and non-ASCII, including `ß` (which becomes `SS`).
const MIXED_LETTERS: &[char] = &[
    'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', 'p', 'q', 'r', 's', 't', 'u',
    'v', 'w', 'x', 'y', 'z', 'ß', 'ä', 'ö', 'ü', 'é', 'ñ', 'ø', 'å', 'λ', 'ж', 'я', 'œ',
];

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Uppercase {
    size: usize,
}

/// Appends request `seq` of connection `id`: `size` bytes (padded with `a` where a letter
/// would not fit whole).
fn uppercase_request(id: u32, seq: u64, size: usize, out: &mut Vec<u8>) {
    let end = out.len() + size;
    push_header(out, &[u64::from(id), seq]);
    let mut index = (id as usize) ^ (seq as usize);
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

impl Exchange for Uppercase {
    const NAME: &'static str = "uppercase";
    type Run = ();
    type Conn = ();

    fn from_flags(_flags: &mut WorkloadFlags) -> Result<Workload, String> {
        Ok(Workload::Uppercase)
    }

    fn validate(config: &LoadConfig) -> Result<(), String> {
        header_fits(config, Self::NAME)
    }

    fn share(_config: &LoadConfig, _plans: &[Plan]) -> std::io::Result<()> {
        Ok(())
    }

    fn new(config: &LoadConfig, _plan: &Plan, _run: &Arc<()>) -> Uppercase {
        Uppercase { size: config.size }
    }

    fn request(&self, request: &Request, out: &mut Vec<u8>, _tally: &mut Tally) {
        uppercase_request(request.id, request.seq, self.size, out);
    }

    fn check(&self, id: u32, seq: u64, reply: &[u8], scratch: &mut Vec<u8>) -> bool {
        scratch.clear();
        self.expected(id, seq, scratch);
        reply == scratch.as_slice()
    }

    fn expected(&self, id: u32, seq: u64, out: &mut Vec<u8>) {
        let start = out.len();
        uppercase_request(id, seq, self.size, out);
        let upper = String::from_utf8_lossy(&out[start..]).to_uppercase();
        out.truncate(start);
        out.extend_from_slice(upper.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests are exactly --size bytes, distinct, and line-safe; they include non-ASCII
    /// letters, and the expected reply is the full Unicode uppercasing.
    #[test]
    fn uppercase_expects_full_unicode_uppercasing() {
        let workload = Uppercase { size: 200 };
        for size in [32, 64, 100, 1000] {
            let mut one = Vec::new();
            uppercase_request(7, 3, size, &mut one);
            assert_eq!(one.len(), size);
            assert!(!one.contains(&b'\n') && !one.contains(&b'\r'));
        }
        let mut payload = Vec::new();
        uppercase_request(1, 0, 200, &mut payload);
        let payload = String::from_utf8(payload).unwrap();
        assert!(payload.contains('ß') && !payload.is_ascii());
        let mut expected = Vec::new();
        workload.expected(1, 0, &mut expected);
        assert_eq!(String::from_utf8(expected.clone()).unwrap(), payload.to_uppercase());
        let mut scratch = Vec::new();
        assert!(workload.check(1, 0, &expected, &mut scratch));
        assert!(!workload.check(1, 1, &expected, &mut scratch));
        for at in 0..expected.len() {
            let mut damaged = expected.clone();
            damaged[at] ^= 1;
            assert!(!workload.check(1, 0, &damaged, &mut scratch), "byte {at}");
        }
    }
}
