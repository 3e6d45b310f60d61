//! The TLS transport: rustls, driven without owning the socket (the shape of rustls's own
//! `tlsserver-mio` example). Bytes read from the socket go in with `read_tls` and
//! `process_new_packets`, and every record's plaintext comes straight out into the reactor's
//! plaintext buffer, so none waits inside for an event that will not come; plaintext to send
//! goes in through `writer()` a chunk at a time, and its records out with `write_tls`.
//!
//! Its handshake must finish before the connection is ready (no handler call, no room line
//! before). What waits inside it to be written counts towards `--max-output`: it takes
//! another chunk only once the last one's records are all written, so at most
//! [`CHUNK`] bytes wait here, and the rest waits as plaintext in the connection's output.
//!
//! Certificates and keys are read from PEM files ([`load`]); `SIGUSR1` reloads them for new
//! handshakes (`reactor/tls.rs`).

use std::io::{self, Read as _, Write as _};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};

use super::Received;
use crate::sys::nonblocking::gate;
use crate::sys::socket::Stream;

/// Plaintext taken into the session at a time: a few records' worth.
const CHUNK: usize = 64 * 1024;

/// One connection's TLS session.
#[derive(Debug)]
pub(crate) struct Tls {
    session: ServerConnection,
    /// Plaintext taken in whose records are not all written yet.
    waiting: usize,
}

impl Tls {
    /// A session that has not seen its ClientHello yet.
    pub fn new(config: Arc<ServerConfig>) -> io::Result<Tls> {
        let session = ServerConnection::new(config).map_err(io::Error::other)?;
        Ok(Tls { session, waiting: 0 })
    }

    /// Whether the handshake is done.
    pub fn is_ready(&self) -> bool {
        !self.session.is_handshaking()
    }

    /// Decrypts `raw` into `plain`. A TLS error (plaintext on a TLS port, a truncated or
    /// garbled ClientHello) is fatal: the alert rustls queues is written, best effort, and
    /// the error returned (the connection then closes).
    pub fn receive(
        &mut self,
        stream: &mut Stream,
        mut raw: &[u8],
        plain: &mut Vec<u8>,
    ) -> io::Result<Received> {
        while !raw.is_empty() {
            if self.session.read_tls(&mut raw)? == 0 {
                break;
            }
            let state = match self.session.process_new_packets() {
                Ok(state) => state,
                Err(error) => {
                    let _ = self.flush(stream);
                    return Err(io::Error::new(io::ErrorKind::InvalidData, error));
                }
            };
            let ready = state.plaintext_bytes_to_read();
            if ready > 0 {
                let start = plain.len();
                plain.resize(start + ready, 0);
                self.session.reader().read_exact(&mut plain[start..])?;
            }
        }
        Ok(Received::Decoded)
    }

    /// Encrypts what it can of `bytes` and writes the records; `WouldBlock` while records
    /// of an earlier chunk are still waiting for the socket.
    pub fn send(&mut self, stream: &mut Stream, bytes: &[u8]) -> io::Result<usize> {
        if !self.flush(stream)? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let taken = self.session.writer().write(&bytes[..bytes.len().min(CHUNK)])?;
        self.waiting = taken;
        self.flush(stream)?;
        Ok(taken)
    }

    /// Writes the records waiting; `Ok(true)` when none is left.
    pub fn flush(&mut self, stream: &mut Stream) -> io::Result<bool> {
        while self.session.wants_write() {
            match gate(|| self.session.write_tls(stream))? {
                Some(0) => return Err(io::ErrorKind::WriteZero.into()),
                Some(_) => {}
                None => return Ok(false),
            }
        }
        self.waiting = 0;
        Ok(true)
    }

    /// Plaintext bytes whose records wait to be written.
    pub fn waiting(&self) -> usize {
        if self.session.wants_write() { self.waiting.max(1) } else { 0 }
    }

    /// Whether records wait to be written (the handshake's, or data's).
    pub fn wants_write(&self) -> bool {
        self.session.wants_write()
    }

    /// Says goodbye (close_notify), then FIN.
    pub fn shutdown(&mut self, stream: &mut Stream) -> io::Result<()> {
        self.session.send_close_notify();
        let _ = self.flush(stream);
        stream.shutdown_write()
    }
}

/// A server configuration from a certificate chain and its key, PEM files: TLS 1.2 and 1.3,
/// ECDSA, Ed25519 or RSA keys. An error says which file, and why, in one line.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let show = |path: &Path| path.display().to_string().escape_debug().to_string();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|error| format!("cannot read --tls-cert {}: {error}", show(cert)))?;
    if certs.is_empty() {
        return Err(format!("cannot read --tls-cert {}: no certificate in it", show(cert)));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|error| format!("cannot read --tls-key {}: {error}", show(key)))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // with_single_cert checks that the key is the certificate's.
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|error| format!("--tls-cert and --tls-key do not go together: {error}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
