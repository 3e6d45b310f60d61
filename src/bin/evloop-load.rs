//! `evloop-load`: parse flags, set up logging, run the load, print the report. Everything
//! else lives in the library (`evloop::load`).

// clap turns the doc comments below into --help text, where [brackets] are meant literally.
#![allow(rustdoc::broken_intra_doc_links)]

use std::net::IpAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use clap::Parser;
use evloop::cli::units::{parse_bytes, parse_duration, positive_duration, positive_rate};
use evloop::cli::{self, usage_error};
use evloop::load::agents::{self, AgentOptions, CoordinateOptions};
use evloop::load::script::{Preset, Script, ScriptFlags};
use evloop::load::{LoadConfig, Stop, Workload, WorkloadFlags, parse_sources, processes, step, sweep};
use evloop::{BackplaneUrl, BackplaneUrls, Codec, ListenAddr};

/// Descriptors kept back from the connection count for the poller, pacer and standard streams.
const RESERVED_DESCRIPTORS: u64 = 32;

/// The evloop load generator: opens many connections, drives a handler's workload, verifies
/// every reply, and reports throughput and latency percentiles.
///
/// Closed loop by default (--pipeline requests in flight per connection); --rate switches to
/// open loop, where latency is measured from each message's scheduled send time so server
/// stalls are not hidden. Exit code 0 when every reply verified, 1 on any mismatch, lost
/// reply or connection failure, 2 on bad usage. SIGINT (Ctrl-C) or SIGTERM stops the run
/// and prints its report so far, marked interrupted, with exit code 130 or 143 (a second one
/// ends it at once); a loader started in the background by a script stops on them too.
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
    /// unless --rate or --pipeline says otherwise), file (GET every file of --files in turn,
    /// each byte checked) or generic (any server: -m, --expect, --preset; implied by them)
    /// [default: echo]
    #[arg(long, value_name = "NAME", value_parser = clap::builder::PossibleValuesParser::new(Workload::NAMES))]
    workload: Option<String>,

    /// Framing: line, length (u32 big-endian length prefix), ws (WebSocket: an HTTP
    /// upgrade, then masked frames; a ws:// target sets it) or raw (the generic workload's
    /// default: messages sent as typed, replies cut by --expect's length, --framing or a
    /// --latency-marker)
    #[arg(long, value_name = "CODEC", value_parser = parsed_from::<Codec>(&["line", "length", "ws", "raw"]))]
    codec: Option<Codec>,

    /// Generic workload: a request, sent framed by --codec (raw: as typed). Escapes: \r \n
    /// \t \0 \\ \xNN. Repeat it to cycle through several requests in order
    #[arg(short = 'm', long = "message", value_name = "STR", help_heading = "Any server (generic workload)")]
    requests: Vec<String>,

    /// The exact reply to each -m, in order (one for all, or one per -m): over the raw codec,
    /// the next that many bytes of the stream; over line, length or ws, the next frame. A
    /// byte that differs is a mismatch, reported with its connection and offset
    #[arg(long, value_name = "STR", help_heading = "Any server (generic workload)")]
    expect: Vec<String>,

    /// Each reply (a frame of --codec, or an HTTP response with --framing http) must start
    /// with this, for replies whose tail varies (one for all, or one per -m)
    #[arg(long, value_name = "STR", help_heading = "Any server (generic workload)")]
    expect_prefix: Vec<String>,

    /// How --expect-prefix replies are cut from a raw stream: http (a response's head and
    /// its Content-Length body)
    #[arg(long, value_name = "KIND", value_parser = ["http"], help_heading = "Any server (generic workload)")]
    framing: Option<String>,

    /// Time from each send to the next time STR is seen in the stream, for servers whose
    /// replies do not map one to one (tcpkali's model); replies are not checked
    #[arg(long, value_name = "STR", help_heading = "Any server (generic workload)")]
    latency_marker: Option<String>,

    /// Sent once per connection when it is up, before the load (a login, a SUBSCRIBE)
    #[arg(
        short = '1',
        long = "first-message",
        value_name = "STR",
        help_heading = "Any server (generic workload)"
    )]
    first_message: Option<String>,

    /// The exact answer to --first-message, awaited before the connection counts as up
    /// (without it, no answer is awaited)
    #[arg(long, value_name = "STR", help_heading = "Any server (generic workload)")]
    first_expect: Option<String>,

    /// A request and its reply, as the flags it stands for:
    ///   redis-ping     -m 'PING\r\n' --expect '+PONG\r\n'
    ///   redis-set-get  -m '*3\r\n$3\r\nSET\r\n$10\r\nkey:evloop\r\n$3\r\nxxx\r\n' --expect '+OK\r\n'
    ///                  -m '*2\r\n$3\r\nGET\r\n$10\r\nkey:evloop\r\n' --expect '$3\r\nxxx\r\n'
    ///   memcached-get  -1 'set key:evloop 0 0 3\r\nxxx\r\n' --first-expect 'STORED\r\n'
    ///                  -m 'get key:evloop\r\n' --expect 'VALUE key:evloop 0 3\r\nxxx\r\nEND\r\n'
    ///   http-get PATH  -m 'GET PATH HTTP/1.1\r\nHost: TARGET\r\n\r\n' --expect-prefix 'HTTP/1.1 200 ' --framing http
    #[arg(long, value_name = "NAME [PATH]", num_args = 1..=2, verbatim_doc_comment, help_heading = "Any server (generic workload)")]
    preset: Option<Vec<String>>,

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

    /// How long to wait for a reply: a connection that waits this long (from the request, or
    /// from the last bytes heard) is closed by the loader and what it had outstanding is lost
    /// (a closed-loop broadcast sender stops instead); after sending stops, how long to wait
    /// for the last replies
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
    /// not: use this past the open-file limit, ~20,000 connections per process on a machine with a
    /// 20,000 open-file limit)
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

    /// The whole run's connections, for a part of one (its open-loop schedule's place)
    #[arg(long, value_name = "N", hide = true)]
    whole_run_connections: Option<u32>,

    /// Run as one part of a multi-process run, talking to the parent on stdin/stdout
    #[arg(long = "part-of-run", hide = true)]
    part_of_run: bool,

    /// Run as an agent: wait on NATS (any server of one cluster) for runs a coordinator
    /// splits between agents, one at a time, until SIGINT or SIGTERM. Prints "agent NAME
    /// ready" once subscribed. --sources here are the addresses this agent's share connects
    /// from; the other run flags come from the coordinator
    #[arg(long, value_name = "nats://HOST:PORT[,...]", value_parser = nats_urls, conflicts_with = "coordinate", help_heading = "Load from many hosts")]
    agent: Option<BackplaneUrls>,

    /// --agent: its name in reports [default: the host name and the process id]
    #[arg(long, value_name = "NAME", requires = "agent", help_heading = "Load from many hosts")]
    agent_name: Option<String>,

    /// Split the run between --agents agents on NATS instead of sending load from here:
    /// wait for them (up to --connect-timeout), give each its share (-c, -n, --rate; its own
    /// --sources; --processes loader processes each), start them at one instant, and print
    /// one report, with an entry per agent
    #[arg(long, value_name = "nats://HOST:PORT[,...]", value_parser = nats_urls, requires = "agents", help_heading = "Load from many hosts")]
    coordinate: Option<BackplaneUrls>,

    /// --coordinate: how many agents the run needs
    #[arg(long, value_name = "N", requires = "coordinate", value_parser = clap::value_parser!(u32).range(1..=10_000), help_heading = "Load from many hosts")]
    agents: Option<u32>,

    /// --coordinate: an agent not heard from for this long is lost (the run goes on without
    /// its share, and fails); an agent that hears nothing from the coordinator for as long
    /// gives the run up
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = positive_duration, help_heading = "Load from many hosts")]
    agent_timeout: Duration,

    /// Run once per connection count instead (e.g. 1,10,100,1000,10000), each run as set
    /// by the other flags; writes OUT.csv and OUT.svg (throughput and p99 against connections)
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..))]
    sweep_connections: Option<Vec<u32>>,

    /// Broadcast: find the largest room held under --limit-p95: runs with N members, then
    /// 2N, 3N... up to -c, each a closed loop of lines from --active senders (default 1),
    /// until the p95 time for a line to reach every member passes the limit; prints a row
    /// per room and the largest held, writes OUT.csv and OUT.svg (reach against members)
    #[arg(long, value_name = "N", requires = "limit_p95", conflicts_with = "sweep_connections", value_parser = clap::value_parser!(u32).range(2..))]
    step_members: Option<u32>,

    /// --step-members: the p95 reach a room must stay within (e.g. 250ms)
    #[arg(long, value_name = "DURATION", requires = "step_members", value_parser = positive_duration)]
    limit_p95: Option<Duration>,

    /// Where a sweep or a step-up writes its results: OUT.csv and OUT.svg [default: sweep,
    /// or step-up]
    #[arg(long, value_name = "OUT")]
    out: Option<std::path::PathBuf>,

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

/// The generic workload's script, from --preset or the flags it stands for (not both).
fn script(args: &Args) -> Result<Option<Script>, String> {
    let flags = ScriptFlags {
        messages: args.requests.clone(),
        expect: args.expect.clone(),
        expect_prefix: args.expect_prefix.clone(),
        marker: args.latency_marker.clone(),
        first: args.first_message.clone(),
        first_expect: args.first_expect.clone(),
        http: args.framing.is_some(),
    };
    let flags = match &args.preset {
        Some(_) if flags.any() => {
            return Err("--preset stands for -m and --expect: give one or the other".to_string());
        }
        Some(words) => {
            let host = args.targets[0].addr.to_string();
            let host = host.strip_prefix("tls://").unwrap_or(&host);
            Preset::parse(&words[0], words.get(1).map(String::as_str))?.flags(host)
        }
        None if !flags.any() => return Ok(None),
        None => flags,
    };
    flags.script().map(Some)
}

fn sources(text: &str) -> Result<Sources, String> {
    parse_sources(text).map(Sources)
}

/// NATS servers for --agent and --coordinate: nats://HOST:PORT, any of one cluster.
fn nats_urls(text: &str) -> Result<BackplaneUrls, String> {
    let urls: BackplaneUrls = text.parse()?;
    if !matches!(urls.first(), BackplaneUrl::Nats(_)) {
        return Err(format!(
            "agents meet on NATS: expected nats://HOST:PORT[,nats://HOST:PORT...], got {text:?}"
        ));
    }
    Ok(urls)
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
    let script = match script(&args) {
        Ok(script) => script,
        Err(message) => return usage_error("evloop-load", &message),
    };
    let generic = script.is_some();
    let name = args.workload.as_deref().unwrap_or(if generic { "generic" } else { "echo" });
    config.workload = match Workload::from_flags(name, WorkloadFlags::new(args.files.clone(), script)) {
        Ok(workload) => workload,
        Err(message) => return usage_error("evloop-load", &message),
    };
    config.codec = match (args.codec, &ws_target) {
        (Some(codec), _) => codec,
        (None, Some(_)) => Codec::Ws,
        (None, None) if generic => Codec::Raw,
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
        config.workload == Workload::Broadcast && args.pipeline.is_some() && args.rate.is_none();
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
    config.whole_run_connections = args.whole_run_connections;
    config.hold = args.hold;
    config.latency_spectrum = args.latency;
    if let Err(message) = config.validate() {
        return usage_error("evloop-load", &message);
    }
    let largest = args.sweep_connections.as_ref().and_then(|counts| counts.iter().max().copied());
    // Over agents, each agent's processes share its part (on hosts assumed alike to this one).
    let agents_sharing = if args.coordinate.is_some() { args.agents.unwrap_or(1) } else { 1 };
    let per_agent = largest.unwrap_or(config.connections).div_ceil(agents_sharing);
    let per_process = u64::from(per_agent.div_ceil(args.processes));
    match evloop::raise_file_limit() {
        Ok((_, limit)) if per_process + RESERVED_DESCRIPTORS > limit.soft => {
            return usage_error(
                "evloop-load",
                &format!(
                    "{per_process} connections in one process need about {} open files, but a process may open {}: use --processes {} or more, or raise the limit (ulimit -n)",
                    per_process + RESERVED_DESCRIPTORS,
                    limit.soft,
                    u64::from(per_agent).div_ceil(limit.soft.saturating_sub(RESERVED_DESCRIPTORS).max(1))
                ),
            );
        }
        Ok((before, after)) => {
            log::info!("open-file limit; soft={} hard={} was={}", after.soft, after.hard, before.soft)
        }
        Err(error) => log::warn!("cannot raise the open-file limit; error={error}"),
    }
    let interrupt = Interrupt::install();
    if args.part_of_run {
        return run_part(&config, &interrupt.stop);
    }
    if let Some(urls) = &args.agent {
        return run_agent(urls, &args, &interrupt.stop);
    }
    let coordinate = args.coordinate.clone().map(|urls| {
        let mut options = CoordinateOptions::new(urls, args.agents.unwrap_or(1));
        options.processes = args.processes;
        options.agent_timeout = args.agent_timeout;
        options
    });
    let runner = Runner { processes: args.processes, coordinate: coordinate.as_ref(), stop: &interrupt.stop };
    if let Some(counts) = &args.sweep_connections {
        let out = args.out.clone().unwrap_or_else(|| "sweep".into());
        let code = run_sweep(&config, counts, &runner, !args.no_progress, args.json, &out);
        return interrupt.exit_code().unwrap_or(code);
    }
    if let (Some(members), Some(limit)) = (args.step_members, args.limit_p95) {
        if config.workload != Workload::Broadcast {
            return usage_error(
                "evloop-load",
                "--step-members grows a room: it goes with --workload broadcast",
            );
        }
        let out = args.out.clone().unwrap_or_else(|| "step-up".into());
        let code = run_step_up(&config, (members, limit), &runner, args.json, &out);
        return interrupt.exit_code().unwrap_or(code);
    }
    let result = runner.run_once(&config, !args.no_progress);
    let report = match result {
        Ok(report) => report,
        Err(error) => return run_failed(&error),
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
    if let Some(code) = interrupt.exit_code() {
        return code;
    }
    if report.ok { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

/// SIGINT and SIGTERM: the run stops and its report so far is printed; a second one ends the
/// loader at once. The handlers replace an inherited "ignore": a job a script starts in the
/// background ignores SIGINT, and would otherwise run on through `kill -INT`.
struct Interrupt {
    /// Set by either signal: the run stops.
    stop: Arc<AtomicBool>,
    /// The signal that came (0: none).
    signal: Arc<AtomicUsize>,
}

impl Interrupt {
    fn install() -> Interrupt {
        use signal_hook::consts::{SIGINT, SIGTERM};
        use signal_hook::flag;
        let interrupt =
            Interrupt { stop: Arc::new(AtomicBool::new(false)), signal: Arc::new(AtomicUsize::new(0)) };
        for signal in [SIGINT, SIGTERM] {
            // In this order: the second signal finds `stop` set, and ends the process.
            let installed = flag::register_conditional_shutdown(signal, 128 + signal, interrupt.stop.clone())
                .and_then(|_| flag::register_usize(signal, interrupt.signal.clone(), signal as usize))
                .and_then(|_| flag::register(signal, interrupt.stop.clone()));
            if let Err(error) = installed {
                log::warn!(
                    "cannot handle a signal: it ends the loader with no report; signal={signal} error={error}"
                );
            }
        }
        interrupt
    }

    /// The exit code of a run a signal stopped: 128 plus the signal's number (130 after
    /// SIGINT, 143 after SIGTERM), as a shell reports a command the signal killed.
    fn exit_code(&self) -> Option<ExitCode> {
        match self.signal.load(Ordering::Acquire) {
            0 => None,
            signal => Some(ExitCode::from((128 + signal).min(255) as u8)),
        }
    }
}

/// `--sweep-connections`: one run per count, a table on stdout, CSV and SVG files.
fn run_sweep(
    config: &LoadConfig,
    counts: &[u32],
    runner: &Runner<'_>,
    progress: bool,
    json: bool,
    out: &Path,
) -> ExitCode {
    let run_one = |config: &LoadConfig| runner.run_once(config, progress);
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
        Err(error) => return run_failed(&error),
    };
    let (csv, svg) = (out.with_extension("csv"), out.with_extension("svg"));
    let name = format!("{} against {}", config.workload, config.targets_text());
    let written =
        sweep::write_csv(&csv, &points).and_then(|()| sweep::write_chart(&svg, &[(name, points.clone())]));
    if let Err(code) = say_written(written, &csv, &svg) {
        return code;
    }
    if points.iter().all(|point| point.report.ok) { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

/// How each run is made: in this process, in loader processes, or over agents.
struct Runner<'a> {
    /// `--processes`: loader processes (per agent, with `--coordinate`).
    processes: u32,
    /// `--coordinate`: the run is split over agents.
    coordinate: Option<&'a CoordinateOptions>,
    /// Set by SIGINT and SIGTERM: the run stops early.
    stop: &'a Arc<AtomicBool>,
}

impl Runner<'_> {
    /// One run, stopped early once `stop` is set.
    fn run_once(&self, config: &LoadConfig, progress: bool) -> std::io::Result<evloop::load::Report> {
        if let Some(options) = self.coordinate {
            agents::coordinate(config, options, progress, self.stop)
        } else if self.processes > 1 {
            std::env::current_exe()
                .and_then(|program| processes::run(config, self.processes, &program, progress, self.stop))
        } else {
            evloop::load::run_until(config, progress, self.stop.clone())
        }
    }
}

/// `--agent`: waits for runs until SIGINT or SIGTERM, which end it with exit code 0 (its
/// normal end: a service manager stops it so).
fn run_agent(urls: &BackplaneUrls, args: &Args, stop: &Arc<AtomicBool>) -> ExitCode {
    // Its loader processes run its own binary, even after that file was replaced by an
    // upgrade (the path then names the new one, or nothing): the agent's protocol and its
    // processes' must match.
    let own = std::path::PathBuf::from("/proc/self/exe");
    let program = match std::env::current_exe() {
        Ok(_) if own.exists() => own,
        Ok(program) => program,
        Err(error) => {
            cli::eprint_line(format_args!("evloop-load: cannot find its own binary: {error}"));
            return ExitCode::from(1);
        }
    };
    let mut options = AgentOptions::new(urls.clone(), program);
    options.name = args.agent_name.clone();
    options.sources = args.sources.clone().map(|sources| sources.0).unwrap_or_default();
    let mut say = |line: &str| cli::print_line(line);
    match agents::run_agent(&options, stop, &mut say) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            cli::eprint_line(format_args!("evloop-load: agent: {error}"));
            ExitCode::from(1)
        }
    }
}

/// A run that could not be made: bad usage (exit 2) or a failure (exit 1).
fn run_failed(error: &std::io::Error) -> ExitCode {
    if error.kind() == std::io::ErrorKind::InvalidInput {
        return usage_error("evloop-load", &error.to_string());
    }
    cli::eprint_line(format_args!("evloop-load: {error}"));
    ExitCode::from(1)
}

/// Says where the CSV and SVG went, or why they could not be written (exit 1).
fn say_written(written: std::io::Result<()>, csv: &Path, svg: &Path) -> Result<(), ExitCode> {
    match written {
        Ok(()) => {
            cli::eprint_line(format_args!("evloop-load: wrote {} and {}", csv.display(), svg.display()));
            Ok(())
        }
        Err(error) => {
            cli::eprint_line(format_args!(
                "evloop-load: cannot write {} / {}: {error}",
                csv.display(),
                svg.display()
            ));
            Err(ExitCode::from(1))
        }
    }
}

/// `--step-members`: rooms grown until a line's p95 reach passes the limit; a row per room
/// on stdout, CSV and SVG files, and the largest room held.
fn run_step_up(
    config: &LoadConfig,
    (members, limit): (u32, Duration),
    runner: &Runner<'_>,
    json: bool,
    out: &Path,
) -> ExitCode {
    let run_one = |config: &LoadConfig| runner.run_once(config, false);
    if !json {
        cli::print_line(step::CSV_HEADER);
    }
    let steps = step::run(config, members, limit, run_one, |step| {
        if json {
            cli::print_line(format_args!("{}", serde_json::to_string(&step.report).unwrap_or_default()));
        } else {
            cli::print_line(step::csv_row(step));
        }
    });
    let steps = match steps {
        Ok(steps) => steps,
        Err(error) => return run_failed(&error),
    };
    let (csv, svg) = (out.with_extension("csv"), out.with_extension("svg"));
    let written = step::write_csv(&csv, &steps).and_then(|()| step::write_chart(&svg, &steps, limit));
    if let Err(code) = say_written(written, &csv, &svg) {
        return code;
    }
    let limit_text = format!("{:?}", limit);
    match step::largest_held(&steps, limit) {
        Some(largest) => {
            let reached_ceiling = steps.last().is_some_and(|last| last.held(limit));
            let why = if reached_ceiling { " (the ceiling, -c: every room tried held)" } else { "" };
            cli::eprint_line(format_args!(
                "evloop-load: largest room held under p95 {limit_text}: {largest} members{why}"
            ));
            ExitCode::SUCCESS
        }
        None => {
            cli::eprint_line(format_args!(
                "evloop-load: no room held under p95 {limit_text} (the smallest had {members} members)"
            ));
            ExitCode::from(1)
        }
    }
}

/// One part of a multi-process run: connect, report in, wait for the go, run, hand the
/// tally back as one JSON line.
fn run_part(config: &LoadConfig, stop: &Arc<AtomicBool>) -> ExitCode {
    match processes::run_part(config, stop.clone()) {
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
