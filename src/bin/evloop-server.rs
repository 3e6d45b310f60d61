//! `evloop-server`: parse flags, set up logging, bind, print the startup lines, run.
//! Everything else lives in the library.

// clap turns the doc comments below into --help text, where [brackets] are meant literally.
#![allow(rustdoc::broken_intra_doc_links)]

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use evloop::cli::units::{parse_bytes, parse_duration, positive_bytes, positive_duration};
use evloop::cli::workers::{self, WorkerCommand};
use evloop::cli::{self, Model};
use evloop::{BackplaneUrls, ListenAddr, ListenSpec, Listening, Server, ServerConfig, StartError};

/// A single-threaded event-loop (reactor) server: one thread serves every client.
///
/// With no --listen it serves echo on 127.0.0.1:7000, uppercase on :7001, sum on :7002 and
/// a chat room on :7003 (names, /nick, /who, the last lines for newcomers), one message per
/// line; the same chat room over WebSocket on :7080, with a chat page at
/// http://127.0.0.1:7080/; for the classic course's clients (no newline, one recv), echo,
/// uppercase and sum with raw framing on :7100-7102 over TCP and UDP; daytime on :7013 and
/// time on :7037 over TCP and UDP; the console, the loop watched live, at
/// http://127.0.0.1:7090/ (with EVLOOP_DEFAULT_PORTS=0 in the environment, all on free ports
/// instead). It prints one line per listener, `<handler> listening on <addr> (<codec>)` (the address is
/// the fourth word), to stdout;
/// logs go to stderr (set RUST_LOG, default info). SIGINT, SIGTERM and SIGHUP drain and stop.
///
/// Exit code 0 after a stop by signal (the drain done), 1 when an address cannot be bound or
/// the event loop fails, 2 on bad usage: a flag, a listener that makes no sense, a
/// certificate or key that cannot be used (one line on stderr each time).
#[derive(Parser, Debug)]
#[command(name = "evloop-server", version)]
struct Args {
    /// Serve HANDLER (echo, uppercase, sum, broadcast, chat, daytime, time, file, metrics, console) framed by CODEC on ADDR: HOST:PORT
    /// (HOST an IP address or localhost: a listener binds no other name), [IPv6]:PORT, tls://HOST:PORT (TLS: needs --tls-cert and --tls-key), unix:/path,
    /// udp://HOST:PORT (one datagram, one message), or fd:N (a socket inherited already
    /// bound: systemd socket activation, inetd); port 0 picks a free port. CODEC: line
    /// (default: text lines, what nc sends), length (u32 length in network byte order, then
    /// the bytes), fixed:N (N-byte messages), raw (each read is a message: the naive
    /// tutorial style), ws (WebSocket: browsers; GET / is a chat page). @ROOM names a broadcast room shared over
    /// --backplane. Repeatable. Several ADDRs, comma-separated, share one handler (one
    /// broadcast room). Example: --listen sum:length=[::1]:0
    #[arg(long = "listen", value_name = "HANDLER[:CODEC][@ROOM]=ADDR")]
    listen: Vec<ListenSpec>,

    /// Most clients connected at once; the next gets `ERR server full` [default: the
    /// open-file limit less 32]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: Option<u64>,

    /// Longest message accepted, in bytes (65536, 64K and 1M all work); longer gets `ERR ...
    /// too long`
    #[arg(long, value_name = "BYTES", default_value = "64K", value_parser = positive_bytes)]
    max_frame: usize,

    /// Pending output per client before it counts as slow: its reading pauses until it
    /// drains, or (for broadcast messages from others) it is disconnected
    #[arg(long, value_name = "BYTES", default_value = "1M", value_parser = positive_bytes)]
    max_output: usize,

    /// The most memory all clients together may hold (unfinished input, pending output,
    /// TLS and WebSocket buffers); past it the clients holding most are evicted (told:
    /// `ERR evicted: ...`, WebSocket close 1013) until the rest hold under 7/8 of it. For the
    /// whole server: each of --workers N gets an Nth. 0: no budget
    #[arg(long, value_name = "BYTES", default_value = "256M", value_parser = parse_bytes)]
    max_client_memory: usize,

    /// chat rooms: the lines each keeps for newcomers, who get them first, oldest first, then
    /// the live lines; 0: none
    #[arg(long, value_name = "N", default_value_t = 20)]
    history: usize,

    /// Most connections open at once from one IP address; the next is turned away with
    /// `ERR too many connections from your address` (per worker process) [default: no limit]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_connections_per_ip: Option<u64>,

    /// Close clients that move no bytes for this long (e.g. 30, 0.5, 250ms) [default: off]
    #[arg(long, value_name = "SECS", value_parser = positive_duration)]
    idle_timeout: Option<Duration>,

    /// Listen backlog; Linux caps it at net.core.somaxconn (4096 unless raised), so the default
    /// asks for as much as the kernel allows
    #[arg(long, value_name = "N", default_value_t = cli::DEFAULT_BACKLOG, value_parser = clap::value_parser!(u32).range(1..))]
    backlog: u32,

    /// Log a stats line this often [default: off]
    #[arg(long, value_name = "SECS", value_parser = positive_duration)]
    stats_interval: Option<Duration>,

    /// tls:// listeners: the certificate chain, a PEM file (SIGUSR1 reads it again)
    #[arg(long, value_name = "PEM")]
    tls_cert: Option<std::path::PathBuf>,

    /// tls:// listeners: the certificate's private key, a PEM file (PKCS#8, PKCS#1 or SEC1;
    /// ECDSA, Ed25519 or RSA)
    #[arg(long, value_name = "PEM")]
    tls_key: Option<std::path::PathBuf>,

    /// ws listeners: ping a client that sent nothing for this long, and close it (1001) if
    /// it has not answered by the next interval; 0: never ping
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_duration)]
    ws_ping: Duration,

    /// ws listeners: the origins (scheme://host[:port]) whose pages may open a WebSocket
    /// besides the server's own host, comma-separated, or * for any. Refused: 403 [default: same
    /// host only]
    #[arg(long, value_name = "LIST|*")]
    ws_origin: Option<evloop::codec::ws::Origins>,

    /// How long a new connection may take to be ready to serve (its PROXY header; a TLS or
    /// WebSocket handshake) before it is closed; until then it is in no room and its handler
    /// has not heard of it
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = positive_duration)]
    handshake_timeout: Duration,

    /// On SIGINT/SIGTERM, how long to keep flushing replies before closing anyway
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_duration)]
    drain_timeout: Duration,

    /// Worker processes, each a single-threaded reactor, all accepting on the same ports
    /// (SO_REUSEPORT). More workers hold more connections (each process may open only so
    /// many files) and use more cores. `auto`: one per core. TCP listeners only; broadcast
    /// only with --backplane
    #[arg(long, value_name = "N|auto", default_value = "1", value_parser = workers_count)]
    workers: u32,

    /// Share rooms (broadcast) with other workers and servers through a pub/sub engine:
    /// redis://HOST:PORT, redis+unix:///path/to/redis.sock or nats://HOST:PORT. Servers with
    /// the same backplane share each room of the same name (--listen broadcast@NAME=ADDR;
    /// unnamed: "default"). Several addresses of one engine, comma-separated: Redis tries
    /// them in order, from the first again after a loss (no Sentinel); NATS takes them as
    /// one cluster, moves on to the next when a server goes, and learns the others from
    /// the servers' connect_urls
    #[arg(long, value_name = "URL[,URL...]")]
    backplane: Option<BackplaneUrls>,

    /// The directory `file` listeners serve (LIST, GET NAME [OFFSET]); names are confined to
    /// it
    #[arg(long, value_name = "DIR")]
    files: Option<std::path::PathBuf>,

    /// Files sent at once, at most (each holds a descriptor); more downloads wait their turn
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    max_file_sends: u64,

    /// Write a timeline of the run to PATH when the server stops, in the Trace Event Format
    /// (open it in Perfetto or chrome://tracing): a track per client, a slice per message,
    /// and for the reactor, select and poll a track of wakeups. For short runs: recording
    /// stops past --trace-limit events. Every model but fork (a process per client: refused)
    #[arg(long, value_name = "PATH")]
    trace_file: Option<std::path::PathBuf>,

    /// Events a --trace-file keeps at most (about 100 bytes each in memory until the stop)
    #[arg(long, value_name = "N", default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..))]
    trace_limit: u64,

    /// Every TCP listener is behind a balancer sending the PROXY protocol (HAProxy
    /// send-proxy or send-proxy-v2): the real client's address replaces the balancer's
    /// (logs, the broadcast prefix); a connection without a valid header is closed
    #[arg(long)]
    proxy_protocol: bool,

    /// How often an idle backplane link is pinged, and how long a connect or a ping may take
    /// before the link counts as dead and is retried
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = positive_duration)]
    backplane_ping: Duration,

    /// How the server shares the CPU among clients: reactor (one thread, epoll, every
    /// client), iterative (one client at a time), threads (a thread per client), fork (a
    /// process per client; no broadcast), select or
    /// poll (one thread scanning every socket each turn; select stops at 1024 descriptors).
    /// The others are for comparison and study; only the reactor has every limit
    #[arg(long, value_name = "MODEL", default_value = "reactor", value_parser = model_parser())]
    model: Model,

    /// CPU work (busy, not sleep) added to every message, in microseconds: shows what a
    /// slow handler costs everyone else
    #[arg(long, value_name = "US", default_value_t = 0)]
    work_us: u64,

    /// Print the completion script for SHELL (bash, zsh, fish, elvish, powershell) and exit,
    /// e.g. `evloop-server --completions bash > /etc/bash_completion.d/evloop-server`
    #[arg(long, value_name = "SHELL")]
    completions: Option<clap_complete::Shell>,

    /// Print the man page (roff) and exit, e.g. `evloop-server --man > evloop-server.1`
    #[arg(long)]
    man: bool,
}

impl Args {
    /// The limits these flags set; `reuse_port` for a worker, which shares its ports.
    fn server_config(&self, reuse_port: bool) -> ServerConfig {
        let mut config = ServerConfig::default();
        config.max_connections = self.max_connections.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        config.max_frame = self.max_frame;
        config.max_output = self.max_output;
        config.max_client_memory = self.max_client_memory;
        config.history = self.history;
        config.max_connections_per_ip =
            self.max_connections_per_ip.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        config.idle_timeout = self.idle_timeout;
        config.backlog = self.backlog;
        config.stats_interval = self.stats_interval;
        config.drain_timeout = self.drain_timeout;
        config.handshake_timeout = self.handshake_timeout;
        config.ws_ping = (!self.ws_ping.is_zero()).then_some(self.ws_ping);
        config.tls_cert = self.tls_cert.clone();
        config.tls_key = self.tls_key.clone();
        config.ws_origins = self.ws_origin.clone().unwrap_or_default();
        config.reuse_port = reuse_port;
        config.work_per_message = Duration::from_micros(self.work_us);
        config.backplane = self.backplane.clone();
        config.backplane_ping = self.backplane_ping;
        config.files = self.files.clone();
        config.trace_file = self.trace_file.clone();
        config.trace_limit = self.trace_limit as usize;
        config.proxy_protocol = self.proxy_protocol;
        config.max_file_sends = self.max_file_sends as usize;
        config
    }

    /// The command line of one worker: these settings, the given (resolved) listeners, one
    /// process.
    fn worker_args(&self, specs: &[ListenSpec]) -> Vec<String> {
        let mut args = Vec::new();
        for spec in specs {
            args.extend(["--listen".to_string(), spec.to_string()]);
        }
        let mut flag = |name: &str, value: String| args.extend([format!("--{name}"), value]);
        flag("max-frame", self.max_frame.to_string());
        flag("max-output", self.max_output.to_string());
        // The budget is the whole server's: each worker holds its share (0, no budget, stays 0).
        let share = match self.max_client_memory {
            0 => 0,
            total => (total / self.workers.max(1) as usize).max(1),
        };
        flag("max-client-memory", share.to_string());
        flag("history", self.history.to_string());
        if let Some(max) = self.max_connections_per_ip {
            flag("max-connections-per-ip", max.to_string());
        }
        flag("backlog", self.backlog.to_string());
        flag("drain-timeout", self.drain_timeout.as_secs_f64().to_string());
        flag("handshake-timeout", self.handshake_timeout.as_secs_f64().to_string());
        flag("ws-ping", self.ws_ping.as_secs_f64().to_string());
        if let Some(origins) = &self.ws_origin {
            flag("ws-origin", origins.to_arg());
        }
        flag("work-us", self.work_us.to_string());
        if let Some(max) = self.max_connections {
            flag("max-connections", max.to_string());
        }
        if let Some(timeout) = self.idle_timeout {
            flag("idle-timeout", timeout.as_secs_f64().to_string());
        }
        if let Some(interval) = self.stats_interval {
            flag("stats-interval", interval.as_secs_f64().to_string());
        }
        flag("max-file-sends", self.max_file_sends.to_string());
        if let Some(files) = &self.files {
            flag("files", files.display().to_string());
        }
        if let Some(backplane) = &self.backplane {
            flag("backplane", backplane.to_string());
            flag("backplane-ping", self.backplane_ping.as_secs_f64().to_string());
        }
        if self.proxy_protocol {
            args.push("--proxy-protocol".to_string());
        }
        if let Some(cert) = &self.tls_cert {
            args.extend(["--tls-cert".to_string(), cert.display().to_string()]);
        }
        if let Some(key) = &self.tls_key {
            args.extend(["--tls-key".to_string(), key.display().to_string()]);
        }
        args
    }
}

fn main() -> ExitCode {
    let args: Args = match cli::parse_args("evloop-server") {
        Ok(args) => args,
        Err(code) => return code,
    };
    if let Some(code) = cli::generate_if_asked::<Args>(args.completions, args.man, "evloop-server") {
        return code;
    }
    let worker = workers::worker_index();
    init_logging(worker);
    let passed_fds = cli::listen_fds();
    // Raised before binding (the default --max-connections follows it), logged after, so a
    // start-up error stays the only line on stderr.
    let file_limit = evloop::raise_file_limit();
    if args.model == Model::Fork && args.trace_file.is_some() {
        // Refused before the default listeners are chosen (and their notes printed): one
        // line, and nothing else. Each client is served by a process of its own: there is
        // no one loop to record.
        return cli::usage_error(
            "evloop-server",
            "--trace-file cannot record --model fork (each client is served in a process of its own); every other model records it",
        );
    }
    let specs =
        if args.listen.is_empty() { default_listeners(&args, worker.is_some()) } else { args.listen.clone() };
    if let Some(passed) = &passed_fds {
        let named = specs.iter().flat_map(|spec| &spec.addrs).filter_map(|addr| match addr {
            ListenAddr::Fd(fd) => Some(*fd),
            _ => None,
        });
        for fd in named {
            if !passed.contains(&fd) {
                return cli::usage_error(
                    "evloop-server",
                    &format!("fd:{fd} was not passed: LISTEN_FDS gives {}..{}", passed.start, passed.end - 1),
                );
            }
        }
    }
    let log_file_limit = move || match file_limit {
        Ok((before, after)) => {
            log::info!("open-file limit; soft={} hard={} was={}", after.soft, after.hard, before.soft)
        }
        Err(error) => log::warn!("cannot raise the open-file limit; error={error}"),
    };
    if args.model != Model::Reactor {
        return run_model(&args, &specs, log_file_limit);
    }
    if args.workers > 1 && worker.is_none() {
        return run_supervisor(&args, &specs, log_file_limit);
    }
    run_reactor(&args, &specs, worker.is_some(), log_file_limit)
}

/// `--workers N` (1 to 1024) or `auto`: one worker per core the process may run on.
fn workers_count(text: &str) -> Result<u32, String> {
    if text == "auto" {
        return Ok(std::thread::available_parallelism().map_or(1, |cores| cores.get() as u32));
    }
    match text.parse::<u32>() {
        Ok(count) if (1..=1024).contains(&count) => Ok(count),
        _ => Err(format!("bad worker count '{}': expected 1 to 1024, or auto", text.escape_debug())),
    }
}

/// Set to 0, the default listeners take free ports instead of 7000-7003: the tests run the
/// defaults this way, so a server already running on the default ports does not collide.
const DEFAULT_PORTS_ENV: &str = "EVLOOP_DEFAULT_PORTS";

/// `--model`'s values, listed for `--help` and shell completions (clap completes file names
/// for a value it knows nothing about).
fn model_parser() -> impl clap::builder::TypedValueParser<Value = Model> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(["reactor", "iterative", "threads", "fork", "select", "poll"])
        .map(|name| name.parse::<Model>().expect("every listed model parses"))
}

/// The listeners served with no `--listen`. Under `--workers N` without a backplane, each
/// worker would hold a room of its own, so the default broadcast listener is left out (and
/// said so) rather than refusing a command line that never asked for it.
fn default_listeners(args: &Args, is_worker: bool) -> Vec<ListenSpec> {
    let mut specs = ListenSpec::defaults();
    if std::env::var_os(DEFAULT_PORTS_ENV).is_some_and(|value| value == "0") {
        for addr in specs.iter_mut().flat_map(|spec| spec.addrs.iter_mut()) {
            if let ListenAddr::Tcp(socket_addr) | ListenAddr::Udp(socket_addr) = addr {
                socket_addr.set_port(0);
            }
        }
    }
    if args.workers > 1 && args.model == Model::Reactor && !is_worker {
        if args.backplane.is_none() {
            specs.retain(|spec| !is_room(spec));
            cli::eprint_line(format_args!(
                "evloop-server: --workers {} without --backplane: not serving the default chat room (a room cannot span workers without a backplane)",
                args.workers
            ));
        }
        for spec in &mut specs {
            spec.addrs.retain(|addr| matches!(addr, ListenAddr::Tcp(_)));
        }
        specs.retain(|spec| !spec.addrs.is_empty());
        cli::eprint_line(format_args!(
            "evloop-server: --workers {}: not serving the default UDP listeners (workers share TCP ports only)",
            args.workers
        ));
    }
    if args.model != Model::Reactor {
        // The blocking models serve TCP only, no codec with a handshake, and rooms without
        // names: the course's chat room is the plain broadcast there. The console is served
        // beside the model, by a thread of its own.
        for spec in &mut specs {
            spec.addrs.retain(|addr| matches!(addr, ListenAddr::Tcp(_)));
            if spec.handler == "chat" {
                spec.handler = "broadcast".to_string();
            }
        }
        specs.retain(|spec| !spec.codec.has_session() || spec.handler == "console");
        cli::eprint_line(format_args!(
            "evloop-server: --model {}: not serving the default UDP and WebSocket listeners, and the room on :7003 is a plain broadcast (this model serves TCP lines only)",
            args.model
        ));
    }
    if args.model == Model::Fork {
        specs.retain(|spec| !is_room(spec));
        cli::eprint_line(
            "evloop-server: --model fork: not serving the default chat room (processes share no room)",
        );
    }
    specs
}

/// Whether `spec`'s handler serves a room (its members send to each other).
fn is_room(spec: &ListenSpec) -> bool {
    evloop::handlers::by_name(&spec.handler).is_some_and(|handler| handler.has_room())
}

fn init_logging(worker: Option<usize>) {
    let mut builder = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if let Some(index) = worker {
        builder.format(move |buf, record| {
            use std::io::Write as _;
            let timestamp = buf.timestamp();
            writeln!(
                buf,
                "[{timestamp} {:<5} {} worker={index}] {}",
                record.level(),
                record.target(),
                record.args()
            )
        });
    }
    builder.init();
}

/// One reactor in this process: bind, print the startup lines, serve until stopped.
fn run_reactor(
    args: &Args,
    specs: &[ListenSpec],
    is_worker: bool,
    log_file_limit: impl FnOnce(),
) -> ExitCode {
    let mut config = args.server_config(is_worker);
    if let (Some(index), Some(fd)) = (workers::worker_index(), workers::shared_metrics_fd()) {
        config.shared_metrics = Some((fd, index));
    }
    let server = specs
        .iter()
        .try_fold(Server::builder(config).handle_signals(true), |builder, spec| builder.listen(spec))
        .and_then(|builder| builder.bind());
    let server = match server {
        Ok(server) => server,
        Err(error) => return start_failed(&error),
    };
    log_file_limit();
    print_startup_lines(server.listening(), specs);
    if !is_worker {
        cli::notify("READY=1");
    }
    match server.run() {
        Ok(summary) if is_worker => {
            // For the parent, which adds up its workers' summaries.
            cli::print_line(format_args!("{}", serde_json::to_string(&summary).unwrap_or_default()));
            ExitCode::SUCCESS
        }
        result => {
            finish(result.map_err(|error| std::io::Error::other(format!("the event loop failed: {error}"))))
        }
    }
}

/// `--workers N`: reserve the ports, start the workers, print the startup lines once they
/// all listen, and supervise them until stopped.
fn run_supervisor(args: &Args, specs: &[ListenSpec], log_file_limit: impl FnOnce()) -> ExitCode {
    for spec in specs {
        if is_room(spec) && args.backplane.is_none() {
            cli::eprint_line(format_args!(
                "evloop-server: {} cannot run with --workers {} alone: each worker would hold its own room; add --backplane redis://HOST:PORT or nats://HOST:PORT to share it, or use --workers 1",
                spec.handler, args.workers
            ));
            return ExitCode::from(2);
        }
        if let Some(addr) = spec.addrs.iter().find(|addr| addr.tcp().is_none()) {
            cli::eprint_line(format_args!(
                "evloop-server: {addr} cannot be shared by --workers {}: use TCP (or tls://) addresses, or --workers 1",
                args.workers
            ));
            return ExitCode::from(2);
        }
    }
    if specs.iter().flat_map(|spec| &spec.addrs).any(|addr| matches!(addr, ListenAddr::Tls(_))) {
        if let Err(reason) = cli::check_tls(args.tls_cert.as_deref(), args.tls_key.as_deref()) {
            return cli::usage_error("evloop-server", &reason);
        }
    }
    let mut resolved = specs.to_vec();
    let mut reservations = Vec::new();
    for addr in resolved.iter_mut().flat_map(|spec| spec.addrs.iter_mut()) {
        let (ListenAddr::Tcp(socket_addr) | ListenAddr::Tls(socket_addr)) = addr else {
            continue;
        };
        match cli::reserve_port(*socket_addr) {
            Ok((socket, bound)) => {
                *socket_addr = bound;
                reservations.push(socket);
            }
            Err(error) => {
                cli::eprint_line(format_args!("evloop-server: cannot listen on {addr}: {error}"));
                return ExitCode::from(1);
            }
        }
    }
    let program = match std::env::current_exe() {
        Ok(program) => program,
        Err(error) => {
            cli::eprint_line(format_args!(
                "evloop-server: cannot find its own binary to start workers: {error}"
            ));
            return ExitCode::from(1);
        }
    };
    let command = WorkerCommand {
        program,
        args: args.worker_args(&resolved),
        startup_lines: resolved.iter().map(|spec| spec.addrs.len()).sum(),
        metrics_fd: None,
    };
    log_file_limit();
    let listening = workers::startup_lines(&resolved);
    let result = workers::supervise(&command, args.workers as usize, || {
        print_startup_lines(&listening, &resolved);
        cli::notify("READY=1");
    });
    drop(reservations);
    finish(result)
}

/// `--model iterative|threads|fork|select|poll`: the classic servers, same handlers and codecs.
fn run_model(args: &Args, specs: &[ListenSpec], log_file_limit: impl FnOnce()) -> ExitCode {
    if args.workers > 1 {
        cli::eprint_line(format_args!("evloop-server: --workers applies to the reactor model only"));
        return ExitCode::from(2);
    }
    if args.model == Model::Fork {
        if let Some(spec) = specs.iter().find(|spec| is_room(spec)) {
            return cli::usage_error(
                "evloop-server",
                &format!(
                    "{} cannot run with --model fork: each process would hold a room of its own",
                    spec.handler
                ),
            );
        }
    }
    let config = args.server_config(false);
    let (services, listening) = match cli::bind_model(args.model, specs, &config) {
        Ok(bound) => bound,
        Err(error) => return start_failed(&error),
    };
    log_file_limit();
    print_startup_lines(&listening, specs);
    cli::notify("READY=1");
    finish(cli::run_model(args.model, services, &config))
}

/// Prints the startup lines (`<handler> listening on <addr> (<what it speaks>)`, see
/// [`Listening::startup_line`]) and flushes: scripts and tests wait for them. `listening` is
/// in the order of `specs` and their addresses, one per address, whichever model bound them.
fn print_startup_lines(listening: &[Listening], specs: &[ListenSpec]) {
    debug_assert_eq!(listening.len(), specs.iter().map(|spec| spec.addrs.len()).sum::<usize>());
    let codecs = specs.iter().flat_map(|spec| spec.addrs.iter().map(|_| spec.codec));
    let mut stdout = std::io::stdout().lock();
    for (listener, codec) in listening.iter().zip(codecs) {
        let _ = writeln!(stdout, "{}", listener.startup_line(codec));
    }
    let _ = stdout.flush();
}

/// One line on stderr; exit 2 for listeners that make no sense (a usage error), 1 for an
/// address that cannot be bound.
fn start_failed(error: &StartError) -> ExitCode {
    cli::eprint_line(format_args!("evloop-server: {error}"));
    ExitCode::from(if matches!(error, StartError::Config(_)) { 2 } else { 1 })
}

/// The one-line summary on a clean stop (exit 0), or the error (exit 1).
fn finish(result: std::io::Result<evloop::RunSummary>) -> ExitCode {
    match result {
        Ok(summary) => {
            cli::print_line(format_args!("evloop-server {summary}"));
            ExitCode::SUCCESS
        }
        Err(error) => {
            cli::eprint_line(format_args!("evloop-server: {error}"));
            ExitCode::from(1)
        }
    }
}
