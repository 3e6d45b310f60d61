//! Child processes: the two system calls the worker supervisor needs that `std` does not
//! wrap.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// Makes the child `command` starts receive `signal` when its parent dies, so workers never
/// outlive their supervisor (`PR_SET_PDEATHSIG`).
pub fn signal_child_when_parent_dies(command: &mut Command, signal: i32) {
    // SAFETY: prctl is async-signal-safe, and the closure touches nothing but its own copy
    // of `signal`, as code between fork and exec must.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal) != 0 {
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
