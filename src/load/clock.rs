//! The loader's clock: `CLOCK_MONOTONIC` in nanoseconds, as a plain `u64`.
//!
//! Plain numbers (not `Instant`) because send times travel inside broadcast payloads and are
//! compared with the pacer's `timerfd` deadlines, which use the same clock.

/// Nanoseconds on the system-wide monotonic clock.
pub fn now_ns() -> u64 {
    crate::sys::monotonic_ns()
}
