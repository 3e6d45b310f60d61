//! `--work-us`: CPU work per message, to make handler cost visible.
//!
//! Busy work, not sleep: a sleeping handler would hand the CPU to other threads and show
//! nothing about a single thread's limits. In the reactor every client waits while one
//! message's work runs (head-of-line blocking); with a thread per connection the kernel can
//! at least share the CPUs.

use std::time::{Duration, Instant};

/// Spins for `work`.
pub fn busy_work(work: Duration) {
    if work.is_zero() {
        return;
    }
    let start = Instant::now();
    while start.elapsed() < work {
        std::hint::spin_loop();
    }
}
