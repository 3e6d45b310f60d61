//! The transport layer of a connection: what turns the socket's bytes into the plaintext the
//! codec reads, and the plaintext the server writes into the socket's bytes.
//!
//! A connection is a stack, bottom up: the socket, the preamble (a PROXY header, read from
//! the socket's first bytes: `preamble.rs`), the transport (here), the protocol (the codec,
//! `codec/`), the handler. The reactor never asks which transport it holds: it asks what the
//! transport can do.
//!
//! - **Plain** passes bytes through: what the socket reads is the plaintext, and room lines
//!   and files may go to the socket straight from a shared buffer (`sendmsg`) or from the
//!   page cache (`sendfile`).
//! - **TLS** (`tls.rs`, feature `tls`): rustls, with a handshake; it transforms every byte.
//!
//! A transport that transforms bytes (TLS) has a handshake, keeps bytes of its own (records
//! not complete yet, plaintext not read yet, ciphertext not written yet), and gets the copying
//! path: room lines and file chunks go through its `send` like any reply, under the same
//! backpressure, and what waits inside it counts towards `--max-output`.

use std::io::{self, Write as _};

use crate::sys::socket::Stream;

#[cfg(feature = "tls")]
pub(crate) mod tls;

/// What a TLS listener's connections are made with: the server's certificate and key, and
/// its TLS settings (nothing, without the `tls` feature: no TLS listener can exist).
#[cfg(feature = "tls")]
pub(crate) type TlsConfig = std::sync::Arc<rustls::ServerConfig>;
/// See above.
#[cfg(not(feature = "tls"))]
pub(crate) type TlsConfig = std::convert::Infallible;

/// The TLS settings from a certificate chain and key in PEM files, or one line saying
/// what is wrong (which flag, which file, why).
pub(crate) fn load_tls(
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
) -> Result<TlsConfig, String> {
    let (Some(cert), Some(key)) = (cert, key) else {
        let missing = if cert.is_none() { "--tls-cert" } else { "--tls-key" };
        return Err(format!(
            "a tls:// listener needs {missing} (a PEM file): the server's certificate chain and its key"
        ));
    };
    #[cfg(feature = "tls")]
    return tls::load(cert, key);
    #[cfg(not(feature = "tls"))]
    {
        let _ = (cert, key);
        Err("tls:// listeners need the tls feature, which this build left out".to_string())
    }
}

/// Where the plaintext of bytes read from the socket is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Received {
    /// The bytes read are the plaintext.
    AsIs,
    /// The plaintext was appended to the buffer given (perhaps nothing yet).
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    Decoded,
}

/// A connection's transport. Plain costs nothing: a unit variant, and one branch per call.
#[derive(Debug, Default)]
pub(crate) enum Transport {
    /// Bytes as they are.
    #[default]
    Plain,
    /// TLS (boxed: a session is a few KiB, and most connections are plain).
    #[cfg(feature = "tls")]
    Tls(Box<tls::Tls>),
}

impl Transport {
    /// The transport of a connection accepted on a listener with `tls` settings (TLS), or
    /// without (plain).
    pub fn for_listener(tls: Option<&TlsConfig>) -> io::Result<Transport> {
        match tls {
            None => Ok(Transport::Plain),
            #[cfg(feature = "tls")]
            Some(config) => Ok(Transport::Tls(Box::new(tls::Tls::new(config.clone())?))),
            #[cfg(not(feature = "tls"))]
            Some(never) => match *never {},
        }
    }

    /// Whether its handshake, if it has one, is done: nothing above it is served before.
    #[inline]
    pub fn is_ready(&self) -> bool {
        match self {
            Transport::Plain => true,
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.is_ready(),
        }
    }

    /// Whether bytes may go to the socket as they are, from a buffer shared by a room's
    /// members or from a file (`sendmsg`, `sendfile`); otherwise they go through
    /// [`send`](Self::send), one connection at a time.
    #[inline]
    pub fn passes_bytes_through(&self) -> bool {
        match self {
            Transport::Plain => true,
            #[cfg(feature = "tls")]
            Transport::Tls(_) => false,
        }
    }

    /// Takes `raw`, bytes just read from the socket (after the preamble), and says where
    /// their plaintext is: `raw` itself for a plain transport; a transport that decrypts
    /// appends it to `plain`. Bytes of a record not complete yet stay inside the transport.
    #[inline]
    pub fn receive(&mut self, stream: &mut Stream, raw: &[u8], plain: &mut Vec<u8>) -> io::Result<Received> {
        match self {
            Transport::Plain => {
                let _ = (stream, raw, plain);
                Ok(Received::AsIs)
            }
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.receive(stream, raw, plain),
        }
    }

    /// Whether plaintext it decoded earlier still waits to be read: no readiness event will
    /// announce it (the socket has nothing new), so the reactor must come back by itself.
    #[inline]
    pub fn has_plaintext_waiting(&self) -> bool {
        match self {
            Transport::Plain => false,
            // Every record's plaintext comes out as it is decrypted (`tls.rs`).
            #[cfg(feature = "tls")]
            Transport::Tls(_) => false,
        }
    }

    /// Sends plaintext: returns how much of `bytes` it took (what it took but could not write
    /// yet waits inside it, see [`waiting`](Self::waiting)); `WouldBlock` when it takes
    /// nothing now.
    #[inline]
    pub fn send(&mut self, stream: &mut Stream, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain => stream.write(bytes),
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.send(stream, bytes),
        }
    }

    /// Writes what waits inside it (records built but not written); `Ok(true)` when nothing
    /// is left.
    #[inline]
    pub fn flush(&mut self, stream: &mut Stream) -> io::Result<bool> {
        match self {
            Transport::Plain => {
                let _ = stream;
                Ok(true)
            }
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.flush(stream),
        }
    }

    /// Bytes waiting inside it to be written: they count towards `--max-output` like the
    /// connection's own pending output.
    /// Drops the start of a record not complete yet (the connection reads nothing more: it
    /// is evicted, `--max-client-memory`); records waiting to be written stay.
    pub fn drop_input(&mut self) {
        #[cfg(feature = "tls")]
        if let Transport::Tls(tls) = self {
            tls.drop_input();
        }
    }

    /// Bytes it holds between reads (TLS: the start of a record not complete yet, records
    /// the socket did not take yet), counted towards `--max-client-memory`.
    #[inline]
    pub fn held(&self) -> usize {
        match self {
            Transport::Plain => 0,
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.held(),
        }
    }

    #[inline]
    pub fn waiting(&self) -> usize {
        match self {
            Transport::Plain => 0,
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.waiting(),
        }
    }

    /// Whether it needs the socket to turn writable (its handshake, or bytes waiting
    /// inside it), whatever the connection's own output.
    #[inline]
    pub fn wants_write(&self) -> bool {
        match self {
            Transport::Plain => false,
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.wants_write(),
        }
    }

    /// Ends the sending side: the transport's own goodbye if it has one (TLS's
    /// close_notify), then FIN.
    pub fn shutdown(&mut self, stream: &mut Stream) -> io::Result<()> {
        match self {
            Transport::Plain => stream.shutdown_write(),
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.shutdown(stream),
        }
    }

    /// Whether it is a transport with a handshake still under way (counted against the
    /// turn's handshake budget: a storm of new TLS connections must not starve the rest).
    #[inline]
    pub fn is_handshaking(&self) -> bool {
        !self.is_ready()
    }
}
