//! `evloop-load --sweep-connections 1,10,100,1000,10000`: one bounded run per connection
//! count, written as CSV and as an SVG chart of throughput and p99 latency against the
//! number of connections. The same writers serve the comparison drivers in `examples/`.

use std::io::{self, Write as _};
use std::path::Path;

use crate::load::chart::{Panel, Series, write_svg};
use crate::load::config::LoadConfig;
use crate::load::report::Report;

/// One run of a sweep.
#[derive(Clone, Debug)]
pub struct Point {
    /// Its connection count.
    pub connections: u32,
    /// Its report.
    pub report: Report,
}

/// Runs `config` once per count in `counts`, with `run` doing each run (so a caller can use
/// one process or several); an interrupted run is the last.
pub fn run(
    config: &LoadConfig,
    counts: &[u32],
    mut run: impl FnMut(&LoadConfig) -> io::Result<Report>,
) -> io::Result<Vec<Point>> {
    let mut points = Vec::new();
    for &connections in counts {
        let config = LoadConfig { connections, threads: config.threads.min(connections), ..config.clone() };
        let report = run(&config)?;
        let interrupted = report.interrupted;
        points.push(Point { connections, report });
        if interrupted {
            break; // told to stop: the sweep ends with the run it was in
        }
    }
    Ok(points)
}

/// The CSV header, one column per figure.
pub const CSV_HEADER: &str =
    "connections,msgs_per_s,p50_us,p90_us,p99_us,p99_9_us,max_us,verified,failed,lost,connect_failed,ok";

/// One CSV row for `point`.
pub fn csv_row(point: &Point) -> String {
    let report = &point.report;
    let latency = &report.latency_us;
    format!(
        "{},{:.0},{:.1},{:.1},{:.1},{:.1},{:.1},{},{},{},{},{}",
        point.connections,
        report.throughput.msgs_per_s,
        latency.p50,
        latency.p90,
        latency.p99,
        latency.p99_9,
        latency.max,
        report.messages.verified,
        report.messages.failed,
        report.messages.lost,
        report.connections.failed,
        report.ok
    )
}

/// Writes `points` as CSV.
pub fn write_csv(path: &Path, points: &[Point]) -> io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    writeln!(file, "{CSV_HEADER}")?;
    for point in points {
        writeln!(file, "{}", csv_row(point))?;
    }
    Ok(())
}

/// Writes a chart of throughput and p99 latency against connections, one line per named
/// sweep (one per server or model compared).
pub fn write_chart(path: &Path, sweeps: &[(String, Vec<Point>)]) -> io::Result<()> {
    let series = |figure: fn(&Report) -> f64| -> Vec<Series> {
        sweeps
            .iter()
            .map(|(name, points)| Series {
                name: name.clone(),
                points: points
                    .iter()
                    .map(|point| (f64::from(point.connections), figure(&point.report)))
                    .collect(),
            })
            .collect()
    };
    let throughput = Panel {
        title: "Throughput (verified replies)".to_string(),
        x_label: "connections".to_string(),
        y_label: "msgs/s".to_string(),
        log_x: true,
        log_y: true,
        series: series(|report| report.throughput.msgs_per_s),
    };
    let latency = Panel {
        title: "p99 latency".to_string(),
        x_label: "connections".to_string(),
        y_label: "ms".to_string(),
        log_x: true,
        log_y: true,
        series: series(|report| report.latency_us.p99 / 1000.0),
    };
    write_svg(path, &[throughput, latency])
}
