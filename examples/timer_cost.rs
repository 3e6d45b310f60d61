//! What a timer costs on this machine: the CPU time of arming a `timerfd` at a deadline a
//! given time ahead, again and again. Far ahead a call costs little, and the nearer the
//! deadline the more it costs; with no lead the timer fires before the next call, so that
//! figure is the price of one firing. It explains the loader's CPU per message at a fixed
//! rate (docs/benchmarks.md, "How low the loader can go"): its pacer is such a timer, armed
//! for the next message due.
//!
//! Run: taskset -c 1 cargo run --release --example timer_cost

use std::time::Instant;

/// Calls per lead time.
const CALLS: u32 = 100_000;

fn main() {
    // SAFETY: timerfd_create takes no pointers; the result is checked.
    let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
    assert!(fd >= 0, "timerfd_create: {}", std::io::Error::last_os_error());
    let epoch = Instant::now();
    println!("lead time    CPU per arm (user + system)   wall per arm");
    for lead_ns in [0u64, 5_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000, 100_000_000] {
        let (cpu_before, wall_before) = (cpu_time_ns(), Instant::now());
        for _ in 0..CALLS {
            let deadline = monotonic_ns() + lead_ns;
            let spec = libc::itimerspec {
                it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
                it_value: libc::timespec {
                    tv_sec: (deadline / 1_000_000_000) as libc::time_t,
                    tv_nsec: (deadline % 1_000_000_000) as libc::c_long,
                },
            };
            // SAFETY: both pointers refer to live values for the duration of the call.
            let result =
                unsafe { libc::timerfd_settime(fd, libc::TFD_TIMER_ABSTIME, &spec, std::ptr::null_mut()) };
            assert_eq!(result, 0, "timerfd_settime: {}", std::io::Error::last_os_error());
        }
        let cpu = (cpu_time_ns() - cpu_before) as f64 / f64::from(CALLS) / 1000.0;
        let wall = wall_before.elapsed().as_nanos() as f64 / f64::from(CALLS) / 1000.0;
        println!("{:>7} µs   {cpu:>10.2} µs                  {wall:>8.2} µs", lead_ns / 1000);
    }
    eprintln!("({:.1} s)", epoch.elapsed().as_secs_f64());
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock the timer's deadline is on.
fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// This process's CPU time, user and system, in nanoseconds.
fn cpu_time_ns() -> u64 {
    clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a live timespec for the duration of the call.
    unsafe { libc::clock_gettime(clock, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}
