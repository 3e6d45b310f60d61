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

/// The one gate every non-blocking read and write goes through, in the spirit of mio's
/// `IoSource::do_io`: runs `op`, again if a signal interrupted it, and turns `WouldBlock`
/// into `Ok(None)`, "not now", so that callers see only results and real errors.
#[inline]
pub fn gate<T>(mut op: impl FnMut() -> io::Result<T>) -> io::Result<Option<T>> {
    loop {
        match op() {
            Ok(done) => return Ok(Some(done)),
            Err(error) if would_block(&error) => return Ok(None),
            Err(error) if interrupted(&error) => {}
            Err(error) => return Err(error),
        }
    }
}

/// Writes with `write` (given the bytes not written yet) until all of `bytes` is written or
/// the socket is full; returns how many were written. A write of zero bytes is an error:
/// the socket will take nothing more, ever.
#[inline]
pub fn write_until_full(
    bytes: &[u8],
    mut write: impl FnMut(&[u8]) -> io::Result<usize>,
) -> io::Result<usize> {
    let mut written = 0;
    while written < bytes.len() {
        match gate(|| write(&bytes[written..]))? {
            Some(0) => return Err(io::ErrorKind::WriteZero.into()),
            Some(n) => written += n,
            None => break,
        }
    }
    Ok(written)
}
