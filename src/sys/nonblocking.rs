//! How non-blocking I/O says "not now". `WouldBlock` and `Interrupted` are control flow, not
//! failures; these helpers name them so the reactor reads as what it means.

use std::io;

/// The operation would block: nothing more to do until the poller reports readiness again.
pub fn would_block(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::WouldBlock
}

/// A signal arrived during the system call: simply try again.
pub fn interrupted(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::Interrupted
}

/// The process or the system is out of file descriptors (EMFILE, ENFILE), or the kernel out
/// of socket memory (ENOBUFS, ENOMEM). `accept` cannot succeed until something is closed, so
/// the caller must back off rather than retry at once.
pub fn out_of_resources(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

/// A client gave up between the kernel queueing its connection and our `accept`: that client
/// is gone, the listener is fine, carry on accepting.
pub fn client_gave_up(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::ECONNABORTED | libc::EPROTO | libc::ECONNRESET | libc::EPERM))
}
