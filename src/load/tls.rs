//! The loader's TLS (`--tls`): a rustls client session on a non-blocking stream, behind the
//! loader socket's `Read` and `Write`, so every workload and codec runs over it unchanged.
//!
//! The session's records are written whenever the loader writes (the handshake's first,
//! then what it buffered), and read whenever it reads: a read drains the socket into the
//! session (to `WouldBlock`, or until a buffer's worth of plaintext is there), so a short
//! read still means "the socket is empty", as the engine assumes.

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::sys::socket::Stream;
use crate::sys::socket::gate;

/// How the loader trusts servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// Certificates signed by the CA (or the self-signed certificate) in this PEM file.
    Ca(std::path::PathBuf),
    /// Any certificate at all (`--insecure`): for self-signed test servers only.
    Anything,
}

/// The client settings for `trust`, or one line saying what is wrong.
pub fn client_config(trust: &Trust) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?;
    let config = match trust {
        Trust::Ca(path) => {
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|error| format!("cannot read --tls-ca {}: {error}", path.display()))?;
            for cert in certs {
                roots.add(cert).map_err(|error| format!("--tls-ca {}: {error}", path.display()))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Anything => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// A client session on `stream`, for the server called `name` (a host name or an IP
/// address, checked against its certificate).
pub fn session(config: &Arc<ClientConfig>, name: &str) -> io::Result<ClientConnection> {
    let name = ServerName::try_from(name.to_string())
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
    ClientConnection::new(config.clone(), name).map_err(io::Error::other)
}

/// A TLS stream: the socket and its session.
#[derive(Debug)]
pub struct TlsStream {
    /// The socket.
    pub stream: Stream,
    /// The session on it.
    pub session: Box<ClientConnection>,
}

impl TlsStream {
    /// Writes the records waiting; `Ok(false)` if the socket is full.
    fn write_records(&mut self) -> io::Result<bool> {
        while self.session.wants_write() {
            match gate(|| self.session.write_tls(&mut self.stream))? {
                Some(_) => {}
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Whether the handshake is done.
    pub fn is_ready(&self) -> bool {
        !self.session.is_handshaking()
    }

    /// Moves the handshake on: writes what it has to say, takes in what came (to
    /// `WouldBlock`); `Ok(false)` if the server closed.
    pub fn drive(&mut self) -> io::Result<bool> {
        self.write_records()?;
        loop {
            match gate(|| self.session.read_tls(&mut self.stream))? {
                Some(0) => return Ok(false),
                Some(_) => {
                    self.session
                        .process_new_packets()
                        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
                    self.write_records()?;
                }
                None => return Ok(true),
            }
        }
    }
}

/// A read returns the plaintext there is, pulling records from the socket until some comes
/// (or `WouldBlock`). It may return less than the socket holds: the engine reads a TLS
/// stream on to `WouldBlock` every time, never stopping at a short read.
impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // 0: the server's close_notify (a clean end); none: no plaintext yet.
            if let Some(n) = gate(|| self.session.reader().read(buf))? {
                return Ok(n);
            }
            if self.session.read_tls(&mut self.stream)? == 0 {
                return Ok(0);
            }
            self.session
                .process_new_packets()
                .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
            // The handshake's next message, or what was written before it ended.
            self.write_records()?;
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.write_records()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let taken = self.session.writer().write(buf)?;
        self.write_records()?;
        Ok(taken)
    }

    /// Writes the records a write took in but the socket would not take then: `WouldBlock`
    /// until it does (the engine flushes again on the next writable edge).
    fn flush(&mut self) -> io::Result<()> {
        if self.write_records()? { Ok(()) } else { Err(io::ErrorKind::WouldBlock.into()) }
    }
}

impl mio::event::Source for TlsStream {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interest: mio::Interest,
    ) -> io::Result<()> {
        self.stream.register(registry, token, interest)
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interest: mio::Interest,
    ) -> io::Result<()> {
        self.stream.reregister(registry, token, interest)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        self.stream.deregister(registry)
    }
}

/// `--insecure`: accepts any certificate (signatures are still checked, so the handshake
/// is a real one).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
