//! `--trace-file`: a timeline in the Trace Event Format, for the reactor and the blocking
//! models: valid JSON with the fields Perfetto needs, events in time order per track, and
//! the size bound.

mod util;

use std::collections::HashMap;
use std::process::Command;

use serde_json::Value;
use util::{ServerProcess, server_command};

/// Runs `model` with a trace file, loads it with `connections` clients sending `messages`
/// in all, stops it; the parsed file.
fn traced_run(model: &str, connections: &str, messages: &str, extra: &[&str]) -> Value {
    let path = std::env::temp_dir().join(format!("evloop-trace-{}-{model}.json", std::process::id()));
    let path_text = path.display().to_string();
    let mut args = vec!["--model", model, "--listen", "echo=127.0.0.1:0", "--trace-file", &path_text];
    args.extend(extra);
    let server = ServerProcess::start(server_command(&args), 1);
    let output = Command::new(env!("CARGO_BIN_EXE_evloop-load"))
        .args(["--target", &server.addrs[0].to_string(), "-c", connections, "-n", messages, "--no-progress"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
    server.signal(libc::SIGTERM);
    let (code, _) = server.wait();
    assert_eq!(code, Some(0));
    let text = std::fs::read_to_string(&path).expect("the trace file is written at the stop");
    std::fs::remove_file(&path).unwrap();
    serde_json::from_str(&text).expect("the trace file is JSON")
}

/// Every event has what a Trace Event Format viewer needs; each track's events come in time
/// order; each client's messages are slices on its own track.
#[track_caller]
fn assert_valid_timeline(trace: &Value, clients: usize, messages: u64, loop_track: bool) {
    let events = trace["traceEvents"].as_array().expect("traceEvents");
    let mut last_ts: HashMap<u64, f64> = HashMap::new();
    let mut slices: HashMap<u64, u64> = HashMap::new();
    let mut wakeups = 0;
    for event in events {
        for field in ["ph", "ts", "pid", "tid", "name"] {
            assert!(event.get(field).is_some(), "{field} missing in {event}");
        }
        let (tid, ts) = (event["tid"].as_u64().unwrap(), event["ts"].as_f64().unwrap());
        match event["ph"].as_str().unwrap() {
            "M" => continue,
            "X" => {
                assert!(event["dur"].as_f64().unwrap() >= 0.0, "{event}");
                assert!(event["args"]["bytes"].as_u64().unwrap() > 0, "{event}");
                *slices.entry(tid).or_default() += 1;
            }
            "i" => {
                assert_eq!(tid, 0, "wakeups are on the loop's track");
                wakeups += 1;
            }
            other => panic!("unexpected phase {other}"),
        }
        let last = last_ts.insert(tid, ts).unwrap_or(0.0);
        assert!(ts >= last, "track {tid} goes back in time: {last} then {ts}");
    }
    assert_eq!(slices.len(), clients, "a track per client: {slices:?}");
    assert_eq!(slices.values().sum::<u64>(), messages, "a slice per message");
    assert_eq!(wakeups > 0, loop_track, "wakeups only for the reactor");
    assert_eq!(trace["otherData"]["truncated"], false);
}

/// The reactor's timeline: a track per client, a slice per message, and its wakeups.
#[test]
fn the_reactor_writes_a_timeline() {
    let trace = traced_run("reactor", "4", "40", &[]);
    assert_valid_timeline(&trace, 4, 40, true);
}

/// The threads and iterative models write the same kind of timeline (no loop track).
#[test]
fn the_blocking_models_write_timelines() {
    let trace = traced_run("threads", "4", "40", &[]);
    assert_valid_timeline(&trace, 4, 40, false);
    let trace = traced_run("iterative", "1", "10", &[]);
    assert_valid_timeline(&trace, 1, 10, false);
}

/// Past --trace-limit, recording stops and the file says so.
#[test]
fn the_timeline_is_bounded() {
    let trace = traced_run("reactor", "4", "400", &["--trace-limit", "50"]);
    assert_eq!(trace["traceEvents"].as_array().unwrap().len(), 50);
    assert_eq!(trace["otherData"]["truncated"], true);
    assert_eq!(trace["otherData"]["limit"], 50);
}

/// The select and poll models are one thread and one loop, like the reactor: the same
/// timeline, wakeups included (issue 24: the flag was ignored there, no file, exit 0).
#[test]
fn the_scanning_models_write_timelines_with_their_wakeups() {
    for model in ["select", "poll"] {
        let trace = traced_run(model, "4", "40", &[]);
        assert_valid_timeline(&trace, 4, 40, true);
    }
}

/// A process per client has no one loop to record: refused at the start, one line, exit 2.
#[test]
fn the_fork_model_refuses_a_trace_file() {
    let path = std::env::temp_dir().join(format!("evloop-trace-{}-fork.json", std::process::id()));
    let output = server_command(&["--model", "fork", "--listen", "echo=127.0.0.1:0", "--trace-file"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--trace-file cannot record --model fork"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(!path.exists());
}

/// One client, one number: the reactor's logs and its trace file name a connection alike
/// (`opened; conn=K peer=P` and the track `conn K P`).
#[test]
fn logs_and_the_trace_file_number_clients_alike() {
    use std::io::{BufRead, BufReader, Write};
    let path = std::env::temp_dir().join(format!("evloop-trace-{}-numbers.json", std::process::id()));
    let path_text = path.display().to_string();
    let args = ["--listen", "echo=127.0.0.1:0", "--trace-file", &path_text];
    let (server, logs) = ServerProcess::start_logged(server_command(&args), 1, "evloop=debug");
    let mut opened = Vec::new();
    for _ in 0..2 {
        let mut client = std::net::TcpStream::connect(server.addrs[0]).unwrap();
        client.write_all(b"hello\n").unwrap();
        let mut reply = String::new();
        BufReader::new(&client).read_line(&mut reply).unwrap();
        let line = util::wait_for_log(&logs, "opened; conn=");
        let (_, rest) = line.split_once("opened; conn=").unwrap();
        let (key, rest) = rest.split_once(" peer=").unwrap();
        let peer = rest.split_whitespace().next().unwrap();
        assert_eq!(peer, client.local_addr().unwrap().to_string());
        opened.push(format!("conn {key} {peer}"));
    }
    server.signal(libc::SIGTERM);
    let (code, _) = server.wait();
    assert_eq!(code, Some(0));
    let trace: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    std::fs::remove_file(&path).unwrap();
    let names: Vec<&str> = trace["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["name"] == "thread_name")
        .filter_map(|event| event["args"]["name"].as_str())
        .collect();
    for client in &opened {
        assert!(names.contains(&client.as_str()), "{client:?} among the tracks {names:?}");
    }
}

/// `--model fork --trace-file` with the default listeners is refused in one line: no notes
/// about which default listeners a fork server would leave out before it.
#[test]
fn fork_refuses_a_trace_file_in_one_line() {
    let path = std::env::temp_dir().join(format!("evloop-trace-{}-fork.json", std::process::id()));
    let output = server_command(&["--model", "fork", "--trace-file", &path.display().to_string()])
        .env("EVLOOP_DEFAULT_PORTS", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("--trace-file cannot record --model fork"), "{stderr}");
}
