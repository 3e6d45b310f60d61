//! Faults found by abuse: output nobody reads, failed starts, a closed terminal, oversize
//! fixed frames, addresses with control characters. Each test failed before its fix.

mod util;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;

use util::{ServerProcess, connect, server_command};

/// A socket path of this test's own, removed if left over.
fn socket_path(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("evloop-faults-{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: kill() on the PID of a process this test started has no memory-safety
    // preconditions.
    assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0, "kill failed");
}

/// Runs the server to completion with `args`: exit code and stderr.
fn run(args: &[&str]) -> (Option<i32>, String) {
    let output = server_command(args).output().unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// `evloop-server ... | head -1`, then SIGTERM: the summary cannot be printed, and the
/// server still exits 0 instead of panicking (exit 101).
#[test]
fn a_closed_stdout_is_not_a_crash() {
    let mut child = server_command(&["--listen", "echo=127.0.0.1:0"]).spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains(" listening on "), "{line}");
    drop(stdout); // what `head -1` does after its line
    signal(child.id(), libc::SIGTERM);
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let status = child.wait().unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(status.code(), Some(0), "{stderr}");
}

/// Workers whose supervisor was killed (-9) drain and stop; printing their summary into the
/// dead parent's pipe does not make them panic.
#[test]
fn workers_outlive_a_killed_supervisor_quietly() {
    let args = ["--workers", "2", "--listen", "echo=127.0.0.1:0", "--drain-timeout", "1"];
    let mut child = server_command(&args).spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line.split(' ').nth(3).unwrap().parse().unwrap(); // `echo listening on ADDR (line)`
    connect(addr).roundtrip("before", "before");
    signal(child.id(), libc::SIGKILL);
    child.wait().unwrap();
    // The workers share the supervisor's stderr: it reaches its end once both have exited.
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(stderr.contains("stopping"), "the workers drained: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A start that fails after a Unix listener was bound removes its socket file: a later UDP
/// listener refused (exit 2), or a later TCP address taken (exit 1).
#[test]
fn a_failed_start_leaves_no_socket_file() {
    let path = socket_path("failed-start");
    let unix = format!("echo=unix:{}", path.display());
    let (code, stderr) = run(&["--listen", &unix, "--listen", "broadcast=udp://127.0.0.1:0"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(!path.exists(), "{} was left behind", path.display());

    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp = format!("echo={}", taken.local_addr().unwrap());
    let (code, stderr) = run(&["--listen", &unix, "--listen", &tcp]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!path.exists(), "{} was left behind", path.display());
}

/// SIGHUP (the terminal closed) drains and stops like SIGTERM: exit 0, the summary, and the
/// Unix socket file removed. Under --workers the supervisor does the same.
#[test]
fn sighup_drains_and_stops() {
    let path = socket_path("sighup");
    let unix = format!("echo=unix:{}", path.display());
    let server =
        ServerProcess::start(server_command(&["--listen", "echo=127.0.0.1:0", "--listen", &unix]), 2);
    connect(server.addrs[0]).roundtrip("hello", "hello");
    assert!(path.exists());
    server.signal(libc::SIGHUP);
    let (code, stdout) = server.wait();
    assert_eq!(code, Some(0));
    assert!(stdout.starts_with("evloop-server stopped after"), "{stdout}");
    assert!(!path.exists(), "the socket file was left behind");

    let workers =
        ServerProcess::start(server_command(&["--workers", "2", "--listen", "echo=127.0.0.1:0"]), 1);
    connect(workers.addrs[0]).roundtrip("hello", "hello");
    workers.signal(libc::SIGHUP);
    let (code, stdout) = workers.wait();
    assert_eq!(code, Some(0));
    assert!(stdout.contains("(2 workers)"), "{stdout}");
}

/// `fixed:N` past `--max-frame` would let each connection buffer N bytes: refused at start
/// (exit 2, one line naming --max-frame), in every model; raising --max-frame allows it.
#[test]
fn fixed_frames_are_bounded_by_max_frame() {
    for model in ["reactor", "threads"] {
        let (code, stderr) = run(&["--model", model, "--listen", "echo:fixed:100000=127.0.0.1:0"]);
        assert_eq!(code, Some(2), "{model}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("--max-frame"), "{stderr}");
    }
    let args = ["--listen", "echo:fixed:100000=127.0.0.1:0", "--max-frame", "100000"];
    let server = ServerProcess::start(server_command(&args), 1);
    assert_eq!(server.startup_lines.len(), 1);
}

/// A newline in what the user typed stays escaped: every error is one line.
#[test]
fn errors_stay_one_line() {
    for (args, code) in [
        (["--listen", "echo=unix:/nonexistent-evloop-dir/a\nb.sock"], 1),
        (["--listen", "ec\nho=127.0.0.1:0"], 2),
        (["--listen", "echo=127.0.0.1:7\n0"], 2),
        (["--listen", "echo:fix\ned=127.0.0.1:0"], 2),
    ] {
        let output = server_command(&args).stdout(Stdio::null()).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr:?}");
        assert!(stderr.contains("\\n"), "the newline is shown escaped: {stderr:?}");
    }
}
