//! The reactor's side of TLS: certificate renewal without dropping anyone. `SIGUSR1` reads
//! the certificate chain and key again (`--tls-cert`, `--tls-key`); new handshakes use the
//! new pair, connections already up keep theirs. A pair that cannot be read, or whose key is
//! not the certificate's, is refused with one log line and the old pair kept. (SIGHUP
//! already means "drain and stop" here, for a terminal that closes, so renewal has a signal
//! of its own.)

use log::{error, info};

use super::Reactor;
use crate::transport::load_tls;

impl Reactor {
    /// `SIGUSR1`: the TLS certificate and key, read again.
    pub(super) fn reload_tls(&mut self) {
        if self.sources.tls.is_none() {
            info!("SIGUSR1 ignored: no tls:// listener");
            return;
        }
        let (cert, key) = &self.sources.tls_files;
        match load_tls(cert.as_deref(), key.as_deref()) {
            Ok(config) => {
                self.sources.tls = Some(config);
                self.telemetry.stats.tls_reloads += 1;
                info!("TLS certificate reloaded; new handshakes use it");
            }
            Err(reason) => error!("TLS certificate not reloaded, the old one stays; error={reason}"),
        }
    }
}
