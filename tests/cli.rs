//! The `evloop-server` binary as users and scripts run it: startup lines, exit codes,
//! signals, and running out of file descriptors.

mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::thread;
use std::time::Duration;

use util::{ServerProcess, connect, server_command};

/// Runs the binary with `args` to completion; returns (exit code, stdout, stderr).
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let output = server_command(args).output().expect("run evloop-server");
    (
        output.status.code(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// Each listener gets one startup line with its real address, and the addresses work.
#[test]
fn prints_one_startup_line_per_listener() {
    let server = ServerProcess::start(
        server_command(&["--listen", "echo=127.0.0.1:0", "--listen", "sum:length=[::1]:0"]),
        2,
    );
    assert!(server.startup_lines[0].starts_with("echo listening on 127.0.0.1:"));
    assert!(server.startup_lines[1].starts_with("sum listening on [::1]:"));
    assert!(server.startup_lines[0].ends_with(" (line)"), "{}", server.startup_lines[0]);
    assert!(server.startup_lines[1].ends_with(" (length)"), "{}", server.startup_lines[1]);
    assert_ne!(server.addrs[0].port(), 0);
    let mut echo = connect(server.addrs[0]);
    echo.roundtrip("hi", "hi");
    let mut sum = TcpStream::connect(server.addrs[1]).unwrap();
    sum.write_all(&[0, 0, 0, 3, b'1', b',', b'2']).unwrap();
    let mut reply = [0; 5];
    sum.set_read_timeout(Some(util::READ_TIMEOUT)).unwrap();
    sum.read_exact(&mut reply).unwrap();
    assert_eq!(reply, [0, 0, 0, 1, b'3']);
}

/// With no --listen: the line services (the chat room last), the room again over WebSocket,
/// then the raw ones for the course's clients and the time-of-day services over TCP and UDP,
/// and the console, all on loopback, in that order (on free ports here,
/// so a server running on the default ports does not collide; the ports themselves are
/// `ListenSpec::defaults`'s unit test). Each line ends with what its listener speaks, so raw
/// echo does not read like line echo (issue 36), after the address scripts read.
#[test]
fn default_listeners() {
    let mut command = server_command(&[]);
    command.env("EVLOOP_DEFAULT_PORTS", "0");
    let server = ServerProcess::start(command, 16);
    let datagrams = "(datagrams, no framing)";
    let expected = [
        ("echo", "", "(line)"),
        ("uppercase", "", "(line)"),
        ("sum", "", "(line)"),
        ("chat", "", "(line)"),
        ("chat", "", "(ws, chat page at /)"),
        ("echo", "", "(raw)"),
        ("echo", "udp://", datagrams),
        ("uppercase", "", "(raw)"),
        ("uppercase", "udp://", datagrams),
        ("sum", "", "(raw)"),
        ("sum", "udp://", datagrams),
        ("daytime", "", "(raw)"),
        ("daytime", "udp://", datagrams),
        ("time", "", "(raw)"),
        ("time", "udp://", datagrams),
        ("console", "", "(http, console page at /)"),
    ];
    assert_eq!(server.startup_lines.len(), expected.len());
    for (line, (handler, scheme, speaks)) in server.startup_lines.iter().zip(expected) {
        let prefix = format!("{handler} listening on {scheme}127.0.0.1:");
        assert!(line.starts_with(&prefix), "{line:?} should start with {prefix:?}");
        let addr = line.split(' ').nth(3).unwrap_or_default();
        assert!(!addr.ends_with(":0"), "{line}");
        assert_eq!(line, &format!("{handler} listening on {addr} {speaks}"));
    }
    connect(server.addrs[2]).roundtrip("50,40", "90");
}

/// Bad flags and values: one line on stderr, exit code 2, nothing on stdout.
#[test]
fn bad_usage_exits_2_with_one_line() {
    for args in [
        &["--bogus"][..],
        &["--listen", "nope=127.0.0.1:0"],
        &["--listen", "echo:zip=127.0.0.1:0"],
        &["--listen", "echo=not-an-address"],
        &["--listen", "echo=127.0.0.1"],
        &["--max-frame", "0"],
        &["--max-output", "lots"],
        &["--idle-timeout", "-1"],
        &["--max-connections", "0"],
        &["--backlog", "x"],
    ] {
        let (code, stdout, stderr) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr:?}");
        assert!(stderr.starts_with("evloop-server: "), "{stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
    }
}

/// A host name that does not resolve is said so, by the server (`--listen`) and the loader
/// (`--target`) alike, in one line with exit 2 (issue 36: it was called a malformed address).
#[test]
fn unresolvable_host_names_are_said_so() {
    let (code, _, stderr) = run(&["--listen", "echo=nosuchhost.invalid:17011"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(stderr.contains("the host name nosuchhost.invalid could not be resolved"), "{stderr}");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_evloop-load"))
        .args(["--target", "nosuchhost.invalid:7000", "-n", "1", "--no-progress"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(stderr.contains("the host name nosuchhost.invalid could not be resolved"), "{stderr}");
}

/// An address in use, or not local, is named in a one-line error with exit code 1.
#[test]
fn unbindable_address_exits_1_naming_it() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, _, stderr) = run(&["--listen", &format!("echo={addr}")]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(stderr.contains(&format!("cannot listen on {addr}")), "{stderr}");
    let (code, _, stderr) = run(&["--listen", "echo=192.0.2.1:7000"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cannot listen on 192.0.2.1:7000"), "{stderr}");
}

/// --help describes the flags and exits 0.
#[test]
fn help_exits_0() {
    let (code, stdout, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
    for flag in [
        "--listen",
        "--max-connections",
        "--max-frame",
        "--max-output",
        "--idle-timeout",
        "--backlog",
        "--stats-interval",
    ] {
        assert!(stdout.contains(flag), "--help lacks {flag}");
    }
}

/// The README's first command builds both binaries, as the sentence after it says (issue 36:
/// `cargo run --release --bin evloop-server` built the server alone, and `evloop-load` was
/// then "command not found").
#[test]
fn the_readme_first_command_builds_both_binaries() {
    let readme = include_str!("../README.md");
    let block = readme.split("```sh\n").nth(1).expect("a first sh block");
    let first = block.lines().next().unwrap_or_default();
    let command = first.split('#').next().unwrap_or_default().trim();
    let builds_all = command.starts_with("cargo build --release") && !command.contains("--bin ");
    assert!(builds_all, "the first command builds every binary: {command:?}");
    assert!(readme.contains("the first command builds both"), "the sentence it makes true");
}

/// `--help` and the README agree (issue 36): the default listeners include the chat page on
/// :7080; --max-frame's default is shown in the README's unit; --ws-origin's default is
/// given; the loader's --codec values are all in the README.
#[test]
fn help_agrees_with_the_readme() {
    let readme = include_str!("../README.md");
    let (code, help, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
    assert!(help.contains("on :7080, with a chat page at http://127.0.0.1:7080/"), "{help}");
    assert!(help.contains("[default: 64K]") && readme.contains("--max-frame BYTES      default 64K"));
    assert!(help.contains("[default: same host only]") && readme.contains("(default: same host only)"));
    let output =
        std::process::Command::new(env!("CARGO_BIN_EXE_evloop-load")).arg("--help").output().unwrap();
    let load_help = String::from_utf8_lossy(&output.stdout);
    let values =
        load_help.split("--codec <CODEC>").nth(1).and_then(|rest| rest.split("[possible values: ").nth(1));
    let values = values.and_then(|rest| rest.split(']').next()).expect("--codec's possible values");
    let readme_codecs =
        readme.split("--codec ").nth(1).and_then(|rest| rest.split([',', ' ']).next()).unwrap();
    for codec in values.split(", ") {
        assert!(readme_codecs.split('|').any(|listed| listed == codec), "{codec} not in {readme_codecs}");
    }
}

/// SIGTERM: stop accepting, flush replies to what was already read, close everything,
/// print a one-line summary, exit 0.
#[test]
fn sigterm_drains_and_exits_0() {
    let server =
        ServerProcess::start(server_command(&["--listen", "echo=127.0.0.1:0", "--max-output", "64K"]), 1);
    let addr = server.addrs[0];
    let mut idle = connect(addr);
    idle.roundtrip("here", "here");
    // A client that sends a lot and reads nothing yet, so replies are pending at the signal.
    let mut busy = TcpStream::connect(addr).unwrap();
    busy.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut sent = Vec::new();
    let chunk = b"pending reply line ............................................\n".repeat(1000);
    loop {
        match busy.write(&chunk) {
            Ok(n) => sent.extend_from_slice(&chunk[..n]),
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break;
            }
            Err(error) => panic!("{error}"),
        }
    }
    server.signal(libc::SIGTERM);
    idle.expect_closed(); // the signal was handled: idle connections close at once
    drop(idle);
    assert!(TcpStream::connect(addr).is_err(), "the server stopped accepting");
    busy.set_read_timeout(Some(util::READ_TIMEOUT)).unwrap();
    let mut echoed = Vec::new();
    match busy.read_to_end(&mut echoed) {
        Ok(_) => {}
        // The server lingers (FIN after its last reply, then waits for our close), so the
        // end is a clean end of stream, never a reset that could lose replies.
        Err(error) => panic!("{error}"),
    }
    assert!(!echoed.is_empty(), "replies to requests already read were flushed");
    assert!(echoed.ends_with(b"\n"), "only whole replies");
    assert_eq!(&echoed[..], &sent[..echoed.len()], "replies are the requests, in order");
    drop(busy); // the server lingers until its last client closes
    let (code, stdout) = server.wait();
    assert_eq!(code, Some(0));
    let summary: Vec<&str> = stdout.lines().collect();
    assert_eq!(summary.len(), 1, "{stdout:?}");
    assert!(summary[0].starts_with("evloop-server stopped after"), "{stdout}");
    assert!(summary[0].contains("2 connections served"), "{stdout}");
}

/// SIGINT stops an idle server the same way.
#[test]
fn sigint_stops_the_server() {
    let server = ServerProcess::start(server_command(&["--listen", "echo=127.0.0.1:0"]), 1);
    server.signal(libc::SIGINT);
    let (code, stdout) = server.wait();
    assert_eq!(code, Some(0));
    assert!(stdout.starts_with("evloop-server stopped after"), "{stdout}");
}

/// Out of file descriptors (a low RLIMIT_NOFILE): the server logs it, stops accepting
/// without spinning the CPU, keeps serving its clients, and accepts the waiting ones once
/// descriptors free up.
#[test]
fn survives_running_out_of_file_descriptors() {
    let mut command = server_command(&["--listen", "echo=127.0.0.1:0", "--max-connections", "1000"]);
    // SAFETY: setrlimit is async-signal-safe, and the closure touches nothing else.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: 64, rlim_max: 64 };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (server, stderr_lines) = ServerProcess::start_logged(command, 1, "info");
    let mut clients: Vec<_> = (0..90).map(|_| connect(server.addrs[0])).collect();
    for client in &mut clients {
        client.send_line("ping");
    }
    // The readiness signal: the server says it cannot accept.
    let line = util::wait_for_log(&stderr_lines, "cannot accept, pausing");
    assert!(line.contains("Too many open files"), "{line}");
    // Not spinning: over one second the server uses a small fraction of one CPU.
    let cpu_before = cpu_ticks(server.pid());
    thread::sleep(Duration::from_secs(1));
    let cpu_used = cpu_ticks(server.pid()) - cpu_before;
    assert!(cpu_used < 30, "the server used {cpu_used} of 100 clock ticks while out of descriptors");
    // The first clients were accepted: they are served throughout.
    for client in &mut clients[..40] {
        client.expect("ping");
    }
    clients.drain(..40);
    // Their descriptors free up, and the clients waiting in the backlog are served.
    for client in &mut clients {
        client.expect("ping");
    }
}

/// User plus system CPU time of `pid`, in clock ticks (normally 100 a second).
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    // Fields 14 and 15 of the full line (utime, stime) are 11 and 12 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// `--workers auto` starts one worker per core.
#[test]
fn workers_auto_is_one_per_core() {
    let cores = thread::available_parallelism().unwrap().get();
    let server =
        ServerProcess::start(server_command(&["--workers", "auto", "--listen", "echo=127.0.0.1:0"]), 1);
    connect(server.addrs[0]).roundtrip("hi", "hi");
    server.signal(libc::SIGTERM);
    let (code, stdout) = server.wait();
    assert_eq!(code, Some(0));
    if cores > 1 {
        assert!(stdout.contains(&format!("({cores} workers)")), "{stdout}");
    } else {
        assert!(!stdout.contains("workers)"), "{stdout}");
    }
}

/// Shell completions and a man page, generated from the flags on request, for both binaries.
#[test]
fn completions_and_man_pages() {
    for binary in [env!("CARGO_BIN_EXE_evloop-server"), env!("CARGO_BIN_EXE_evloop-load")] {
        let completions =
            std::process::Command::new(binary).args(["--completions", "bash"]).output().unwrap();
        assert!(completions.status.success());
        let script = String::from_utf8_lossy(&completions.stdout);
        assert!(script.contains("complete -F"), "{binary}: {script}");
        assert!(
            script.contains("--max-frame") || script.contains("--target"),
            "{binary}: the flags are in it"
        );
        let man = std::process::Command::new(binary).arg("--man").output().unwrap();
        assert!(man.status.success());
        let page = String::from_utf8_lossy(&man.stdout);
        assert!(page.starts_with(".ie") && page.contains(".SH NAME"), "{binary}: {page}");
    }
}

/// Bash completion offers the values of --model, --workload and --codec, not file names
/// (issue 24), and a wrong one is refused in one line that lists them.
#[test]
fn completions_offer_the_values_of_enumerated_flags() {
    let script = |binary: &str| {
        let output = std::process::Command::new(binary).args(["--completions", "bash"]).output().unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let server = script(env!("CARGO_BIN_EXE_evloop-server"));
    assert!(server.contains("reactor iterative threads fork select poll"), "--model values missing");
    let load = script(env!("CARGO_BIN_EXE_evloop-load"));
    assert!(load.contains("echo uppercase sum broadcast file"), "--workload values missing");
    assert!(load.contains("line length ws"), "--codec values missing");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_evloop-server"))
        .args(["--model", "nope"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("[possible values: reactor, iterative, threads, fork, select, poll]"),
        "{stderr}"
    );
}
