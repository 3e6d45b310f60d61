//! The blocking models' clients, as their console shows them (`iterative`, `threads`,
//! `fork`): who is served now, by which handler, and what each got done so far. A blocking
//! model has no loop and no turns: each client is served by a blocking call of its own (in
//! the one thread, a thread of its own, a process of its own), so the console sends
//! snapshots only, made here by the console thread.
//!
//! A client is listed from its dispatch to its end (two locks of the list per client); its
//! counts are read where its server keeps them: a few atomics it stores once per read
//! ([`Tallied`]), or, for a forked child, its slot of shared memory.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::codec::Codec;
use crate::console::{Counters, Row, SnapshotWriter, Totals};
use crate::handlers::{ConnId, Handler, Recipient};
use crate::models::blocking::{Room, Served, lock};
use crate::sys::address::PeerAddr;

/// Where a client's counts are read from.
type Counts = Box<dyn Fn() -> Served + Send>;

/// One client being served.
struct Entry {
    peer: PeerAddr,
    handler: String,
    codec: Codec,
    counts: Counts,
}

/// See the module documentation.
#[derive(Default)]
pub struct Clients {
    live: Mutex<BTreeMap<u64, Entry>>,
    /// What the clients that left got done.
    gone: Mutex<Served>,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clients").field("live", &lock(&self.live).len()).finish()
    }
}

impl Clients {
    /// Client `id` is served from now on; `counts` reads what it got done so far.
    pub fn open(&self, id: ConnId, peer: &PeerAddr, handler: &str, codec: Codec, counts: Counts) {
        let entry = Entry { peer: peer.clone(), handler: handler.to_string(), codec, counts };
        lock(&self.live).insert(id.0 as u64, entry);
    }

    /// Client `id` left: its counts are added to those of the clients gone.
    pub fn close(&self, id: ConnId) {
        let Some(entry) = lock(&self.live).remove(&(id.0 as u64)) else { return };
        let served = (entry.counts)();
        let mut gone = lock(&self.gone);
        gone.messages_in += served.messages_in;
        gone.messages_out += served.messages_out;
    }

    /// Writes a snapshot of model `model`'s clients into `json`: no loop figures (there is
    /// no loop), and the messages of every client so far.
    pub fn snapshot<'j>(&self, model: &str, json: &'j mut String) -> &'j str {
        let mut writer = SnapshotWriter::begin(json, model);
        let mut counters = {
            let gone = lock(&self.gone);
            Counters { messages_in: gone.messages_in, messages_out: gone.messages_out, ..Counters::default() }
        };
        for (&id, entry) in lock(&self.live).iter() {
            let served = (entry.counts)();
            counters.messages_in += served.messages_in;
            counters.messages_out += served.messages_out;
            writer.connection(&Row {
                conn: id as usize,
                peer: &entry.peer,
                handler: &entry.handler,
                codec: &entry.codec,
                transport: "plain",
                state: "ready",
                totals: Totals {
                    messages: served.messages_in,
                    bytes_in: served.bytes_in,
                    bytes_out: served.bytes_out,
                },
                // A blocking write returns once all is written: nothing waits.
                waiting: 0,
            });
        }
        writer.finish(None, &counters)
    }
}

/// A client's counts, stored once per read by the thread serving it, read by the console.
#[derive(Debug, Default)]
pub struct Tally {
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl Tally {
    /// What it holds now.
    pub fn read(&self) -> Served {
        Served {
            messages_in: self.messages_in.load(Ordering::Relaxed),
            messages_out: self.messages_out.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
        }
    }
}

/// A client's room that also stores its counts in a [`Tally`] for the console: everything
/// else is the room's.
pub struct Tallied<'a> {
    /// The client's own room.
    pub room: &'a mut dyn Room,
    /// Where its counts go.
    pub tally: &'a Tally,
}

impl Room for Tallied<'_> {
    fn with_handler(&mut self, serve: &mut dyn FnMut(&mut dyn Handler)) {
        self.room.with_handler(serve);
    }

    fn deliver(&mut self, sender: ConnId, to: Recipient, payload: &[u8]) {
        self.room.deliver(sender, to, payload);
    }

    fn tally(&mut self, served: &Served) {
        self.room.tally(served);
        self.tally.messages_in.store(served.messages_in, Ordering::Relaxed);
        self.tally.messages_out.store(served.messages_out, Ordering::Relaxed);
        self.tally.bytes_in.store(served.bytes_in, Ordering::Relaxed);
        self.tally.bytes_out.store(served.bytes_out, Ordering::Relaxed);
    }
}

/// A [`Tally`] and the reader [`Clients::open`] takes for it.
pub fn tally() -> (Arc<Tally>, Counts) {
    let tally = Arc::new(Tally::default());
    let reader = Arc::clone(&tally);
    (tally, Box::new(move || reader.read()))
}
