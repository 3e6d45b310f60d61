//! Certificates for the TLS tests, made by the tests (rcgen), never committed: a
//! self-signed certificate for `localhost` and 127.0.0.1, and its key, as PEM files in a
//! directory of the test's own.

use std::path::{Path, PathBuf};

/// A certificate and its key, written as PEM files.
pub struct TlsFiles {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// A fresh pair under a new directory named after `name`.
    pub fn new(name: &str) -> TlsFiles {
        let dir = std::env::temp_dir().join(format!("evloop-tls-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = TlsFiles { cert: dir.join("cert.pem"), key: dir.join("key.pem"), dir };
        files.write_new_pair(&files.cert, &files.key);
        files
    }

    /// Writes a new certificate and key (ECDSA P-256) to `cert` and `key`.
    pub fn write_new_pair(&self, cert: &Path, key: &Path) {
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let certified = rcgen::generate_simple_self_signed(names).expect("a certificate");
        std::fs::write(cert, certified.cert.pem()).unwrap();
        std::fs::write(key, certified.signing_key.serialize_pem()).unwrap();
    }

    /// `--tls-cert CERT --tls-key KEY`.
    pub fn args(&self) -> [String; 4] {
        [
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }

    /// The server configuration with these files.
    pub fn config(&self) -> evloop::ServerConfig {
        let mut config = evloop::ServerConfig::default();
        config.tls_cert = Some(self.cert.clone());
        config.tls_key = Some(self.key.clone());
        config
    }
}

impl Drop for TlsFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
