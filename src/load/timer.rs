//! A `timerfd`: a wakeup at an exact nanosecond deadline, as an event on the same
//! `mio::Poll` as the sockets. The loader has two: the pacer of an open-loop run, and the
//! alarm for its own deadlines.
//!
//! Pacing: `Poll::poll` rounds its timeout up to whole milliseconds (epoll's unit), so a
//! loader that paced sends with it would send up to a millisecond late and, measuring latency
//! from each message's scheduled time, blame the server for its own lateness. The timerfd
//! fires within microseconds of the deadline; what lateness remains is reported as schedule
//! lag.
//!
//! Deadlines: a timeout given to every `epoll_wait` arms a kernel timer on every call, which
//! on this VM is a trapped MSR write (4% of the loader's CPU at 3.7M msgs/s). An alarm armed
//! only when its deadline moves, with `epoll_wait` told to wait without one, costs nothing per
//! turn.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

/// A one-shot timer on `CLOCK_MONOTONIC`, re-armed for each deadline.
#[derive(Debug)]
pub struct Timer {
    fd: OwnedFd,
}

impl Timer {
    /// A disarmed timer, registered with `registry` under `token`.
    pub fn new(registry: &Registry, token: Token) -> io::Result<Timer> {
        // SAFETY: timerfd_create takes no pointers; the result is checked before use.
        let fd =
            unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        registry.register(&mut SourceFd(&fd.as_raw_fd()), token, Interest::READABLE)?;
        Ok(Timer { fd })
    }

    /// Fires once at `deadline_ns` on the monotonic clock (at once if it has passed).
    pub fn arm_at(&self, deadline_ns: u64) -> io::Result<()> {
        let deadline_ns = deadline_ns.max(1);
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec {
                tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: both pointers refer to live values for the duration of the call.
        let result = unsafe {
            libc::timerfd_settime(self.fd.as_raw_fd(), libc::TFD_TIMER_ABSTIME, &spec, std::ptr::null_mut())
        };
        if result != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Consumes the expiry, so the next one raises a new edge.
    pub fn clear(&self) {
        let mut expirations = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live 8-byte buffer; the result is ignored
        // because a spurious wakeup (EAGAIN) is harmless here.
        unsafe { libc::read(self.fd.as_raw_fd(), expirations.as_mut_ptr().cast(), expirations.len()) };
    }
}
