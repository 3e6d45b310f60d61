//! `select(2)` and `poll(2)`: the readiness calls of the classic course, for the scanning
//! server models. Both take the whole interest set on every call and hand back a flag per
//! descriptor, so their cost grows with every connection, busy or idle; `epoll` (what the
//! reactor uses through mio) keeps the set in the kernel and reports only the ready ones.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// The most descriptors `select` can watch: an `fd_set` is a bitmap of this many bits, and
/// setting a bit at or past it writes outside the set (memory corruption, not an error).
pub const FD_SETSIZE: usize = libc::FD_SETSIZE;

/// One descriptor's interest and, after a wait, its readiness.
#[derive(Clone, Copy, Debug)]
pub struct Watch {
    pub fd: RawFd,
    pub read: bool,
    pub write: bool,
    pub readable: bool,
    pub writable: bool,
}

impl Watch {
    /// Watches `fd` for reading and/or writing.
    pub fn new(fd: RawFd, read: bool, write: bool) -> Watch {
        Watch { fd, read, write, readable: false, writable: false }
    }
}

/// Waits with `select(2)` until a watched descriptor is ready or `timeout` passes; sets each
/// one's readiness. Every descriptor must be below [`FD_SETSIZE`] (checked: an error).
pub fn select(watches: &mut [Watch], timeout: Duration) -> io::Result<usize> {
    // SAFETY: an all-zero fd_set is a valid empty set (what FD_ZERO produces).
    let (mut reads, mut writes): (libc::fd_set, libc::fd_set) =
        unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    let mut highest = -1;
    for watch in watches.iter() {
        if watch.fd < 0 || watch.fd as usize >= FD_SETSIZE {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "descriptor past FD_SETSIZE"));
        }
        // SAFETY: the descriptor is within the set's bounds (checked above).
        unsafe {
            if watch.read {
                libc::FD_SET(watch.fd, &mut reads);
            }
            if watch.write {
                libc::FD_SET(watch.fd, &mut writes);
            }
        }
        highest = highest.max(watch.fd);
    }
    let mut wait = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: the sets and the timeval live for the call; nfds covers every descriptor set.
    let ready =
        unsafe { libc::select(highest + 1, &mut reads, &mut writes, std::ptr::null_mut(), &mut wait) };
    if ready < 0 {
        return Err(io::Error::last_os_error());
    }
    for watch in watches.iter_mut() {
        // SAFETY: the descriptor is within the set's bounds (checked above).
        unsafe {
            watch.readable = watch.read && libc::FD_ISSET(watch.fd, &reads);
            watch.writable = watch.write && libc::FD_ISSET(watch.fd, &writes);
        }
    }
    Ok(ready as usize)
}

/// Waits with `poll(2)` until a watched descriptor is ready or `timeout` passes; sets each
/// one's readiness (an error or hang-up counts as readable, so the read finds it).
pub fn poll(watches: &mut [Watch], scratch: &mut Vec<libc::pollfd>, timeout: Duration) -> io::Result<usize> {
    scratch.clear();
    scratch.extend(watches.iter().map(|watch| libc::pollfd {
        fd: watch.fd,
        events: (if watch.read { libc::POLLIN } else { 0 }) | (if watch.write { libc::POLLOUT } else { 0 }),
        revents: 0,
    }));
    let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: the array lives for the call and its length is what we pass.
    let ready = unsafe { libc::poll(scratch.as_mut_ptr(), scratch.len() as libc::nfds_t, millis) };
    if ready < 0 {
        return Err(io::Error::last_os_error());
    }
    for (watch, polled) in watches.iter_mut().zip(scratch.iter()) {
        let trouble = polled.revents & (libc::POLLERR | libc::POLLHUP) != 0;
        watch.readable = watch.read && (polled.revents & libc::POLLIN != 0 || trouble);
        watch.writable = watch.write && (polled.revents & libc::POLLOUT != 0 || trouble);
    }
    Ok(ready as usize)
}
