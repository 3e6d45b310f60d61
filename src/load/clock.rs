//! The loader's clock: `CLOCK_MONOTONIC` in nanoseconds, as a plain `u64`.
//!
//! Plain numbers (not `Instant`) because send times travel inside broadcast payloads and are
//! compared with the pacer's `timerfd` deadlines, which use the same clock.

/// Nanoseconds on the system-wide monotonic clock.
pub fn now_ns() -> u64 {
    let mut time = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes into the timespec we pass, which lives for the call;
    // CLOCK_MONOTONIC is always available on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut time) };
    time.tv_sec as u64 * 1_000_000_000 + time.tv_nsec as u64
}
