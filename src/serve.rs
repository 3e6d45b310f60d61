//! The serve step every server model shares: the messages a read holds, and what a handler's
//! intents mean. The reactor, its UDP endpoints, and the blocking models (`models/`) differ
//! in how they reach sockets and share the CPU, not in this.
//!
//! - [`messages`]: every complete message at the front of some input, in order, and at the
//!   end of the stream the last one the codec allows (or its error).
//! - [`carry_out`]: the one place a handler's intents are told apart; a server says what each
//!   means for it by implementing [`Carrier`].

use std::path::Path;

#[cfg(feature = "cli")]
use crate::codec::{Decoder, FrameError};
use crate::handlers::{ConnId, Intent, Outbox, Recipient};

/// What a server does with each kind of intent, for the message of one sender.
pub(crate) trait Carrier {
    /// `payload` (not framed yet) for the sender.
    fn reply(&mut self, payload: &[u8]);
    /// `payload` for another connection (which may have gone).
    fn send_to(&mut self, to: ConnId, payload: &[u8]);
    /// `payload` for every member of the sender's room but `except`.
    fn send_to_room(&mut self, except: ConnId, payload: &[u8]);
    /// Close the sender once its replies are written.
    fn close(&mut self);
    /// Send the sender `length` bytes of the file at `path` from `offset`. A server that
    /// cannot (no connection, or no way to stream a file) closes the sender: the reply
    /// before promised the bytes.
    fn send_file(&mut self, path: &Path, offset: u64, length: u64) {
        let _ = (path, offset, length);
        self.close();
    }
    /// Reply with the server's metrics. A server without them closes the sender.
    fn send_metrics(&mut self) {
        self.close();
    }
}

/// Carries out, in order, what the handler put in `outbox` for a message of `sender`.
pub(crate) fn carry_out(outbox: &Outbox, sender: ConnId, carrier: &mut impl Carrier) {
    for (intent, payload) in outbox.iter() {
        match intent {
            Intent::Send { to: Recipient::Sender, .. } => carrier.reply(payload),
            Intent::Send { to: Recipient::Conn(id), .. } if *id == sender => carrier.reply(payload),
            Intent::Send { to: Recipient::Conn(id), .. } => carrier.send_to(*id, payload),
            Intent::Send { to: Recipient::AllExcept(except), .. } => carrier.send_to_room(*except, payload),
            Intent::Close => carrier.close(),
            Intent::SendFile { path, offset, length } => carrier.send_file(path, *offset, *length),
            Intent::Metrics => carrier.send_metrics(),
        }
    }
}

/// Every complete message at the front of `input` with `decoder`, in order, each a message
/// or the error the server answers with `ERR ...`; with `at_end` (the peer closed), the
/// undecoded rest as a last message if the codec allows, or its error. `used` is set to the
/// bytes taken (the rest starts an incomplete message, to be presented again with the next
/// read's bytes). (The reactor's own loop decodes a read's messages with `Decoder::frames`,
/// which finds the line codec's newlines a block at a time, and keeps this only for
/// the blocking models.)
#[cfg(feature = "cli")]
pub(crate) fn messages<'a>(
    decoder: &mut Decoder,
    input: &'a [u8],
    at_end: bool,
    max_frame: usize,
    mut each: impl FnMut(Result<&'a [u8], FrameError>) -> Flow,
) -> usize {
    let mut rest = input;
    loop {
        let decoded = match decoder.decode(&mut rest, max_frame) {
            Ok(Some(message)) => Ok(message),
            Ok(None) if at_end && !rest.is_empty() => {
                let tail = std::mem::take(&mut rest);
                match decoder.finish(tail, max_frame) {
                    Ok(Some(message)) => Ok(message),
                    Ok(None) => break,
                    Err(error) => Err(error),
                }
            }
            Ok(None) => break,
            Err(error) => Err(error),
        };
        if each(decoded) == Flow::Stop {
            break;
        }
    }
    input.len() - rest.len()
}

/// Whether to go on to the next message.
#[cfg(feature = "cli")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Next, please.
    Next,
    /// Stop here (the connection closes).
    Stop,
}
