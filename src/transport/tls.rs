//! The TLS transport: rustls's unbuffered API, so the session holds no buffer of its own. An
//! idle TLS connection keeps its keys and state (about 3 KiB) and nothing else: the bytes of a
//! record not complete yet, and records the socket would not take yet, are the only ones kept
//! between reads, and only while there are some. (The buffered `ServerConnection`, the shape
//! of rustls's `tlsserver-mio` example, keeps a 4 KiB read buffer per connection for good.)
//!
//! Bytes read from the socket are decrypted in a per-thread scratch buffer, and every record's
//! plaintext comes straight out into the reactor's plaintext buffer, so none waits inside for
//! an event that will not come. Plaintext to send is encrypted into a scratch buffer a chunk
//! at a time and written at once; only what the socket does not take waits in the session.
//!
//! Its handshake must finish before the connection is ready (no handler call, no room line
//! before). What waits inside it to be written counts towards `--max-output`: it takes
//! another chunk only once the last one's records are all written, so at most [`CHUNK`]
//! bytes' records wait here, and the rest waits as plaintext in the connection's output.
//!
//! Certificates and keys are read from PEM files ([`load`]); `SIGUSR1` reloads them for new
//! handshakes (`reactor/tls.rs`).

use std::cell::Cell;
use std::io::{self, Write as _};
use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, InsufficientSizeError};

use super::Received;
use crate::sys::socket::Stream;
use crate::sys::socket::write_until_full;

/// Plaintext taken into the session at a time: a few records' worth.
const CHUNK: usize = 64 * 1024;

/// A scratch buffer that grew past this is let go rather than kept for the next call.
const SCRATCH_KEPT: usize = 256 * 1024;

thread_local! {
    /// Where records are decrypted and encrypted: one per thread, not one per connection.
    static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Runs `work` with the thread's scratch buffer, empty.
fn with_scratch<R>(work: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    let mut scratch = SCRATCH.take();
    scratch.clear();
    let result = work(&mut scratch);
    if scratch.capacity() <= SCRATCH_KEPT {
        SCRATCH.set(scratch);
    }
    result
}

/// What a drive of the session should do once the handshake lets it send.
enum Then<'a> {
    /// Nothing: take in what came, answer the handshake.
    Nothing,
    /// Encrypt this plaintext; the drive returns how much it took.
    Encrypt(&'a [u8]),
    /// Encrypt a close_notify alert.
    CloseNotify,
}

/// One connection's TLS session.
pub(crate) struct Tls {
    session: UnbufferedServerConnection,
    /// The start of a record not complete yet (empty, and unallocated, between records).
    incoming: Vec<u8>,
    /// Records the socket did not take yet (empty, and unallocated, once written).
    outgoing: Vec<u8>,
    /// How much of `outgoing` is written.
    written: usize,
    /// Plaintext taken in whose records are not all written yet.
    waiting: usize,
    /// The handshake is done.
    ready: bool,
    /// The client said close_notify: what it sends after is ignored.
    peer_closed: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("incoming", &self.incoming.len())
            .field("outgoing", &(self.outgoing.len() - self.written))
            .field("ready", &self.ready)
            .field("peer_closed", &self.peer_closed)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Drops the start of a record not complete yet: nothing more is read.
    pub fn drop_input(&mut self) {
        self.incoming = Vec::new();
    }

    /// Bytes it holds between reads: a record not complete yet, records not written yet.
    pub fn held(&self) -> usize {
        self.incoming.capacity() + self.outgoing.capacity()
    }

    /// A session that has not seen its ClientHello yet.
    pub fn new(config: Arc<ServerConfig>) -> io::Result<Tls> {
        let session = UnbufferedServerConnection::new(config).map_err(io::Error::other)?;
        Ok(Tls {
            session,
            incoming: Vec::new(),
            outgoing: Vec::new(),
            written: 0,
            waiting: 0,
            ready: false,
            peer_closed: false,
        })
    }

    /// Whether the handshake is done.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Decrypts `raw` into `plain`. A TLS error (plaintext on a TLS port, a truncated or
    /// garbled ClientHello) is fatal: the alert rustls has for it is written, best effort,
    /// and the error returned (the connection then closes).
    pub fn receive(&mut self, stream: &mut Stream, raw: &[u8], plain: &mut Vec<u8>) -> io::Result<Received> {
        if self.peer_closed {
            return Ok(Received::Decoded);
        }
        let result = with_scratch(|input| {
            // The start of a record kept from the last read, then what came now.
            input.extend_from_slice(&self.incoming);
            input.extend_from_slice(raw);
            let mut records = std::mem::take(&mut self.outgoing);
            let result = self.drive(input, plain, &mut records, Then::Nothing);
            self.outgoing = records;
            let left = result.as_ref().map_or(0, |&(_, left)| left);
            self.incoming = if self.peer_closed { Vec::new() } else { input[input.len() - left..].to_vec() };
            result
        });
        if let Err(error) = result {
            // With the alert rustls had for it, if any.
            let _ = self.flush(stream);
            return Err(io::Error::new(io::ErrorKind::InvalidData, error));
        }
        if !self.outgoing.is_empty() {
            // The handshake's answer, or a session ticket: written now.
            self.flush(stream)?;
        }
        Ok(Received::Decoded)
    }

    /// Moves the session on over `input` (decrypted in place), appending plaintext to
    /// `plain` and records to `records`, until it waits for more bytes or may send; then
    /// does `then`. Returns how much plaintext `then` took, and how many bytes at the end of
    /// `input` it left (the start of a record not complete yet).
    fn drive(
        &mut self,
        input: &mut [u8],
        plain: &mut Vec<u8>,
        records: &mut Vec<u8>,
        then: Then<'_>,
    ) -> Result<(usize, usize), rustls::Error> {
        let mut start = 0;
        loop {
            let status = self.session.process_tls_records(&mut input[start..]);
            let mut discard = status.discard;
            let mut done = None;
            let state = match status.state {
                Ok(state) => state,
                Err(error) => {
                    start += discard;
                    self.take_alert(&mut input[start..], records);
                    return Err(error);
                }
            };
            match state {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record?;
                        discard += record.discard;
                        plain.extend_from_slice(record.payload);
                    }
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    grow_into(records, 512, |room| match encode.encode(room) {
                        Ok(written) => Ok(written),
                        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                            Err(required_size)
                        }
                        Err(EncodeError::AlreadyEncoded) => Ok(0),
                    })?;
                }
                // Records are written in order from `outgoing` by `flush`.
                ConnectionState::TransmitTlsData(transmit) => transmit.done(),
                ConnectionState::WriteTraffic(mut traffic) => {
                    self.ready = true;
                    done = Some(match then {
                        Then::Nothing => 0,
                        Then::Encrypt(bytes) => {
                            let bytes = &bytes[..bytes.len().min(CHUNK)];
                            let room = bytes.len() + 64 + bytes.len() / 16;
                            grow_into(records, room, |room| encrypted(traffic.encrypt(bytes, room)))?;
                            bytes.len()
                        }
                        Then::CloseNotify => {
                            grow_into(records, 64, |room| encrypted(traffic.queue_close_notify(room)))?;
                            0
                        }
                    });
                }
                ConnectionState::PeerClosed | ConnectionState::Closed => {
                    self.peer_closed = true;
                    discard = input.len() - start;
                    done = Some(0);
                }
                // More bytes needed (early data is never accepted: max_early_data_size is 0).
                _ => done = Some(0),
            }
            // Discarded before the next call, as rustls requires: the next call starts past it.
            start += discard;
            if let Some(taken) = done {
                return Ok((taken, input.len() - start));
            }
        }
    }

    /// After an error: the alert rustls queued for it, if any, into `records`.
    fn take_alert(&mut self, input: &mut [u8], records: &mut Vec<u8>) {
        let status = self.session.process_tls_records(input);
        if let Ok(ConnectionState::EncodeTlsData(mut encode)) = status.state {
            let _ = grow_into(records, 64, |room| match encode.encode(room) {
                Ok(written) => Ok(written),
                Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                    Err(required_size)
                }
                Err(EncodeError::AlreadyEncoded) => Ok(0),
            });
        }
    }

    /// Drives the session over the start of a record kept from the last read (a handshake
    /// message may be part-way through it: the session must see the same bytes again), then
    /// does `then`, its records appended to `records`.
    fn drive_kept(&mut self, records: &mut Vec<u8>, then: Then<'_>) -> Result<usize, rustls::Error> {
        let mut input = std::mem::take(&mut self.incoming);
        let result = self.drive(&mut input, &mut Vec::new(), records, then);
        if let Ok((_, left)) = result {
            input.drain(..input.len() - left);
        }
        self.incoming = input;
        result.map(|(taken, _)| taken)
    }

    /// Encrypts what it can of `bytes` and writes the records; `WouldBlock` while records
    /// of an earlier chunk are still waiting for the socket.
    pub fn send(&mut self, stream: &mut Stream, bytes: &[u8]) -> io::Result<usize> {
        if bytes.is_empty() {
            return Ok(0);
        }
        if !self.flush(stream)? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        // Encrypted in the thread's scratch buffer and written from there: only what the
        // socket does not take is kept.
        with_scratch(|records| {
            let taken = self
                .drive_kept(records, Then::Encrypt(bytes))
                .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
            let written = write_until_full(records, |bytes| stream.write(bytes))?;
            if written < records.len() {
                self.outgoing.extend_from_slice(&records[written..]);
                self.waiting = taken;
            }
            Ok(taken)
        })
    }

    /// Writes the records waiting; `Ok(true)` when none is left.
    pub fn flush(&mut self, stream: &mut Stream) -> io::Result<bool> {
        self.written += write_until_full(&self.outgoing[self.written..], |bytes| stream.write(bytes))?;
        if self.written < self.outgoing.len() {
            return Ok(false);
        }
        // All written: an idle connection keeps no buffer.
        self.outgoing = Vec::new();
        self.written = 0;
        self.waiting = 0;
        Ok(true)
    }

    /// Plaintext bytes whose records wait to be written.
    pub fn waiting(&self) -> usize {
        if self.wants_write() { self.waiting.max(1) } else { 0 }
    }

    /// Whether records wait to be written (the handshake's, or data's).
    pub fn wants_write(&self) -> bool {
        self.written < self.outgoing.len()
    }

    /// Says goodbye (close_notify, once the handshake is done), then FIN.
    pub fn shutdown(&mut self, stream: &mut Stream) -> io::Result<()> {
        if self.ready {
            let mut records = std::mem::take(&mut self.outgoing);
            let _ = self.drive_kept(&mut records, Then::CloseNotify);
            self.outgoing = records;
        }
        let _ = self.flush(stream);
        stream.shutdown_write()
    }
}

/// Appends to `buffer` what `write` puts into the room it is given, `room` bytes to start
/// with, more if it says it needs more (`Err(needed)`).
fn grow_into(
    buffer: &mut Vec<u8>,
    room: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, usize>,
) -> Result<(), rustls::Error> {
    let start = buffer.len();
    let mut room = room;
    loop {
        buffer.resize(start + room, 0);
        match write(&mut buffer[start..]) {
            Ok(written) => {
                buffer.truncate(start + written);
                return Ok(());
            }
            Err(needed) if needed > room => room = needed,
            Err(needed) => {
                buffer.truncate(start);
                return Err(rustls::Error::General(format!(
                    "TLS wanted {needed} bytes of room and had {room}"
                )));
            }
        }
    }
}

/// An encryption's outcome as [`grow_into`] takes it.
fn encrypted(result: Result<usize, EncryptError>) -> Result<usize, usize> {
    match result {
        Ok(written) => Ok(written),
        Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => Err(required_size),
        // The keys are used up (2^64 records): nothing more can be sent on this session.
        Err(_) => Err(0),
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

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read as _, Write as _};

    use super::*;

    /// A server configuration for a fresh self-signed certificate, and a client trusting it.
    fn configs() -> (Arc<ServerConfig>, Arc<rustls::ClientConfig>) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert = certified.cert.der().clone();
        let key = PrivateKeyDer::try_from(certified.signing_key.serialize_der()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    /// Everything the server wrote so far, into the client; returns the plaintext it gave.
    fn client_reads(client: &mut rustls::ClientConnection, socket: &mut mio::net::UnixStream) -> Vec<u8> {
        let mut buffer = vec![0; 64 * 1024];
        let mut plain = Vec::new();
        loop {
            match socket.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => {
                    let mut read = &buffer[..n];
                    while !read.is_empty() {
                        client.read_tls(&mut read).unwrap();
                        client.process_new_packets().unwrap();
                        let _ = client.reader().read_to_end(&mut plain);
                    }
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                Err(error) => panic!("{error}"),
            }
        }
        plain
    }

    /// Records cut anywhere (here: fed one byte at a time) are put together, the handshake's
    /// among them; a reply the socket cannot take at once waits, is counted, and is written
    /// in order; and an idle session keeps no buffer.
    #[test]
    fn records_cut_anywhere_and_a_full_socket() {
        let (server_config, client_config) = configs();
        let (server_end, mut client_end) = mio::net::UnixStream::pair().unwrap();
        let mut stream = Stream::Unix(server_end);
        let mut tls = Tls::new(server_config).unwrap();
        let mut client =
            rustls::ClientConnection::new(client_config, "localhost".try_into().unwrap()).unwrap();
        client.writer().write_all(b"hello\n").unwrap();
        let mut plain = Vec::new();
        for _ in 0..10 {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            for byte in wire.chunks(1) {
                tls.receive(&mut stream, byte, &mut plain).unwrap();
            }
            client_reads(&mut client, &mut client_end);
            if !plain.is_empty() {
                break;
            }
        }
        assert!(tls.is_ready());
        assert_eq!(plain, b"hello\n");
        assert_eq!((tls.incoming.capacity(), tls.outgoing.capacity()), (0, 0), "idle: no buffer");

        // 4 MiB: more than the socket takes at once.
        let big: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
        let (mut sent, mut got) = (0, Vec::new());
        // Until the socket is full: then records wait in the session, counted.
        loop {
            match tls.send(&mut stream, &big[sent..]) {
                Ok(taken) => sent += taken,
                Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                Err(error) => panic!("{error}"),
            }
            assert!(sent < big.len(), "4 MiB did not fill the socket");
        }
        assert!(tls.waiting() > 0 && tls.wants_write());
        while got.len() < big.len() {
            if sent < big.len() {
                match tls.send(&mut stream, &big[sent..]) {
                    Ok(taken) => sent += taken,
                    Err(error) if error.kind() == ErrorKind::WouldBlock => {}
                    Err(error) => panic!("{error}"),
                }
            } else {
                tls.flush(&mut stream).unwrap();
            }
            got.extend(client_reads(&mut client, &mut client_end));
        }
        assert!(got == big, "every byte, in order");
        assert!(tls.flush(&mut stream).unwrap());
        assert_eq!((tls.waiting(), tls.outgoing.capacity()), (0, 0));
    }

    /// Bytes that are not TLS fail the session with an alert written to the client.
    #[test]
    fn not_tls_is_an_error_with_an_alert() {
        let (server_config, _) = configs();
        let (server_end, mut client_end) = mio::net::UnixStream::pair().unwrap();
        let mut stream = Stream::Unix(server_end);
        let mut tls = Tls::new(server_config).unwrap();
        let error = tls.receive(&mut stream, b"GET / HTTP/1.1\r\n\r\n", &mut Vec::new()).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidData);
        let mut alert = [0; 16];
        let n = client_end.read(&mut alert).unwrap();
        assert_eq!(&alert[..3], [21, 3, 3], "an alert record: {:?}", &alert[..n]);
    }
}
