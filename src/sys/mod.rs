//! Everything that touches the operating system, in one place (as mio keeps `net/` and
//! `sys/`): addresses and the sockets bound to them, the non-blocking error kinds, and the
//! open-file limit. The server, the blocking models and the load generator all use these;
//! nothing else in the crate calls `libc` or builds a socket by hand.
//!
//! - [`address`]: listen and peer addresses, parsed and printed as users type them.
//! - `socket`: TCP and Unix listeners and streams behind one type each; UDP and
//!   `SO_REUSEPORT` binds; the one I/O gate (`gate`), naming `WouldBlock`, `Interrupted`
//!   and friends.
//! - `rlimit`: the open-file limit.
//! - `process`: a worker dies with its parent; signals to children.
//! - `scan`: `select(2)` and `poll(2)`, for the scanning models.
//! - `shared_memory`: memory a parent shares with its worker processes (their metrics).

pub(crate) mod address;
pub(crate) mod notify;
#[cfg(feature = "cli")]
pub(crate) mod process;
pub(crate) mod rlimit;
#[cfg(feature = "cli")]
pub(crate) mod scan;
pub(crate) mod shared_memory;
pub(crate) mod socket;

/// Nanoseconds on `CLOCK_MONOTONIC`, as a plain number: the same clock in every process of
/// the machine, so times logged by the server can be set against times a client wrote (the
/// loader's send times, the reach benchmark's), which `Instant` cannot show.
pub fn monotonic_ns() -> u64 {
    let mut time = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes into the timespec we pass, which lives for the call;
    // CLOCK_MONOTONIC is always available on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut time) };
    time.tv_sec as u64 * 1_000_000_000 + time.tv_nsec as u64
}

/// 64 random bits from the kernel (`/dev/urandom`), or, should that fail, from the clock and
/// the process id: enough to tell server processes apart, not for secrets.
pub(crate) fn random_u64() -> u64 {
    use std::io::Read as _;
    let mut bytes = [0u8; 8];
    let from_kernel = std::fs::File::open("/dev/urandom").and_then(|mut file| file.read_exact(&mut bytes));
    match from_kernel {
        Ok(()) => u64::from_ne_bytes(bytes),
        Err(_) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_nanos() as u64);
            nanos ^ (u64::from(std::process::id()) << 32)
        }
    }
}
