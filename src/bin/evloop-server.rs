//! `evloop-server`: parse flags, set up logging, bind, print the startup lines, run.
//! Everything else lives in the library.

// clap turns the doc comments below into --help text, where [brackets] are meant literally.
#![allow(rustdoc::broken_intra_doc_links)]

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use evloop::units::{parse_bytes, parse_duration};
use evloop::{ListenSpec, Server, ServerConfig, StartError};

/// A single-threaded event-loop (reactor) server: one thread serves every client.
///
/// With no --listen it serves echo on 127.0.0.1:7000, uppercase on :7001, sum on :7002 and
/// broadcast on :7003. It prints one line per listener, `<handler> listening on <addr>`, to
/// stdout; logs go to stderr (set RUST_LOG, default info). SIGINT/SIGTERM drain and stop.
#[derive(Parser, Debug)]
#[command(name = "evloop-server", version)]
struct Args {
    /// Serve HANDLER (echo, uppercase, sum, broadcast) framed by CODEC (line [default],
    /// length, fixed:N, raw) on ADDR: HOST:PORT, [IPv6]:PORT or unix:/path; port 0 picks a
    /// free port. Repeatable. Several ADDRs, comma-separated, share one handler (one
    /// broadcast room). Example: --listen sum:length=[::1]:0
    #[arg(long = "listen", value_name = "HANDLER[:CODEC]=ADDR")]
    listen: Vec<ListenSpec>,

    /// Most clients connected at once; the next gets `ERR server full` [default: the
    /// open-file limit less 32]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: Option<u64>,

    /// Longest message accepted, in bytes (64K, 1M also work); longer gets `ERR ... too long`
    #[arg(long, value_name = "BYTES", default_value = "65536", value_parser = positive_bytes)]
    max_frame: usize,

    /// Pending output per client before it counts as slow: its reading pauses until it
    /// drains, or (for broadcast messages from others) it is disconnected
    #[arg(long, value_name = "BYTES", default_value = "1M", value_parser = positive_bytes)]
    max_output: usize,

    /// Close clients that move no bytes for this long (e.g. 30, 0.5, 250ms) [default: off]
    #[arg(long, value_name = "SECS", value_parser = positive_duration)]
    idle_timeout: Option<Duration>,

    /// Listen backlog (Linux caps it at net.core.somaxconn)
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    backlog: u32,

    /// Log a stats line this often [default: off]
    #[arg(long, value_name = "SECS", value_parser = positive_duration)]
    stats_interval: Option<Duration>,

    /// On SIGINT/SIGTERM, how long to keep flushing replies before closing anyway
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_duration)]
    drain_timeout: Duration,
}

fn positive_bytes(text: &str) -> Result<usize, String> {
    match parse_bytes(text)? {
        0 => Err("must be at least 1 byte".to_string()),
        bytes => Ok(bytes),
    }
}

fn positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err("must be more than 0".to_string()),
        duration => Ok(duration),
    }
}

/// Parses the command line; a usage error is one line on stderr and exit code 2.
fn parse_args() -> Result<Args, ExitCode> {
    Args::try_parse().map_err(|error| {
        use clap::error::ErrorKind;
        if matches!(
            error.kind(),
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
        ) {
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        let text = error.to_string();
        let first_line = text.lines().next().unwrap_or("bad arguments");
        eprintln!(
            "evloop-server: {} (see --help)",
            first_line.trim_start_matches("error: ")
        );
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(code) => return code,
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    // Raised before binding (the default --max-connections follows it), logged after, so a
    // start-up error stays the only line on stderr.
    let file_limit = evloop::rlimit::raise_file_limit();
    let config = ServerConfig {
        max_connections: args
            .max_connections
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        max_frame: args.max_frame,
        max_output: args.max_output,
        idle_timeout: args.idle_timeout,
        backlog: args.backlog,
        stats_interval: args.stats_interval,
        drain_timeout: args.drain_timeout,
        ..ServerConfig::default()
    };
    let specs = if args.listen.is_empty() {
        ListenSpec::defaults()
    } else {
        args.listen
    };
    let server = specs
        .iter()
        .try_fold(
            Server::builder(config).handle_signals(true),
            |builder, spec| builder.listen(spec),
        )
        .and_then(|builder| builder.bind());
    let server = match server {
        Ok(server) => server,
        Err(error) => {
            eprintln!("evloop-server: {error}");
            let code = if matches!(error, StartError::Config(_)) {
                2
            } else {
                1
            };
            return ExitCode::from(code);
        }
    };
    match file_limit {
        Ok((before, after)) => log::info!(
            "open-file limit; soft={} hard={} was={}",
            after.soft,
            after.hard,
            before.soft
        ),
        Err(error) => log::warn!("cannot raise the open-file limit; error={error}"),
    }
    let mut stdout = std::io::stdout().lock();
    for listener in server.listening() {
        let _ = writeln!(stdout, "{listener}");
    }
    let _ = stdout.flush();
    drop(stdout);
    match server.run() {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("evloop-server: the event loop failed: {error}");
            ExitCode::from(1)
        }
    }
}
