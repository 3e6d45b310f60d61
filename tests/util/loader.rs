//! The real `evloop-load` binary, run to the end: its exit code and its JSON report.

use std::process::Command;

use serde_json::Value;

/// Runs evloop-load with `args` (plus --json --no-progress); returns its exit code and report.
pub fn load(args: &[&str]) -> (Option<i32>, Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_evloop-load"))
        .args(args)
        .args(["--json", "--no-progress"])
        .output()
        .expect("run evloop-load");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = serde_json::from_str(&stdout).unwrap_or_else(|error| {
        panic!("not a JSON report ({error}): {stdout}\nstderr: {}", String::from_utf8_lossy(&output.stderr))
    });
    (output.status.code(), report)
}

#[track_caller]
pub fn assert_all_verified(code: Option<i32>, report: &Value) {
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["ok"], true, "{report:#}");
    let messages = &report["messages"];
    assert!(messages["verified"].as_u64().unwrap() > 0, "{report:#}");
    assert_eq!(messages["failed"], 0, "{report:#}");
    assert_eq!(messages["lost"], 0, "{report:#}");
    assert_eq!(report["connections"]["failed"], 0, "{report:#}");
}
