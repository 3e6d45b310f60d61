//! Timelines of apparent concurrency, for docs/apparent-concurrency.md: who was served when,
//! one row per client, one mark per handled message. It runs the server four ways with
//! `--trace-file` (the reactor; a thread per client; the iterative server; the reactor with
//! `--work-us 200`), puts 8 clients on each for a short bounded run, and draws each trace as
//! an SVG with plotters. It can also draw any trace file the server wrote.
//!
//! Run:  cargo run --release --example timeline                     (the four, into a temp folder)
//!       cargo run --release --example timeline -- --out docs/charts    (the four the docs show)
//!       cargo run --release --example timeline -- --draw TRACE.json OUT.svg [--window-ms 20]
//!
//! Each SVG written is named on stdout. The four go to a folder of their own unless --out
//! names one: the docs' charts are committed, and a reader trying the example should not
//! overwrite them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use evloop::load::chart::PALETTE;
use plotters::prelude::*;
use serde_json::Value;

mod common;

/// See the module documentation.
#[derive(Parser, Debug)]
struct Args {
    /// Only draw TRACE (a --trace-file) into OUT
    #[arg(long, num_args = 2, value_names = ["TRACE", "OUT"])]
    draw: Option<Vec<PathBuf>>,
    /// The folder the four runs' SVGs are written to (made if missing) [default:
    /// evloop-timeline in the temp folder]; docs/charts for the docs' own
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// How much of each run to draw, from its first message, in milliseconds [default: 20
    /// for the four runs; with --draw, the whole trace]
    #[arg(long, value_name = "MS")]
    window_ms: Option<f64>,
}

impl Args {
    /// The window to draw: `--window-ms`, or the default for what is drawn.
    fn window_ms(&self) -> f64 {
        let whole_trace = if self.draw.is_some() { f64::INFINITY } else { 20.0 };
        self.window_ms.unwrap_or(whole_trace)
    }

    /// The folder the four runs go to: `--out`, or one of their own in the temp folder.
    fn out_dir(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| std::env::temp_dir().join("evloop-timeline"))
    }
}

fn main() {
    let args = Args::parse();
    if let Some(paths) = &args.draw {
        draw(&paths[0], &paths[1], "timeline", args.window_ms());
        println!("wrote {}", paths[1].display());
        return;
    }
    let out = args.out_dir();
    std::fs::create_dir_all(&out).unwrap_or_else(|error| panic!("cannot make {}: {error}", out.display()));
    common::build(&["--bin", "evloop-server", "--bin", "evloop-load"]);
    let runs: [(&str, &[&str]); 4] = [
        ("reactor", &["--model", "reactor"]),
        ("threads", &["--model", "threads"]),
        ("iterative", &["--model", "iterative"]),
        ("reactor-work200", &["--model", "reactor", "--work-us", "200"]),
    ];
    for (name, model_args) in runs {
        let trace = std::env::temp_dir().join(format!("evloop-timeline-{name}.json"));
        let mut server = Command::new(common::binary("evloop-server"));
        server.args(model_args).args([
            "--listen",
            "echo=127.0.0.1:0",
            "--trace-file",
            trace.to_str().unwrap(),
        ]);
        let (mut server, addr) = common::start_server(server);
        // 8 clients, closed loop; the iterative server serves one of them, the others wait.
        let status = Command::new(common::binary("evloop-load"))
            .args(["--target", &addr, "-c", "8", "-d", "0.2s", "--no-progress", "--reply-timeout", "0.5s"])
            .output()
            .expect("run evloop-load");
        drop(status);
        common::stop(&mut server);
        let out = out.join(format!("timeline-{name}.svg"));
        let title = match name {
            "reactor" => "reactor: one thread, 8 clients, messages interleaved".to_string(),
            "threads" => "threads: a thread per client, overlapping on 2 cores".to_string(),
            "iterative" => "iterative: one client at a time".to_string(),
            _ => "reactor, --work-us 200: one slow message delays everyone".to_string(),
        };
        draw(&trace, &out, &title, args.window_ms());
        println!("wrote {}", out.display());
    }
}

/// One handled message: its track, start and duration (µs).
struct Slice {
    track: u64,
    start: f64,
    duration: f64,
}

/// Draws the message slices of `trace` within `window_ms` of the first one.
fn draw(trace: &Path, out: &Path, title: &str, window_ms: f64) {
    let text = std::fs::read_to_string(trace).expect("a trace file");
    let trace: Value = serde_json::from_str(&text).expect("Trace Event Format JSON");
    let events = trace["traceEvents"].as_array().expect("traceEvents");
    let mut names: BTreeMap<u64, String> = BTreeMap::new();
    let mut slices = Vec::new();
    for event in events {
        let track = event["tid"].as_u64().unwrap_or(0);
        match event["ph"].as_str() {
            Some("M") => {
                names.insert(track, event["args"]["name"].as_str().unwrap_or("").to_string());
            }
            Some("X") => slices.push(Slice {
                track,
                start: event["ts"].as_f64().unwrap_or(0.0),
                duration: event["dur"].as_f64().unwrap_or(0.0),
            }),
            _ => {}
        }
    }
    let first = slices.iter().map(|slice| slice.start).fold(f64::INFINITY, f64::min);
    let end = first + window_ms * 1000.0;
    slices.retain(|slice| slice.start < end);
    // Rows: the client tracks, in order (a client the server never served has none).
    let rows: Vec<u64> = names.keys().copied().filter(|&track| track != 0).collect();
    let row_of = |track: u64| rows.iter().position(|&row| row == track).unwrap_or(0);
    let last = slices.iter().map(|slice| slice.start + slice.duration).fold(first, f64::max);
    let span_ms = ((last.min(end) - first) / 1000.0).max(0.001);

    let root = SVGBackend::new(out, (1000, 120 + 34 * rows.len() as u32)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(200)
        .build_cartesian_2d(0.0..span_ms, -0.5..(rows.len() as f64 - 0.5))
        .unwrap();
    chart
        .configure_mesh()
        .x_desc("time (ms)")
        .y_labels(rows.len())
        .y_label_formatter(&|value| {
            let index = value.round() as usize;
            rows.get(index).and_then(|track| names.get(track)).cloned().unwrap_or_default()
        })
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .disable_y_mesh()
        .draw()
        .unwrap();
    // A message too short to see is drawn about a pixel wide: a mark, whatever it took.
    let min_width = span_ms * 0.0012;
    chart
        .draw_series(slices.iter().map(|slice| {
            let row = row_of(slice.track) as f64;
            let x0 = (slice.start - first) / 1000.0;
            let x1 = x0 + (slice.duration / 1000.0).max(min_width);
            let color = PALETTE[row_of(slice.track) % PALETTE.len()];
            Rectangle::new([(x0, row - 0.35), (x1, row + 0.35)], color.filled())
        }))
        .unwrap();
    root.present().unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--window-ms` bounds what `--draw` draws too (issue 24: it drew the whole trace
    /// whatever the flag said); without it, `--draw` draws everything, the four runs 20 ms.
    #[test]
    fn the_window_applies_to_draw() {
        let parse = |args: &[&str]| Args::parse_from([&["timeline"], args].concat());
        assert_eq!(parse(&["--draw", "t.json", "o.svg", "--window-ms", "5"]).window_ms(), 5.0);
        assert_eq!(parse(&["--draw", "t.json", "o.svg"]).window_ms(), f64::INFINITY);
        assert_eq!(parse(&[]).window_ms(), 20.0);
        assert_eq!(parse(&["--window-ms", "7"]).window_ms(), 7.0);
    }

    /// The four runs go to a temp folder unless --out names one: the committed charts under
    /// docs/charts are redrawn only on request (issue 36: running the example overwrote them).
    #[test]
    fn the_four_runs_leave_the_docs_alone_by_default() {
        let parse = |args: &[&str]| Args::parse_from([&["timeline"], args].concat());
        assert_eq!(parse(&[]).out_dir(), std::env::temp_dir().join("evloop-timeline"));
        assert_eq!(parse(&["--out", "docs/charts"]).out_dir(), PathBuf::from("docs/charts"));
    }
}
