//! A loader thread's connections: each one's socket, the requests it has outstanding, the
//! bytes it still has to write and the reply it is in the middle of; and the set of them,
//! with who is up, who sends, and who is owed a write or a read. Every read and write of a
//! socket goes through the one gate (`sys::socket::gate`).

use std::collections::VecDeque;
use std::io::{self, Read as _, Write as _};
use std::mem;
use std::ops::{Index, IndexMut};

use slab::Slab;

use crate::codec::{Codec, Decoder, ws};
use crate::load::socket::LoadSocket;
use crate::sys::socket::{gate, write_until_full};

/// A request sent and not yet answered.
#[derive(Clone, Copy, Debug)]
pub(crate) struct InFlight {
    /// Its sequence number on its connection.
    pub seq: u64,
    /// When it was due (see `Request::intended_ns`).
    pub intended_ns: u64,
    /// When it was sent.
    pub sent_ns: u64,
    /// Its length on the wire, framing included (for the bytes-per-second figure).
    pub wire_bytes: u32,
}

/// The handshakes a connection goes through once connected, before it is up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Handshake {
    /// None under way (not connected yet, or up).
    None,
    /// `--tls`: the TLS handshake, started then (monotonic ns): its latency is reported
    /// apart from the TCP connect's.
    Tls { started_ns: u64 },
    /// `--codec ws`: the opening request sent, the server's answer awaited.
    WebSocket,
    /// The workload's opening message sent, its answer awaited.
    Opening,
}

/// One loader connection. `C` is what its workload keeps for it.
#[derive(Debug)]
pub(crate) struct LoadConn<C> {
    /// Its id over the whole run (what its requests carry).
    pub id: u32,
    pub stream: LoadSocket,
    /// Connected, and every handshake done: it sends and its replies count.
    pub up: bool,
    /// Connected, and this handshake under way (the connection is up once it is done).
    pub handshake: Handshake,
    pub connect_started_ns: u64,
    decoder: Decoder,
    /// The undecoded tail of an incomplete reply (or of a handshake's answer).
    pub partial: Vec<u8>,
    /// Bytes of replies taken so far: where in the stream a mismatch is.
    pub received_bytes: u64,
    /// Requests not written yet (`written` of them are).
    output: Vec<u8>,
    written: usize,
    queued_for_flush: bool,
    /// The sequence number of its next request.
    pub next_seq: u64,
    in_flight: VecDeque<InFlight>,
    /// UDP: requests the socket would not take yet, one datagram each.
    queued_datagrams: VecDeque<Vec<u8>>,
    /// When reply bytes last came (monotonic ns): a stream's wait for its oldest reply
    /// counts from this or that request's send, whichever is later, so a long reply still
    /// coming is not taken for a stall.
    pub heard_ns: u64,
    /// What its workload keeps for it.
    pub workload: C,
}

impl<C: Default> LoadConn<C> {
    /// Connection `id`, connecting on `stream` since `now`.
    pub fn new(id: u32, stream: LoadSocket, codec: Codec, now: u64) -> LoadConn<C> {
        LoadConn {
            id,
            stream,
            up: false,
            handshake: Handshake::None,
            connect_started_ns: now,
            decoder: codec.decoder(),
            partial: Vec::new(),
            received_bytes: 0,
            output: Vec::new(),
            written: 0,
            queued_for_flush: false,
            next_seq: 0,
            in_flight: VecDeque::new(),
            queued_datagrams: VecDeque::new(),
            heard_ns: 0,
            workload: C::default(),
        }
    }
}

impl<C> LoadConn<C> {
    /// Its oldest request outstanding.
    pub fn oldest(&self) -> Option<&InFlight> {
        self.in_flight.front()
    }

    /// How many requests it has outstanding.
    pub fn outstanding(&self) -> usize {
        self.in_flight.len()
    }

    /// Its `index`th request outstanding, oldest first.
    pub fn in_flight_at(&self, index: usize) -> &InFlight {
        &self.in_flight[index]
    }

    /// The codec's decoder of its replies (a copy: it is small, and the replies it cuts are
    /// handled while the connection is borrowed elsewhere).
    pub fn decoder(&self) -> Decoder {
        self.decoder
    }

    /// Keeps the decoder's state after a batch of replies.
    pub fn set_decoder(&mut self, decoder: Decoder) {
        self.decoder = decoder;
    }

    /// Appends a message framed by `codec` to what it will write, as a client sends it (over
    /// WebSocket, masked with a key that changes from frame to frame, from its id and
    /// `seq`): `write` writes the payload in place. Returns its length on the wire.
    pub fn frame(&mut self, codec: Codec, seq: u64, write: impl FnOnce(&mut Vec<u8>)) -> usize {
        let out = &mut self.output;
        let before = out.len();
        let frame = codec.begin_frame(out);
        write(out);
        codec.end_frame(out, frame);
        if codec == Codec::Ws {
            let mask = (u64::from(self.id).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seq) as u32;
            ws::client::mask_frame(out, before, mask.to_ne_bytes());
        }
        out.len() - before
    }

    /// Appends bytes to what it will write, as they are (the WebSocket opening request).
    pub fn queue_raw(&mut self, bytes: &[u8]) {
        self.output.extend_from_slice(bytes);
    }

    /// UDP: sends `datagram` now, or queues a copy if the socket is full (or others wait).
    /// One message, one datagram: UDP has nothing to batch.
    pub fn send_datagram(&mut self, datagram: &[u8]) -> io::Result<()> {
        if self.queued_datagrams.is_empty() && gate(|| self.stream.write(datagram))?.is_some() {
            return Ok(());
        }
        self.queued_datagrams.push_back(datagram.to_vec());
        Ok(())
    }

    /// Whether it has bytes (or datagrams) waiting to be written.
    pub fn has_output(&self) -> bool {
        !self.output.is_empty() || !self.queued_datagrams.is_empty()
    }

    /// Whether it is queued to be written at the end of the turn.
    pub fn queued_for_flush(&self) -> bool {
        self.queued_for_flush
    }

    /// Writes what waits, until all of it is written or the socket is full (the rest goes
    /// on the next writable edge).
    pub fn write_out(&mut self) -> io::Result<()> {
        self.queued_for_flush = false;
        while let Some(datagram) = self.queued_datagrams.front() {
            if gate(|| self.stream.write(datagram))?.is_none() {
                return Ok(());
            }
            self.queued_datagrams.pop_front();
        }
        let stream = &mut self.stream;
        self.written += write_until_full(&self.output[self.written..], |bytes| stream.write(bytes))?;
        if self.written < self.output.len() {
            return Ok(());
        }
        self.output.clear();
        self.written = 0;
        // What a TLS session took in but could not write yet: written on this writable
        // edge, not left until the next request.
        gate(|| self.stream.flush())?;
        Ok(())
    }

    /// Reads what the socket holds into `buffer`: `Ok(None)` if nothing now, `Ok(Some(0))`
    /// at the end of the stream.
    pub fn read(&mut self, buffer: &mut [u8]) -> io::Result<Option<usize>> {
        gate(|| self.stream.read(buffer))
    }
}

/// A thread's connections; tokens are slab keys. It keeps the count of requests
/// outstanding over all of them, so requests are added and taken here.
#[derive(Debug)]
pub(crate) struct Connections<C> {
    slab: Slab<LoadConn<C>>,
    /// Keys of connections that are up, in the order they came up.
    up_keys: Vec<usize>,
    /// How many of those send (`--active`): the first ones.
    active: usize,
    /// Requests outstanding over every connection.
    in_flight: usize,
    /// Connections with bytes to write at the end of the turn.
    flush_queue: Vec<usize>,
    /// TLS connections whose read stopped at `TLS_READS_PER_TURN`: read again next turn (no
    /// new edge will say their bytes are there).
    owed_reads: Vec<usize>,
    /// When outstanding requests are next checked against `--reply-timeout`.
    next_reply_check_ns: u64,
}

impl<C> Connections<C> {
    /// No connections yet; `active` of them will send.
    pub fn new(active: usize) -> Connections<C> {
        Connections {
            slab: Slab::new(),
            up_keys: Vec::new(),
            active,
            in_flight: 0,
            flush_queue: Vec::new(),
            owed_reads: Vec::new(),
            next_reply_check_ns: 0,
        }
    }

    pub fn get(&self, key: usize) -> Option<&LoadConn<C>> {
        self.slab.get(key)
    }

    pub fn get_mut(&mut self, key: usize) -> Option<&mut LoadConn<C>> {
        self.slab.get_mut(key)
    }

    pub fn contains(&self, key: usize) -> bool {
        self.slab.contains(key)
    }

    /// The key the next connection will get (its token, registered before it is added).
    pub fn vacant_key(&self) -> usize {
        self.slab.vacant_key()
    }

    pub fn insert(&mut self, conn: LoadConn<C>) -> usize {
        self.slab.insert(conn)
    }

    /// Every connection, up or not.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &LoadConn<C>)> {
        self.slab.iter()
    }

    /// Closes `key` (dropping its socket): it is no longer up, and what it had outstanding
    /// is no longer counted here.
    pub fn remove(&mut self, key: usize) -> Option<LoadConn<C>> {
        let conn = self.slab.try_remove(key)?;
        self.in_flight -= conn.in_flight.len();
        if let Some(position) = self.up_keys.iter().position(|&up| up == key) {
            self.up_keys.swap_remove(position);
        }
        Some(conn)
    }

    /// `key` is up: it sends and its replies count.
    pub fn mark_up(&mut self, key: usize) {
        self.slab[key].up = true;
        self.up_keys.push(key);
    }

    /// Keys of the connections that are up.
    pub fn up_keys(&self) -> &[usize] {
        &self.up_keys
    }

    /// The connections that send: the first `--active` of those up.
    pub fn sending_keys(&self) -> &[usize] {
        &self.up_keys[..self.up_keys.len().min(self.active)]
    }

    /// The key of connection `id`, if it is up.
    pub fn key_of(&self, id: u32) -> Option<usize> {
        self.up_keys.iter().copied().find(|&key| self.slab[key].id == id)
    }

    /// Requests outstanding over every connection.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// `key` sent `request`; its answer is awaited.
    pub fn await_reply(&mut self, key: usize, request: InFlight) {
        self.slab[key].in_flight.push_back(request);
        self.in_flight += 1;
    }

    /// Takes `key`'s oldest request outstanding off: it was answered (or given up).
    pub fn take_oldest(&mut self, key: usize) -> Option<InFlight> {
        let request = self.slab.get_mut(key)?.in_flight.pop_front()?;
        self.in_flight -= 1;
        Some(request)
    }

    /// Takes every request of `key` off (given up); returns how many there were.
    pub fn take_all(&mut self, key: usize) -> usize {
        let Some(conn) = self.slab.get_mut(key) else { return 0 };
        let count = conn.in_flight.len();
        conn.in_flight.clear();
        self.in_flight -= count;
        count
    }

    /// Queues `key` to be written at the end of the turn (once, however many requests it
    /// gets).
    pub fn queue_flush(&mut self, key: usize) {
        let conn = &mut self.slab[key];
        if !conn.queued_for_flush {
            conn.queued_for_flush = true;
            self.flush_queue.push(key);
        }
    }

    /// The connections queued to be written; hand the list back with
    /// [`restore_flush_queue`](Self::restore_flush_queue) to keep its allocation.
    pub fn take_flush_queue(&mut self) -> Vec<usize> {
        mem::take(&mut self.flush_queue)
    }

    pub fn restore_flush_queue(&mut self, mut queue: Vec<usize>) {
        if self.flush_queue.is_empty() {
            queue.clear();
            self.flush_queue = queue;
        }
    }

    /// `key`'s read stopped early: read it again next turn.
    pub fn owe_read(&mut self, key: usize) {
        self.owed_reads.push(key);
    }

    pub fn take_owed_reads(&mut self) -> Vec<usize> {
        mem::take(&mut self.owed_reads)
    }

    /// Whether some connection is owed a read (the next poll must not wait).
    pub fn owes_reads(&self) -> bool {
        !self.owed_reads.is_empty()
    }

    /// Whether the replies outstanding are due a check against `--reply-timeout` now; if
    /// so, the next is due `every` later.
    pub fn reply_check_due(&mut self, now: u64, every: u64) -> bool {
        if self.in_flight == 0 || now < self.next_reply_check_ns {
            return false;
        }
        self.next_reply_check_ns = now + every;
        true
    }
}

impl<C> Index<usize> for Connections<C> {
    type Output = LoadConn<C>;

    fn index(&self, key: usize) -> &LoadConn<C> {
        &self.slab[key]
    }
}

impl<C> IndexMut<usize> for Connections<C> {
    fn index_mut(&mut self, key: usize) -> &mut LoadConn<C> {
        &mut self.slab[key]
    }
}
