//! `file`: `GET` each file of the directory the server serves (`--files DIR`, read once
//! here: `catalogue.rs`) in turn. A reply is an `OK <size>` line, then exactly size bytes,
//! whose CRC-32 must be the file's. Body bytes are hashed as they come and never kept; only
//! a header line cut by a read waits in the connection's partial buffer.

use std::io;
use std::mem;
use std::sync::Arc;

use super::catalogue::Catalogue;
use super::{Exchange, Request, Workload, WorkloadFlags};
use crate::codec::Codec;
use crate::load::config::LoadConfig;
use crate::load::engine::Replies;
use crate::load::plan::Plan;
use crate::load::tally::Tally;

/// Longest `OK <size>` line taken: past it, the stream is not a file server's.
const MAX_HEADER: usize = 1024;

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct File {
    catalogue: Arc<Catalogue>,
}

/// A file coming in: what is left of it, and the checksum of what came.
#[derive(Clone, Debug)]
pub(crate) struct Download {
    /// Its index in the catalogue.
    file: usize,
    remaining: u64,
    hasher: crc32fast::Hasher,
}

impl Exchange for File {
    const NAME: &'static str = "file";
    type Run = Catalogue;
    /// The download under way (its header read, bytes still to come).
    type Conn = Option<Download>;

    fn from_flags(flags: &mut WorkloadFlags) -> Result<Workload, String> {
        match flags.files.take() {
            Some(dir) => Ok(Workload::File(dir)),
            None => Err("--workload file needs --files DIR: the directory the server serves".to_string()),
        }
    }

    fn validate(config: &LoadConfig) -> Result<(), String> {
        if config.target.is_datagram() || config.codec != Codec::Line {
            return Err("--workload file runs over TCP or a Unix socket, line codec".to_string());
        }
        Ok(())
    }

    fn share(config: &LoadConfig, _plans: &[Plan]) -> io::Result<Catalogue> {
        match &config.workload {
            Workload::File(dir) => Catalogue::read(dir),
            _ => Err(io::Error::new(io::ErrorKind::InvalidInput, "the file workload needs its directory")),
        }
    }

    fn new(_config: &LoadConfig, _plan: &Plan, run: &Arc<Catalogue>) -> File {
        File { catalogue: run.clone() }
    }

    fn request(&self, request: &Request, out: &mut Vec<u8>, _tally: &mut Tally) {
        out.extend_from_slice(b"GET ");
        out.extend_from_slice(
            self.catalogue.files[self.catalogue.pick(request.id, request.seq)].name.as_bytes(),
        );
    }

    /// Never asked: a download is checked as it streams in ([`take`]), and files are not
    /// served over UDP.
    ///
    /// [`take`]: Exchange::take
    fn check(&self, _id: u32, _seq: u64, _reply: &[u8], _scratch: &mut Vec<u8>) -> bool {
        false
    }

    fn expected(&self, id: u32, seq: u64, out: &mut Vec<u8>) {
        let entry = &self.catalogue.files[self.catalogue.pick(id, seq)];
        out.extend_from_slice(format!("OK {}", entry.size).as_bytes());
    }

    fn take(&self, replies: &mut Replies<'_, Self>, mut bytes: &[u8]) {
        while !bytes.is_empty() && replies.is_open() {
            let download = replies.state();
            if let Some(coming) = download {
                let take = (coming.remaining.min(bytes.len() as u64)) as usize;
                coming.hasher.update(&bytes[..take]);
                coming.remaining -= take as u64;
                bytes = &bytes[take..];
                if coming.remaining == 0 {
                    let done = download.take().expect("a download");
                    self.finish(replies, done);
                }
                continue;
            }
            let Some(end) = memchr::memchr(b'\n', bytes) else {
                let partial = replies.partial();
                partial.extend_from_slice(bytes);
                if partial.len() > MAX_HEADER {
                    let id = replies.id();
                    replies.tally().mismatch(id, b"OK <size>", b"(a reply line over 1 KiB)");
                    replies.close();
                }
                return;
            };
            let mut header = mem::take(replies.partial());
            header.extend_from_slice(&bytes[..end]);
            bytes = &bytes[end + 1..];
            self.start(replies, &header);
        }
    }
}

impl File {
    /// A header line came: the download of the file the oldest request asked for begins.
    fn start(&self, replies: &mut Replies<'_, Self>, header: &[u8]) {
        replies.tally().received += 1;
        let id = replies.id();
        let Some(flight) = replies.oldest() else {
            return replies.tally().mismatch(id, b"(no reply: nothing was outstanding)", header);
        };
        let file = self.catalogue.pick(id, flight.seq);
        let size = self.catalogue.files[file].size;
        let expected = format!("OK {size}");
        if header.strip_suffix(b"\r").unwrap_or(header) != expected.as_bytes() {
            replies.tally().mismatch(id, expected.as_bytes(), header);
            return replies.answer(header.len(), false);
        }
        let download = Download { file, remaining: size, hasher: crc32fast::Hasher::new() };
        if size == 0 {
            self.finish(replies, download);
        } else {
            *replies.state() = Some(download);
        }
    }

    /// All of a file came: check its checksum, count it, ask for the next.
    fn finish(&self, replies: &mut Replies<'_, Self>, download: Download) {
        let entry = &self.catalogue.files[download.file];
        let right = download.hasher.finalize() == entry.crc;
        if !right {
            let id = replies.id();
            let expected = format!("{} bytes of {} with CRC-32 {:08x}", entry.size, entry.name, entry.crc);
            replies.tally().mismatch(id, expected.as_bytes(), b"(bytes that differ from the file)");
        }
        replies.answer(entry.size as usize, right);
    }
}
