//! `echo`: each request is a header (connection and sequence in hex) and filler to
//! `--size`; its reply must be the same bytes. Checked in place, with nothing built: this
//! runs for every reply, and the loader must stay cheaper per message than the server it
//! measures.

use std::sync::Arc;

use super::payload::{header_and_filler, is_plain_filler, take_hex};
use super::{Exchange, Request, Workload, WorkloadFlags, header_fits};
use crate::load::config::LoadConfig;
use crate::load::plan::Plan;
use crate::load::tally::Tally;

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Echo {
    size: usize,
}

/// Appends request `seq` of connection `id`, `size` bytes (the header alone if longer).
pub(crate) fn echo_request(id: u32, seq: u64, size: usize, out: &mut Vec<u8>) {
    header_and_filler(out, &[u64::from(id), seq], (id as usize) ^ (seq as usize), size);
}

/// Whether `reply` is request `seq` of connection `id` exactly, read and compared in place.
pub(crate) fn is_echo(id: u32, seq: u64, size: usize, reply: &[u8]) -> bool {
    let mut rest = reply;
    let header_matches = take_hex(&mut rest) == Some(u64::from(id)) && take_hex(&mut rest) == Some(seq);
    let header = reply.len() - rest.len();
    header_matches && reply.len() == size.max(header) && is_plain_filler(rest, (id as usize) ^ (seq as usize))
}

impl Exchange for Echo {
    const NAME: &'static str = "echo";
    type Run = ();
    type Conn = ();

    fn from_flags(_flags: &mut WorkloadFlags) -> Result<Workload, String> {
        Ok(Workload::Echo)
    }

    fn validate(config: &LoadConfig) -> Result<(), String> {
        header_fits(config, Self::NAME)
    }

    fn share(_config: &LoadConfig, _plans: &[Plan]) -> std::io::Result<()> {
        Ok(())
    }

    fn new(config: &LoadConfig, _plan: &Plan, _run: &Arc<()>) -> Echo {
        Echo { size: config.size }
    }

    fn request(&self, request: &Request, out: &mut Vec<u8>, _tally: &mut Tally) {
        echo_request(request.id, request.seq, self.size, out);
    }

    fn check(&self, id: u32, seq: u64, reply: &[u8], _scratch: &mut Vec<u8>) -> bool {
        is_echo(id, seq, self.size, reply)
    }

    fn expected(&self, id: u32, seq: u64, out: &mut Vec<u8>) {
        echo_request(id, seq, self.size, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: u32, seq: u64, size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        echo_request(id, seq, size, &mut out);
        out
    }

    /// Requests are exactly --size bytes, distinct, and line-safe.
    #[test]
    fn requests_have_the_asked_size() {
        for size in [32, 64, 100, 1000] {
            let one = request(7, 3, size);
            assert_eq!(one.len(), size, "{size}");
            assert!(!one.contains(&b'\n') && !one.contains(&b'\r'));
            assert_ne!(one, request(7, 4, size));
        }
    }

    /// A reply matches only the exact request: any byte changed, one missing, or another
    /// request's, is caught.
    #[test]
    fn replies_match_only_the_request() {
        for size in [64, 32] {
            let reply = request(7, 300, size);
            assert!(is_echo(7, 300, size, &reply));
            assert!(!is_echo(7, 301, size, &reply));
            for at in 0..reply.len() {
                let mut damaged = reply.clone();
                damaged[at] ^= 1;
                assert!(!is_echo(7, 300, size, &damaged), "byte {at}");
            }
            assert!(!is_echo(7, 300, size, &reply[1..]));
        }
    }
}
