//! `--workload broadcast --step-members N --limit-p95 DURATION`: how large a room the server
//! holds (the Hashrocket websocket-bench model). A run with N members, then 2N, 3N...,
//! each a closed loop of lines (`--active` senders, 1 by default, a line answered once every
//! member has it), until the p95 time for a line to reach every member passes the limit,
//! a run fails, or the room would pass `-c`. Written as CSV and as an SVG chart of reach
//! against members.

use std::io::{self, Write as _};
use std::path::Path;
use std::time::Duration;

use crate::load::chart::{Panel, Series, write_svg};
use crate::load::config::LoadConfig;
use crate::load::report::{Percentiles, Report};

/// One step: a room of `members` and its run.
#[derive(Clone, Debug)]
pub struct Step {
    /// Members in the room (connections, senders included).
    pub members: u32,
    /// The run's report.
    pub report: Report,
}

impl Step {
    /// The time for a line to reach every member (zeros if no line did).
    pub fn reach(&self) -> Percentiles {
        self.report.broadcast.as_ref().and_then(|broadcast| broadcast.reach_us).unwrap_or_default()
    }

    /// Whether the room held: every line verified, and p95 reach within `limit`.
    pub fn held(&self, limit: Duration) -> bool {
        self.report.ok && self.reach().count > 0 && self.reach().p95 <= limit.as_secs_f64() * 1e6
    }
}

/// The room sizes tried: `step`, `2 * step`... up to `ceiling`.
pub fn sizes(step: u32, ceiling: u32) -> impl Iterator<Item = u32> {
    (1..=u32::MAX)
        .map_while(move |index: u32| index.checked_mul(step))
        .take_while(move |&members| members <= ceiling)
}

/// Runs `config` as a room of each size in turn until one does not hold (see
/// [`Step::held`]) or a run is interrupted, with `run` doing each run and `each` told of
/// each step as it ends.
pub fn run(
    config: &LoadConfig,
    step: u32,
    limit: Duration,
    mut run: impl FnMut(&LoadConfig) -> io::Result<Report>,
    mut each: impl FnMut(&Step),
) -> io::Result<Vec<Step>> {
    let mut steps = Vec::new();
    for members in sizes(step, config.connections) {
        let config = LoadConfig {
            connections: members,
            threads: config.threads.min(members),
            active: Some(config.active.unwrap_or(1).min(members)),
            broadcast_closed_loop: true,
            ..config.clone()
        };
        let step = Step { members, report: run(&config)? };
        each(&step);
        let (held, interrupted) = (step.held(limit), step.report.interrupted);
        steps.push(step);
        if !held || interrupted {
            break;
        }
    }
    Ok(steps)
}

/// The largest room that held, if any did.
pub fn largest_held(steps: &[Step], limit: Duration) -> Option<u32> {
    steps.iter().filter(|step| step.held(limit)).map(|step| step.members).max()
}

/// The CSV header, one column per figure.
pub const CSV_HEADER: &str =
    "members,reach_p50_us,reach_p95_us,reach_p99_us,reach_max_us,lines,deliveries,failed,lost,ok";

/// One CSV row for `step`.
pub fn csv_row(step: &Step) -> String {
    let reach = step.reach();
    let report = &step.report;
    let deliveries = report.broadcast.as_ref().map_or(0, |broadcast| broadcast.deliveries_seen);
    format!(
        "{},{:.1},{:.1},{:.1},{:.1},{},{},{},{},{}",
        step.members,
        reach.p50,
        reach.p95,
        reach.p99,
        reach.max,
        reach.count,
        deliveries,
        report.messages.failed,
        report.messages.lost,
        report.ok
    )
}

/// Writes `steps` as CSV.
pub fn write_csv(path: &Path, steps: &[Step]) -> io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    writeln!(file, "{CSV_HEADER}")?;
    for step in steps {
        writeln!(file, "{}", csv_row(step))?;
    }
    Ok(())
}

/// Writes a chart of reach (p50 and p95) against members, with the limit drawn across.
pub fn write_chart(path: &Path, steps: &[Step], limit: Duration) -> io::Result<()> {
    let line = |name: &str, figure: fn(&Percentiles) -> f64| Series {
        name: name.to_string(),
        points: steps.iter().map(|step| (f64::from(step.members), figure(&step.reach()) / 1000.0)).collect(),
    };
    let limit_ms = limit.as_secs_f64() * 1000.0;
    let across = Series {
        name: "limit".to_string(),
        points: steps.iter().map(|step| (f64::from(step.members), limit_ms)).collect(),
    };
    let panel = Panel {
        title: "Time for a line to reach every member".to_string(),
        x_label: "members".to_string(),
        y_label: "ms".to_string(),
        log_x: false,
        log_y: false,
        series: vec![line("p50", |reach| reach.p50), line("p95", |reach| reach.p95), across],
    };
    write_svg(path, &[panel])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rooms grow by the step and stop at the ceiling.
    #[test]
    fn sizes_step_up_to_the_ceiling() {
        assert_eq!(sizes(100, 350).collect::<Vec<_>>(), [100, 200, 300]);
        assert_eq!(sizes(100, 99).count(), 0);
        assert_eq!(sizes(u32::MAX / 2 + 1, u32::MAX).count(), 1);
    }
}
