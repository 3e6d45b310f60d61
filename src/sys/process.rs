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

/// What `fork` returned, on each side.
pub enum Forked {
    /// In the parent: the child's PID.
    Parent(i32),
    /// In the child.
    Child,
}

/// Forks this process; the child then lives on its copy of everything, with one thread.
/// A lock another thread held at the fork stays held in the child: the fork model's parent
/// has one thread but for the console's, when there is a console listener (glibc's malloc
/// is made fork-safe by glibc itself; a child that logs while the console thread held
/// stderr's lock at that instant would wait forever: docs/console.md says so).
pub fn fork() -> io::Result<Forked> {
    // SAFETY: fork has no memory-safety preconditions; what the child may not touch is
    // said above.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// In a forked child: dies with the parent (`PR_SET_PDEATHSIG`, and at once if the parent is
/// already gone), and takes the default action again for the stop signals, whose handlers
/// it inherited from the parent but would never run.
pub fn become_child_of(parent: i32, signal: i32) {
    // SAFETY: prctl, getppid and signal have no memory-safety preconditions; SIG_DFL is a
    // valid disposition for these signals.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, signal);
        if libc::getppid() != parent {
            libc::_exit(0);
        }
        for stop in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::signal(stop, libc::SIG_DFL);
        }
    }
}

/// Ends a forked child at once, without running the parent's cleanup it inherited.
pub fn exit_child(code: i32) -> ! {
    // SAFETY: _exit ends the process; nothing runs after it.
    unsafe { libc::_exit(code) }
}

/// Reaps every child that has exited (`waitpid(-1, WNOHANG)`), so none is left a zombie;
/// calls `reaped` with each one's PID.
pub fn reap_children(mut reaped: impl FnMut(i32)) {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only into `status`, which lives for the call.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        reaped(pid);
    }
}

/// This process's PID.
pub fn own_pid() -> i32 {
    std::process::id() as i32
}

/// Sends `signal` to the process `pid` (a child this process forked).
pub fn signal_pid(pid: i32, signal: i32) {
    // SAFETY: kill() on our own child's PID has no memory-safety preconditions.
    unsafe { libc::kill(pid, signal) };
}
