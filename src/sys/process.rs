//! Child processes: the two system calls the worker supervisor needs that `std` does not
//! wrap.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// Makes the child that `command` starts a worker of this process: it gets `signal` when its
/// parent dies (`PR_SET_PDEATHSIG`), so workers never outlive their supervisor, and it is put
/// in a process group of its own, so the signals a terminal sends its foreground group
/// (Ctrl-C, SIGHUP when it closes) reach the supervisor alone, which forwards exactly one
/// stop request (a second one would cut the workers' drain short).
pub fn make_worker(command: &mut Command, signal: i32) {
    // SAFETY: prctl and setpgid are async-signal-safe, and the closure touches nothing but
    // its own copy of `signal`, as code between fork and exec must.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal) != 0 || libc::setpgid(0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Sends `signal` to our own child.
pub fn send_signal(child: &Child, signal: i32) {
    // SAFETY: kill() on our own child's PID has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, signal) };
}
