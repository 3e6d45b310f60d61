//! A child process that cannot outlive the driver that started it: dropping a [`Guard`]
//! stops the child and whatever it started (a server's workers, a loader's processes), so a
//! driver that fails halfway, returns early or panics leaves nothing running on a shared
//! machine. A driver killed outright (SIGKILL, out of memory) runs no destructor: a child
//! started through [`Guard::spawn`] then gets SIGTERM from the kernel (`PR_SET_PDEATHSIG`),
//! and stops its own children as on any SIGTERM.

use std::io;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// See the module documentation.
pub struct Guard {
    child: Child,
    /// What it is, for messages ("the server", "the fill's loader").
    name: String,
    /// How long it may take to stop on SIGTERM (a server drains, a loader reports) before it
    /// and its descendants get SIGKILL.
    grace: Duration,
    /// Its exit status, once seen.
    exited: Option<ExitStatus>,
}

impl Guard {
    /// Guards `child`; `grace` is how long a SIGTERM may take before SIGKILL.
    pub fn new(child: Child, name: &str, grace: Duration) -> Guard {
        Guard { child, name: name.to_string(), grace, exited: None }
    }

    /// Starts `command` guarded; the child also gets SIGTERM if this process dies without
    /// running its destructors.
    pub fn spawn(command: &mut Command, name: &str, grace: Duration) -> Result<Guard, String> {
        let parent = std::process::id();
        // SAFETY: the closure runs in the child between fork and exec; it calls only prctl and
        // getppid, which are async-signal-safe, and allocates nothing on success.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent died before the prctl: nothing will send the signal.
                if u32::try_from(libc::getppid()).ok() != Some(parent) {
                    return Err(io::Error::other("the driver is gone"));
                }
                Ok(())
            })
        };
        let child = command.spawn().map_err(|error| format!("cannot start {name}: {error}"))?;
        Ok(Guard::new(child, name, grace))
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// What it is.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child itself (to take its pipes).
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Its exit status if it has exited, without waiting.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Waits up to `timeout` for it to exit by itself.
    pub fn wait_for(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while self.try_wait().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.exited
    }

    /// Stops it: SIGTERM, up to `grace` for it to exit, then SIGKILL for it and for every
    /// descendant it had when asked to stop or when killed that is still the same process
    /// (same start time: a PID is never killed after it was reused). Returns its exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if let Some(status) = self.try_wait() {
            return Some(status);
        }
        // Listed before the SIGTERM: once the root exits, its children are reparented and no
        // longer found under it.
        let mut descendants = descendants(self.child.id());
        signal(self.child.id(), libc::SIGTERM);
        if self.wait_for(self.grace).is_none() {
            // And those it started since (a server still starting its workers).
            descendants.extend(self::descendants(self.child.id()));
            eprintln!(
                "scale: {} (pid {}) did not stop within {:?}; killing it",
                self.name,
                self.id(),
                self.grace
            );
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
        for (pid, started) in descendants {
            if start_time(pid) == Some(started) {
                signal(pid, libc::SIGKILL);
            }
        }
        self.exited
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends `signal` to `pid`.
fn signal(pid: u32, signal: i32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return };
    // SAFETY: kill() has no memory-safety preconditions; the callers pass only PIDs of this
    // driver's own children and their descendants, checked by start time.
    unsafe { libc::kill(pid, signal) };
}

/// Every descendant of `pid` (children, their children...), each with its start time.
fn descendants(pid: u32) -> Vec<(u32, u64)> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        let tasks = std::fs::read_dir(format!("/proc/{parent}/task")).into_iter().flatten().flatten();
        for task in tasks {
            let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|child| child.parse::<u32>().ok()) {
                if let Some(started) = start_time(child) {
                    found.push((child, started));
                    queue.push(child);
                }
            }
        }
    }
    found
}

/// When `pid` started (field 22 of `/proc/PID/stat`, in clock ticks since boot), if it runs.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split(' ').nth(19)?.parse().ok()
}
