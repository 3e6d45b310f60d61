//! The open-file limit (`RLIMIT_NOFILE`): every connection is a file descriptor, and the soft
//! limit is often 1024 while the hard limit allows far more. Binaries raise the soft limit to
//! the hard one at start, the way every high-connection server does.

use std::io;

/// The soft and hard open-file limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileLimit {
    /// The limit in force.
    pub soft: u64,
    /// The most the soft limit may be raised to without privileges.
    pub hard: u64,
}

/// The current open-file limits.
pub fn file_limit() -> io::Result<FileLimit> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes into the struct we pass, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(FileLimit { soft: limit.rlim_cur, hard: limit.rlim_max })
}

/// Raises the soft open-file limit to the hard limit; returns the limits before and after.
pub fn raise_file_limit() -> io::Result<(FileLimit, FileLimit)> {
    let before = file_limit()?;
    if before.soft < before.hard {
        let limit = libc::rlimit { rlim_cur: before.hard, rlim_max: before.hard };
        // SAFETY: setrlimit only reads the struct we pass, which lives for the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((before, file_limit()?))
}
