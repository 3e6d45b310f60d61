//! What the `evloop-server` and `evloop-load` binaries are made of beyond the library's own
//! API (feature `cli`): parsing the quantities people type, the worker-process supervisor,
//! the comparison models, and the open-file limit.
//!
//! This is public so that the binaries (separate crates) can call it, and is not a promise of
//! stability: a program that serves its own handler needs none of it.

pub mod units;
pub mod workers;

use std::process::ExitCode;

pub use crate::config::DEFAULT_BACKLOG;
pub use crate::models::{BlockingService, Model, bind as bind_model, run as run_model};
pub use crate::sys::notify::notify;
pub use crate::sys::rlimit::file_limit;
pub use crate::sys::socket::reserve_port;

/// Checks that TLS can be served with this certificate chain and key (PEM files): the
/// supervisor of `--workers` asks before starting any worker, so a bad pair is one line
/// and exit 2, not workers dying one after the other.
pub fn check_tls(cert: Option<&std::path::Path>, key: Option<&std::path::Path>) -> Result<(), String> {
    crate::transport::load_tls(cert, key).map(drop)
}

/// Parses the command line of `program`. `--help` and `--version` print and exit 0; a usage
/// error is one line on stderr and exit code 2, as both binaries document.
pub fn parse_args<T: clap::Parser>(program: &str) -> Result<T, ExitCode> {
    T::try_parse().map_err(|error| {
        use clap::error::ErrorKind;
        if matches!(error.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        // clap's message, without its usage and tips (after a blank line), on one line: a
        // value the user typed may hold a newline, which is shown escaped.
        let text = error.to_string();
        let message = text.trim_start_matches("error: ");
        let message = message.split("\n\n").next().unwrap_or(message).trim_end();
        // clap puts the possible values on a line of their own: keep them on this one.
        let message = message.replace("\n  [possible values", " [possible values");
        let one_line: String = message
            .chars()
            .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() })
            .collect();
        usage_error(program, &one_line)
    })
}

/// Sockets passed by systemd socket activation: `LISTEN_FDS` descriptors from 3 on, if
/// `LISTEN_PID` is this process. The variables are removed, so no child (a worker) takes
/// them for its own. `None`: none were passed.
pub fn listen_fds() -> Option<std::ops::Range<i32>> {
    let for_us = std::env::var("LISTEN_PID").ok()?.parse::<u32>().ok()? == std::process::id();
    let count = std::env::var("LISTEN_FDS").ok()?.parse::<i32>().ok()?;
    // SAFETY: called at start, before any thread is spawned: nothing reads the environment
    // while it changes.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    for_us.then_some(3..3 + count)
}

/// `--completions SHELL` or `--man`, if asked: prints it and says how to exit.
pub fn generate_if_asked<T: clap::CommandFactory>(
    completions: Option<clap_complete::Shell>,
    man: bool,
    program: &str,
) -> Option<ExitCode> {
    if let Some(shell) = completions {
        print_completions::<T>(shell, program);
        return Some(ExitCode::SUCCESS);
    }
    man.then(|| if print_man::<T>().is_ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Prints the completion script of `T` for `shell` on stdout.
pub fn print_completions<T: clap::CommandFactory>(shell: clap_complete::Shell, program: &str) {
    clap_complete::generate(shell, &mut T::command(), program, &mut std::io::stdout());
}

/// Prints the man page of `T` (roff) on stdout.
pub fn print_man<T: clap::CommandFactory>() -> std::io::Result<()> {
    clap_mangen::Man::new(T::command()).render(&mut std::io::stdout())
}

/// Prints `program: message (see --help)` on stderr; returns exit code 2.
pub fn usage_error(program: &str, message: &str) -> ExitCode {
    eprint_line(format_args!("{program}: {message} (see --help)"));
    ExitCode::from(2)
}

/// Writes `line` and a newline to stdout, flushed. A stdout nobody reads any more (`| head -1`,
/// a supervisor that died) is no reason to die: unlike `println!`, which panics there, what
/// cannot be delivered is dropped, and the exit code stays what it would have been.
pub fn print_line(line: impl std::fmt::Display) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}

/// [`print_line`] for stderr.
pub fn eprint_line(line: impl std::fmt::Display) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}
