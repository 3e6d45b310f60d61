//! `evloop-load`: parse flags, set up logging, run the load, print the report. Everything
//! else lives in the library (`evloop::load`).

// clap turns the doc comments below into --help text, where [brackets] are meant literally.
#![allow(rustdoc::broken_intra_doc_links)]

use std::net::IpAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use evloop::cli::units::{parse_bytes, parse_duration, positive_duration, positive_rate};
use evloop::cli::{self, usage_error};
use evloop::load::{LoadConfig, Stop, Workload, parse_sources, processes, sweep};
use evloop::{Codec, ListenAddr};

/// Descriptors kept back from the connection count for the poller, pacer and standard streams.
const RESERVED_DESCRIPTORS: u64 = 32;

/// The evloop load generator: opens many connections, drives a handler's workload, verifies
/// every reply, and reports throughput and latency percentiles.
///
/// Closed loop by default (--pipeline requests in flight per connection); --rate switches to
/// open loop, where latency is measured from each message's scheduled send time so server
/// stalls are not hidden. Exit code 0 when every reply verified, 1 on any mismatch, lost
/// reply or connection failure, 2 on bad usage.
#[derive(Parser, Debug)]
#[command(name = "evloop-load", version)]
struct Args {
    /// The server: HOST:PORT (an IP address or a host name), [IPv6]:PORT, unix:/path,
    /// udp://HOST:PORT, tls://HOST:PORT (--tls), or ws://HOST:PORT[/PATH] (a WebSocket
    /// server: --codec ws, the opening request asks for PATH; wss:// is the same over TLS).
    /// Repeatable: with several (a room spread over servers sharing a backplane),
    /// connections go to each in turn
    #[arg(long = "target", value_name = "ADDR", default_value = "127.0.0.1:7000", value_parser = target)]
    targets: Vec<Target>,

    /// Speak TLS to the server (every workload and codec; with --codec ws, wss://; a tls://
    /// or wss:// target implies it). Trust it with --tls-ca, or --insecure for a
    /// self-signed test server
    #[arg(long)]
    tls: bool,

    /// --tls: the CA certificate (or the server's own self-signed one), a PEM file, that
    /// the server's certificate must be signed by
    #[arg(long, value_name = "PEM")]
    tls_ca: Option<std::path::PathBuf>,

    /// --tls: accept any certificate (a self-signed test server; never in production)
    #[arg(long, conflicts_with = "tls_ca")]
    insecure: bool,

    /// --tls: the name the server's certificate must carry, also sent as SNI [default: the
    /// target's address]
    #[arg(long, value_name = "NAME")]
    tls_name: Option<String>,

    /// --codec ws: the path the opening request asks for (a ws:// target's path sets it)
    #[arg(long, value_name = "PATH", hide = true)]
    ws_path: Option<String>,

    /// What to send and check: echo, uppercase, sum, broadcast (open loop, 1000 msgs/s
    /// unless --rate or --pipeline says otherwise) or file (GET every file of --files in turn, each byte
    /// checked)
    #[arg(long, value_name = "NAME", default_value = "echo", value_parser = parsed_from::<Workload>(&["echo", "uppercase", "sum", "broadcast", "file"]))]
    workload: Workload,

    /// Framing: line, length (u32 big-endian length prefix) or ws (WebSocket: an HTTP
    /// upgrade, then masked frames; a ws:// target sets it)
    #[arg(long, value_name = "CODEC", value_parser = parsed_from::<Codec>(&["line", "length", "ws"]))]
    codec: Option<Codec>,

    /// --workload file: the directory the server serves (--files there too); the loader
    /// reads it once to know what every download must hash to
    #[arg(long, value_name = "DIR")]
    files: Option<std::path::PathBuf>,

    /// Connections to open
    #[arg(short = 'c', long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    connections: u32,

    /// How long to send, after the warmup (e.g. 10s, 500ms) [default: 10s]
    #[arg(short = 'd', long, value_name = "DURATION", value_parser = positive_duration, conflicts_with = "messages")]
    duration: Option<Duration>,

    /// Send this many messages in total instead of running for a duration
    #[arg(short = 'n', long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    messages: Option<u64>,

    /// Run this long first without counting (replies are still verified)
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = parse_duration)]
    warmup: Duration,

    /// Closed loop: messages in flight per connection (1 = ping-pong) [default: 1]. With
    /// broadcast (and no --rate): lines in flight per sender, each answered once every
    /// other member has it
    #[arg(short = 'P', long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
    pipeline: Option<u32>,

    /// Write each message on its own, at once (one write call per message), as most clients
    /// do, instead of every message of a turn in one write: the server then reads a few
    /// messages at a time, not a whole --pipeline batch
    #[arg(long)]
    write_each: bool,

    /// Open loop: messages per second in total, sent on schedule whatever the replies do
    #[arg(short = 'R', long, value_name = "R", value_parser = positive_rate)]
    rate: Option<f64>,

    /// Payload bytes per message (at least 32, except for sum)
    #[arg(long, value_name = "BYTES", default_value = "64", value_parser = parse_bytes)]
    size: usize,

    /// New connections per second [default: as fast as the server accepts]
    #[arg(long, value_name = "R", value_parser = positive_rate)]
    connect_rate: Option<f64>,

    /// A connect not done by then counts as a timeout
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = positive_duration)]
    connect_timeout: Duration,

    /// After sending stops, how long to wait for replies; missing ones are lost
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = positive_duration)]
    reply_timeout: Duration,

    /// Local addresses to connect from, e.g. 127.0.0.1,127.0.0.2-127.0.0.9 (one address
    /// reaches one server through at most ~28k ports)
    #[arg(long, value_name = "LIST", value_parser = sources)]
    sources: Option<Sources>,

    /// Reactor threads (per process), each with its share of connections and messages
    #[arg(short = 't', long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    threads: u32,

    /// Print the full latency percentile spectrum (as wrk2 does), in the text report and
    /// the JSON (`latency_spectrum`)
    #[arg(long)]
    latency: bool,

    /// Loader processes, each with its share (threads share one file table, processes do
    /// not: use this past the open-file limit, ~20,000 connections a process here)
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    processes: u32,

    /// Only this many of the connections send; the rest connect and stay idle
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    active: Option<u32>,

    /// After the run, keep every connection open and idle this long (prints "holding N
    /// connections" on stderr when it starts), e.g. to measure the server's memory
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = parse_duration)]
    hold: Duration,

    /// Number connections from this id on (set for each part of a multi-process run)
    #[arg(long, value_name = "ID", default_value_t = 0, hide = true)]
    first_id: u32,

    /// Run as one part of a multi-process run, talking to the parent on stdin/stdout
    #[arg(long = "part-of-run", hide = true)]
    part_of_run: bool,

    /// Run once per connection count instead (e.g. 1,10,100,1000,10000), each run as set
    /// by the other flags; writes OUT.csv and OUT.svg (throughput and p99 against connections)
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..))]
    sweep_connections: Option<Vec<u32>>,

    /// Where a sweep writes its results: OUT.csv and OUT.svg
    #[arg(long, value_name = "OUT", default_value = "sweep")]
    out: std::path::PathBuf,

    /// Print the final report as one JSON object on stdout (a sweep: one per line)
    #[arg(long)]
    json: bool,

    /// No live progress line on stderr
    #[arg(long)]
    no_progress: bool,

    /// Print the completion script for SHELL (bash, zsh, fish, elvish, powershell) and exit,
    /// e.g. `evloop-load --completions bash > /etc/bash_completion.d/evloop-load`
    #[arg(long, value_name = "SHELL")]
    completions: Option<clap_complete::Shell>,

    /// Print the man page (roff) and exit, e.g. `evloop-load --man > evloop-load.1`
    #[arg(long)]
    man: bool,
}

#[derive(Clone, Debug)]
struct Sources(Vec<IpAddr>);

/// A target as typed, the WebSocket path a `ws://` target names, and whether it named TLS.
#[derive(Clone, Debug)]
struct Target {
    addr: ListenAddr,
    ws_path: Option<String>,
    tls: bool,
}

/// A target as typed: an address as the server prints them (`tls://` ones included), or
/// HOST:PORT with a host name, resolved once here (its first address; the run then uses
/// that address); `ws://` (or `wss://`) in front, with a path or not, is a WebSocket server.
fn target(text: &str) -> Result<Target, String> {
    let websocket = text.strip_prefix("ws://").map(|rest| (rest, false));
    if let Some((rest, tls)) = websocket.or_else(|| text.strip_prefix("wss://").map(|rest| (rest, true))) {
        let (host_port, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        return Ok(Target { addr: address(host_port)?, ws_path: Some(path.to_string()), tls });
    }
    match address(text)? {
        ListenAddr::Tls(addr) => Ok(Target { addr: ListenAddr::Tcp(addr), ws_path: None, tls: true }),
        addr => Ok(Target { addr, ws_path: None, tls: false }),
    }
}

/// An address as the server prints them, or HOST:PORT with a host name (see [`target`]).
fn address(text: &str) -> Result<ListenAddr, String> {
    match text.parse::<ListenAddr>() {
        Ok(addr) => Ok(addr),
        Err(error) => {
            let (scheme, host_port) = match text.strip_prefix("udp://") {
                Some(rest) => ("udp", rest),
                None => ("tcp", text),
            };
            use std::net::ToSocketAddrs as _;
            let resolved =
                host_port.to_socket_addrs().ok().and_then(|mut addrs| addrs.next()).ok_or(error)?;
            Ok(if scheme == "udp" { ListenAddr::Udp(resolved) } else { ListenAddr::Tcp(resolved) })
        }
    }
}

fn sources(text: &str) -> Result<Sources, String> {
    parse_sources(text).map(Sources)
}

fn main() -> ExitCode {
    let args: Args = match cli::parse_args("evloop-load") {
        Ok(args) => args,
        Err(code) => return code,
    };
    if let Some(code) = cli::generate_if_asked::<Args>(args.completions, args.man, "evloop-load") {
        return code;
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let mut config = LoadConfig::default();
    config.target = args.targets[0].addr.clone();
    config.more_targets = args.targets[1..].iter().map(|target| target.addr.clone()).collect();
    let ws_target = args.targets.iter().find_map(|target| target.ws_path.clone());
    if ws_target.is_some() && args.codec.is_some_and(|codec| codec != Codec::Ws) {
        return usage_error(
            "evloop-load",
            "a ws:// target speaks WebSocket: leave out --codec, or use --codec ws",
        );
    }
    config.ws_path = args.ws_path.clone().or(ws_target.clone()).unwrap_or_else(|| "/".to_string());
    let tls = args.tls || args.targets.iter().any(|target| target.tls);
    if !tls && (args.tls_ca.is_some() || args.insecure || args.tls_name.is_some()) {
        return usage_error(
            "evloop-load",
            "--tls-ca, --insecure and --tls-name go with --tls (or a tls:// target)",
        );
    }
    config.tls = match (tls, &args.tls_ca, args.insecure) {
        (false, _, _) => None,
        (true, Some(ca), _) => Some(evloop::load::tls::Trust::Ca(ca.clone())),
        (true, None, true) => Some(evloop::load::tls::Trust::Anything),
        (true, None, false) => {
            return usage_error("evloop-load", "--tls needs --tls-ca PEM (the server's CA) or --insecure");
        }
    };
    config.tls_name = args.tls_name.clone();
    config.workload = args.workload;
    config.codec = match (args.codec, &ws_target) {
        (Some(codec), _) => codec,
        (None, Some(_)) => Codec::Ws,
        (None, None) => Codec::Line,
    };
    config.connections = args.connections;
    config.stop = match args.messages {
        Some(messages) => Stop::Messages(messages),
        None => Stop::After(args.duration.unwrap_or(Duration::from_secs(10))),
    };
    config.warmup = args.warmup;
    config.pipeline = args.pipeline.unwrap_or(1);
    config.broadcast_closed_loop =
        args.workload == Workload::Broadcast && args.pipeline.is_some() && args.rate.is_none();
    config.rate = args.rate;
    config.write_each = args.write_each;
    config.size = args.size;
    config.connect_rate = args.connect_rate;
    config.connect_timeout = args.connect_timeout;
    config.reply_timeout = args.reply_timeout;
    config.sources = args.sources.clone().map(|sources| sources.0).unwrap_or_default();
    config.threads = args.threads;
    config.active = args.active;
    config.first_id = args.first_id;
    config.hold = args.hold;
    config.files = args.files.clone();
    config.latency_spectrum = args.latency;
    if let Err(message) = config.validate() {
        return usage_error("evloop-load", &message);
    }
    let largest = args.sweep_connections.as_ref().and_then(|counts| counts.iter().max().copied());
    let per_process = u64::from(largest.unwrap_or(config.connections).div_ceil(args.processes));
    match evloop::raise_file_limit() {
        Ok((_, limit)) if per_process + RESERVED_DESCRIPTORS > limit.soft => {
            return usage_error(
                "evloop-load",
                &format!(
                    "{per_process} connections in one process need about {} open files, but a process may open {}: use --processes {} or more, or raise the limit (ulimit -n)",
                    per_process + RESERVED_DESCRIPTORS,
                    limit.soft,
                    u64::from(config.connections)
                        .div_ceil(limit.soft.saturating_sub(RESERVED_DESCRIPTORS).max(1))
                ),
            );
        }
        Ok((before, after)) => {
            log::info!("open-file limit; soft={} hard={} was={}", after.soft, after.hard, before.soft)
        }
        Err(error) => log::warn!("cannot raise the open-file limit; error={error}"),
    }
    if args.part_of_run {
        return run_part(&config);
    }
    if let Some(counts) = &args.sweep_connections {
        return run_sweep(&config, counts, args.processes, !args.no_progress, args.json, &args.out);
    }
    let result = if args.processes > 1 {
        std::env::current_exe()
            .and_then(|program| processes::run(&config, args.processes, &program, !args.no_progress))
    } else {
        evloop::load::run(&config, !args.no_progress)
    };
    let report = match result {
        Ok(report) => report,
        Err(error) if error.kind() == std::io::ErrorKind::InvalidInput => {
            return usage_error("evloop-load", &error.to_string());
        }
        Err(error) => {
            cli::eprint_line(format_args!("evloop-load: {error}"));
            return ExitCode::from(1);
        }
    };
    if args.json {
        match serde_json::to_string(&report) {
            Ok(json) => cli::print_line(&json),
            Err(error) => {
                cli::eprint_line(format_args!("evloop-load: cannot write the report: {error}"));
                return ExitCode::from(1);
            }
        }
    } else {
        cli::print_line(&report);
    }
    if report.ok { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

/// `--sweep-connections`: one run per count, a table on stdout, CSV and SVG files.
fn run_sweep(
    config: &LoadConfig,
    counts: &[u32],
    processes: u32,
    progress: bool,
    json: bool,
    out: &Path,
) -> ExitCode {
    let run_one = |config: &LoadConfig| {
        if processes > 1 {
            std::env::current_exe().and_then(|program| processes::run(config, processes, &program, false))
        } else {
            evloop::load::run(config, progress)
        }
    };
    let show = |point: &sweep::Point| {
        if json {
            cli::print_line(format_args!("{}", serde_json::to_string(&point.report).unwrap_or_default()));
        } else {
            cli::print_line(sweep::csv_row(point));
        }
    };
    if !json {
        cli::print_line(sweep::CSV_HEADER);
    }
    let points = sweep::run(config, counts, |config| {
        let report = run_one(config)?;
        show(&sweep::Point { connections: config.connections, report: report.clone() });
        Ok(report)
    });
    let points = match points {
        Ok(points) => points,
        Err(error) if error.kind() == std::io::ErrorKind::InvalidInput => {
            return usage_error("evloop-load", &error.to_string());
        }
        Err(error) => {
            cli::eprint_line(format_args!("evloop-load: {error}"));
            return ExitCode::from(1);
        }
    };
    let (csv, svg) = (out.with_extension("csv"), out.with_extension("svg"));
    let name = format!("{} against {}", config.workload, config.targets_text());
    let written =
        sweep::write_csv(&csv, &points).and_then(|()| sweep::write_chart(&svg, &[(name, points.clone())]));
    if let Err(error) = written {
        cli::eprint_line(format_args!(
            "evloop-load: cannot write {} / {}: {error}",
            csv.display(),
            svg.display()
        ));
        return ExitCode::from(1);
    }
    cli::eprint_line(format_args!("evloop-load: wrote {} and {}", csv.display(), svg.display()));
    if points.iter().all(|point| point.report.ok) { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

/// One part of a multi-process run: connect, report in, wait for the go, run, hand the
/// tally back as one JSON line.
fn run_part(config: &LoadConfig) -> ExitCode {
    match processes::run_part(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            cli::eprint_line(format_args!("evloop-load: {error}"));
            ExitCode::from(1)
        }
    }
}

/// A value parser that knows `names`, so `--help` and shell completions list them (clap
/// completes file names for a value it knows nothing about); each parses as `T`.
fn parsed_from<T>(names: &'static [&'static str]) -> impl clap::builder::TypedValueParser<Value = T>
where
    T: std::str::FromStr + Clone + Send + Sync + 'static,
    T::Err: std::fmt::Debug,
{
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(names)
        .map(|name| name.parse::<T>().expect("every listed value parses"))
}
