//! Serving one client with blocking I/O: the read, decode, handle, write loop of every
//! classic server, over the same codecs and handlers as the reactor.
//!
//! Each read's complete messages are handled and their replies written in one `write_all`,
//! like the reactor does, so the models differ only in how clients share the CPU. Every
//! read, write and accept passes the one gate (`sys/socket.rs`), blocking sockets too: a
//! read timeout and a write timeout are named here, beside it.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::codec::{Codec, FrameError};
use crate::config::Limits;
use crate::handlers::serve::{self, Carrier, Flow, Serving};
use crate::handlers::{ConnId, Handler, Outbox, Peer, Recipient};
use crate::sys::address::PeerAddr;
use crate::sys::socket::{gate, write_until_full};
use crate::timeline::Timeline;

/// How often a blocked read wakes up to check whether the server is stopping.
pub const STOP_CHECK: Duration = Duration::from_millis(100);
/// How long a client the server closes gets to close its side (see `reactor/linger.rs`).
const LINGER: Duration = Duration::from_secs(2);
/// The read buffer of one blocking connection.
const READ_BUFFER: usize = 16 * 1024;

/// Locks a mutex; one that a panicking thread left poisoned holds plain data: carry on.
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a connection needs from its model: the handler, the way to reach other clients, and
/// (fork) where its counts go while it lives.
pub trait Room {
    /// Runs `serve` with the handler (a model that shares it among threads holds its lock
    /// meanwhile).
    fn with_handler(&mut self, serve: &mut dyn FnMut(&mut dyn Handler));
    /// Delivers `payload` (not yet framed) to `to`, a recipient other than the sender.
    fn deliver(&mut self, sender: ConnId, to: Recipient, payload: &[u8]);
    /// Keeps the connection's counts so far: called once per read, after its messages are
    /// served and before their replies are written, so a reply a client has seen is always
    /// counted. A model whose counts must outlive a process keeps them here (fork's
    /// children, in memory the parent reads); the others count what `serve` returns.
    fn tally(&mut self, served: &Served) {
        let _ = served;
    }
}

/// The one client's room, when it is alone with its handler (the iterative server, a
/// process per client): nobody else to deliver to.
pub struct Alone<'a> {
    /// The client's handler.
    pub handler: &'a mut dyn Handler,
}

impl Room for Alone<'_> {
    fn with_handler(&mut self, serve: &mut dyn FnMut(&mut dyn Handler)) {
        serve(&mut *self.handler);
    }

    fn deliver(&mut self, _sender: ConnId, _to: Recipient, _payload: &[u8]) {
        // No other client is reachable from here.
    }
}

/// Messages one connection handled and sent.
#[derive(Clone, Copy, Debug, Default)]
pub struct Served {
    /// Decoded and handled.
    pub messages_in: u64,
    /// Replies written to this client.
    pub messages_out: u64,
    /// Bytes read from it.
    pub bytes_in: u64,
    /// Bytes written to it (its replies; for the console).
    pub bytes_out: u64,
}

/// A connected client of a blocking model.
#[derive(Debug)]
pub struct Client {
    /// Its socket (blocking).
    pub stream: TcpStream,
    /// Its id, as handlers see it.
    pub id: ConnId,
    /// Its address.
    pub peer: PeerAddr,
}

/// Serves `client` until it leaves, the handler closes it, or `stop()` turns true. Its own
/// replies go out through `write_own` (the threads model shares the socket's write side
/// with other threads).
pub fn serve(
    client: Client,
    codec: Codec,
    config: &Limits,
    room: &mut dyn Room,
    write_own: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    stop: &dyn Fn() -> bool,
    timeline: Option<&Mutex<Timeline>>,
) -> io::Result<Served> {
    let Client { mut stream, id, peer } = client;
    let peer = &peer;
    // With --trace-file: this client's track, numbered by its id.
    let track = id.0 as u64;
    if let Some(timeline) = timeline {
        lock(timeline).name_track(track, &format!("conn {id} {peer}"));
    }
    stream.set_read_timeout(Some(STOP_CHECK))?;
    let mut served = Served::default();
    let mut decoder = codec.decoder();
    let mut input: Vec<u8> = Vec::new();
    let mut buffer = vec![0; READ_BUFFER];
    let mut outbox = Outbox::default();
    let mut replies = Vec::new();
    loop {
        let Some(read) = read_or_time_out(&mut stream, &mut buffer)? else {
            if stop() {
                return Ok(served);
            }
            continue;
        };
        let at_end = read == 0;
        served.bytes_in += read as u64;
        input.extend_from_slice(&buffer[..read]);
        let mut frames = decoder.frames(&input, config.max_frame);
        if at_end {
            frames = frames.to_the_end();
        }
        // The serve step, replies framed straight into one buffer, written once per read.
        outbox.frame_replies(Some(codec.into()));
        let mut counts = Counts { served: &mut served, limits: config, timeline, track };
        let mut flow = Flow::Next;
        room.with_handler(&mut |handler| {
            flow = serve::serve(handler, Peer { id, addr: peer }, &mut frames, &mut outbox, &mut counts);
        });
        let used = input.len() - frames.rest().len();
        outbox.frame_replies(None);
        served.messages_out += outbox.move_replies_to(&mut replies);
        let mut carrier =
            Own { codec, replies: &mut replies, room: &mut *room, sender: id, closing: false, sent: 0 };
        serve::carry_out(&outbox, id, &mut carrier);
        served.messages_out += carrier.sent;
        let closing = carrier.closing || flow == Flow::Stop;
        outbox.clear();
        input.drain(..used);
        served.bytes_out += replies.len() as u64;
        room.tally(&served);
        if !replies.is_empty() {
            write_own(&replies)?;
            replies.clear();
        }
        if closing || stop() {
            linger(&mut stream);
            return Ok(served);
        }
        if at_end {
            return Ok(served);
        }
    }
}

/// What a handler's intents mean for one blocking connection: its replies gather in one
/// buffer, written once per read; anything for others goes through its room. The file
/// handler and metrics need the reactor (refused at start), so those intents close.
struct Own<'a> {
    codec: Codec,
    replies: &'a mut Vec<u8>,
    room: &'a mut dyn Room,
    sender: ConnId,
    closing: bool,
    sent: u64,
}

impl Carrier for Own<'_> {
    fn reply(&mut self, payload: &[u8]) {
        self.codec.encode(payload, self.replies);
        self.sent += 1;
    }

    fn send_to(&mut self, to: ConnId, payload: &[u8]) {
        self.room.deliver(self.sender, Recipient::Conn(to), payload);
    }

    fn send_to_room(&mut self, except: ConnId, payload: &[u8]) {
        self.room.deliver(self.sender, Recipient::AllExcept(except), payload);
    }

    fn close(&mut self) {
        self.closing = true;
    }
}

/// What the serve step counts and records for one blocking connection.
struct Counts<'a> {
    served: &'a mut Served,
    limits: &'a Limits,
    timeline: Option<&'a Mutex<Timeline>>,
    track: u64,
}

impl Serving for Counts<'_> {
    fn work(&self) -> Duration {
        self.limits.work_per_message
    }

    fn received(&mut self) {
        self.served.messages_in += 1;
    }

    fn refused(&mut self, _error: &FrameError) {}

    fn timing(&self) -> bool {
        self.timeline.is_some()
    }

    fn handled(&mut self, started: Instant, length: usize) {
        if let Some(timeline) = self.timeline {
            lock(timeline).message(self.track, started, Instant::now(), length);
        }
    }
}

/// Sends FIN after the last reply and waits (briefly) for the client to close, reading and
/// dropping what it still sends: closing with unread input would reset the connection and
/// lose replies not yet delivered.
fn linger(stream: &mut TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + LINGER;
    let mut sink = [0; 4096];
    while Instant::now() < deadline {
        match read_or_time_out(stream, &mut sink) {
            Ok(Some(0)) | Err(_) => return,
            Ok(Some(_) | None) => {}
        }
    }
}

/// One read of a blocking socket that has a read timeout (`STOP_CHECK`), through the gate:
/// `Ok(None)` when the timeout passed with nothing to read, so that the caller can look
/// whether to stop before it reads again. Linux reports the timeout as `WouldBlock` (which
/// the gate turns into `None`); other systems may say `TimedOut`, named here.
fn read_or_time_out(stream: &mut TcpStream, buffer: &mut [u8]) -> io::Result<Option<usize>> {
    match gate(|| stream.read(buffer)) {
        Err(error) if error.kind() == io::ErrorKind::TimedOut => Ok(None),
        read => read,
    }
}

/// Writes all of `bytes` to a blocking socket, through the gate. A socket with a write
/// timeout (the threads model's writers to other clients) reports it as `WouldBlock`, which
/// stops `write_until_full` short: here that is an error, the client does not read.
pub fn write_all(mut stream: &TcpStream, bytes: &[u8]) -> io::Result<()> {
    let written = write_until_full(bytes, |rest| stream.write(rest))?;
    if written < bytes.len() {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "the client does not read"));
    }
    Ok(())
}
