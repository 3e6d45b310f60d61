//! What the `evloop-server` and `evloop-load` binaries are made of beyond the library's own
//! API (feature `cli`): parsing the quantities people type, the worker-process supervisor,
//! the comparison models, and the open-file limit.
//!
//! This is public so that the binaries (separate crates) can call it, and is not a promise of
//! stability: a program that serves its own handler needs none of it.

pub mod units;
pub mod workers;

use std::process::ExitCode;

pub use crate::models::{BlockingService, Model, bind as bind_model, run as run_model};
pub use crate::server::config::DEFAULT_BACKLOG;
pub use crate::sys::rlimit::file_limit;
pub use crate::sys::transport::reserve_port;

/// Parses the command line of `program`. `--help` and `--version` print and exit 0; a usage
/// error is one line on stderr and exit code 2, as both binaries document.
pub fn parse_args<T: clap::Parser>(program: &str) -> Result<T, ExitCode> {
    T::try_parse().map_err(|error| {
        use clap::error::ErrorKind;
        if matches!(error.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        let text = error.to_string();
        let first_line = text.lines().next().unwrap_or("bad arguments");
        usage_error(program, first_line.trim_start_matches("error: "))
    })
}

/// Prints `program: message (see --help)` on stderr; returns exit code 2.
pub fn usage_error(program: &str, message: &str) -> ExitCode {
    eprintln!("{program}: {message} (see --help)");
    ExitCode::from(2)
}
