//! Telling a supervisor how the server is doing, the systemd way (`sd_notify`): when the
//! environment names a `NOTIFY_SOCKET` (a `Type=notify` service), one datagram with
//! `READY=1` once every listener is up, and `STOPPING=1` when the drain begins. Without it,
//! nothing is sent. A few lines, not a crate: the protocol is one datagram to a Unix socket.

use std::os::unix::net::UnixDatagram;

/// The environment variable that names the supervisor's socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `state` (e.g. `READY=1`) to the supervisor, if there is one; failures are logged
/// and otherwise ignored: the server runs the same either way.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os(NOTIFY_SOCKET) else { return };
    let sent = UnixDatagram::unbound().and_then(|socket| {
        let path = path.as_encoded_bytes();
        match path.strip_prefix(b"@") {
            // An abstract socket (Linux): '@' stands for the leading NUL.
            Some(name) => {
                use std::os::linux::net::SocketAddrExt as _;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(state.as_bytes(), &addr)
            }
            None => {
                use std::os::unix::ffi::OsStrExt as _;
                socket.send_to(state.as_bytes(), std::ffi::OsStr::from_bytes(path))
            }
        }
    });
    match sent {
        Ok(_) => log::debug!("notified the supervisor; state={state}"),
        Err(error) => log::warn!("cannot notify the supervisor; state={state} error={error}"),
    }
}
