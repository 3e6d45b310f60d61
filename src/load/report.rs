//! The final report: what a run did and measured, for people (`Display`) and for scripts
//! (`serde`, printed by `--json`).

use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::config::LoadConfig;
use super::tally::{Failures, Mismatch, Tally};

/// Latency percentiles, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile (the step-up mode's limit is on it).
    #[serde(default)]
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// 99.99th percentile.
    pub p99_99: f64,
    /// Largest seen.
    pub max: f64,
    /// Mean.
    pub mean: f64,
    /// How many values these come from.
    pub count: u64,
}

impl Percentiles {
    /// The percentiles of `histogram` (in ns), in µs.
    pub(crate) fn of(histogram: &Histogram<u64>) -> Percentiles {
        let us = |nanos: u64| nanos as f64 / 1000.0;
        Percentiles {
            p50: us(histogram.value_at_quantile(0.50)),
            p90: us(histogram.value_at_quantile(0.90)),
            p95: us(histogram.value_at_quantile(0.95)),
            p99: us(histogram.value_at_quantile(0.99)),
            p99_9: us(histogram.value_at_quantile(0.999)),
            p99_99: us(histogram.value_at_quantile(0.9999)),
            max: us(histogram.max()),
            mean: histogram.mean() / 1000.0,
            count: histogram.len(),
        }
    }
}

/// One step of the latency spectrum: the value at a percentile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SpectrumPoint {
    /// The percentile, 0 to 100.
    pub percentile: f64,
    /// The latency at it, in microseconds.
    pub value_us: f64,
    /// Values at or below it.
    pub count: u64,
}

/// The latency spectrum, as wrk2 prints it: steps that halve the distance to 100% (50, 75,
/// 87.5, ...), so the tail gets as many rows as the body.
fn spectrum(histogram: &Histogram<u64>) -> Vec<SpectrumPoint> {
    histogram
        .iter_quantiles(1)
        .map(|step| SpectrumPoint {
            percentile: step.quantile_iterated_to() * 100.0,
            value_us: step.value_iterated_to() as f64 / 1000.0,
            count: step.count_since_last_iteration(),
        })
        .collect()
}

/// The version of the JSON report's shape: raised when a field changes meaning or goes.
pub const SCHEMA: u32 = 1;

/// Connection counts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Connections {
    /// Tried.
    pub attempted: u64,
    /// Came up.
    pub established: u64,
    /// Did not come up.
    pub failed: u64,
    /// Connect latency.
    pub connect_latency_us: Percentiles,
    /// From the first connect to the last one done, in seconds.
    pub connect_phase_s: f64,
    /// Connections established per second over that phase: the server's accept rate under
    /// a connect storm.
    pub connects_per_s: f64,
    /// `--tls`: the TLS handshakes done, their rate over the connect phase (with
    /// `--connect-rate`, the server's full handshakes per second), and their latency (from
    /// the TCP connect done to the handshake done; `connect_latency_us` spans both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsHandshakes>,
}

/// TLS handshakes of a `--tls` run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TlsHandshakes {
    /// Done.
    pub handshakes: u64,
    /// Done per second over the connect phase.
    pub per_s: f64,
    /// From the TCP connect done to the handshake done.
    pub latency_us: Percentiles,
}

/// Message counts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Messages {
    /// Requests (or broadcast messages) sent.
    pub sent: u64,
    /// Replies (or broadcast deliveries) received.
    pub received: u64,
    /// Received and exactly as expected.
    pub verified: u64,
    /// Wrong replies, plus replies with nothing outstanding.
    pub failed: u64,
    /// Never answered (or never delivered) by the end.
    pub lost: u64,
    /// Verified after the warmup: what the throughput and latency figures count.
    pub measured: u64,
}

/// Throughput over the measured window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Throughput {
    /// Verified replies (or deliveries) per second.
    pub msgs_per_s: f64,
    /// Bytes both ways, MiB per second.
    pub mib_per_s: f64,
}

/// Broadcast deliveries.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Broadcast {
    /// Each message times every other connection.
    pub deliveries_expected: u64,
    /// Deliveries verified.
    pub deliveries_seen: u64,
    /// Sync lines sent before the run (until every member had one): messages the server
    /// counts that are not in `messages.sent`.
    #[serde(default)]
    pub sync_lines: u64,
    /// Closed loop (`--pipeline`): the time for a line to reach every member, from its send
    /// to its last delivery.
    #[serde(default)]
    pub reach_us: Option<Percentiles>,
}

/// Failures by class.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Errors {
    /// Replies that did not match.
    pub mismatch: u64,
    /// Replies or deliveries that never came.
    pub lost: u64,
    /// Connection failures while connecting and while running.
    #[serde(flatten)]
    pub connections: Failures,
}

/// One agent's share of a run over agents (`--coordinate`): its own figures, as a run of
/// its own would report them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AgentReport {
    /// Its name (`--agent-name`; by default its host's name and its process id).
    pub name: String,
    /// Its host's name.
    #[serde(default)]
    pub host: String,
    /// Every reply of its share verified, nothing failed, and its result came.
    pub ok: bool,
    /// It went silent for the agents' timeout (killed, cut off, its NATS link down): its
    /// share's figures are missing, from its entry and from the totals.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lost: bool,
    /// Its share was stopped before its end (its coordinator or the agent itself was told
    /// to stop).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
    /// Why it has no result, or an incomplete one: lost, or its loader processes failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// As in the run's report, for its share.
    pub connections: Connections,
    /// As in the run's report, for its share.
    pub messages: Messages,
    /// As in the run's report, for its share.
    pub throughput: Throughput,
    /// As in the run's report, for its share: from its own histogram, on its own clock.
    pub latency_us: Percentiles,
    /// Its clock against the coordinator's, in µs (positive: ahead), as measured over the
    /// round trip below; the start instant was given to it on its own clock.
    pub clock_offset_us: f64,
    /// The shortest round trip to it through NATS, in µs: the offset's error is at most half.
    pub clock_round_trip_us: f64,
}

impl AgentReport {
    /// An entry with no figures yet.
    pub(crate) fn named(name: &str, host: &str) -> AgentReport {
        AgentReport { name: name.to_string(), host: host.to_string(), ..AgentReport::default() }
    }

    /// Takes its figures from the report of its share.
    pub(crate) fn fill(&mut self, own: &Report) {
        self.connections = own.connections.clone();
        self.messages = own.messages.clone();
        self.throughput = own.throughput.clone();
        self.latency_us = own.latency_us;
    }
}

/// See the module documentation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Report {
    /// The version of this shape ([`SCHEMA`]); fields are only ever added within one.
    pub schema: u32,
    /// The server loaded.
    pub target: String,
    /// The workload.
    pub workload: String,
    /// The codec.
    pub codec: String,
    /// Closed loop (pipeline) or open loop (rate).
    pub mode: String,
    /// Loader threads (over all processes).
    pub threads: u32,
    /// Payload bytes per request.
    pub size: usize,
    /// The measured window, in seconds.
    pub duration_s: f64,
    /// The warmup before it (`--warmup`), in seconds; 0 without one.
    #[serde(default)]
    pub warmup_s: f64,
    /// Connections.
    pub connections: Connections,
    /// Messages.
    pub messages: Messages,
    /// Throughput.
    pub throughput: Throughput,
    /// Latency (open loop: from each message's scheduled send time, so stalls count).
    pub latency_us: Percentiles,
    /// Open loop only: latency from the actual send, which hides stalls (coordinated
    /// omission); shown to compare.
    pub latency_uncorrected_us: Option<Percentiles>,
    /// Open loop only: how late the loader itself sent against its schedule.
    pub schedule_lag_us: Option<Percentiles>,
    /// With `--latency`: the full percentile spectrum of `latency_us`.
    pub latency_spectrum: Option<Vec<SpectrumPoint>>,
    /// Broadcast only.
    pub broadcast: Option<Broadcast>,
    /// Failures by class.
    pub errors: Errors,
    /// The first few mismatches, in full.
    pub first_mismatches: Vec<Mismatch>,
    /// True when every reply verified and nothing failed: exit code 0.
    pub ok: bool,
    /// The run was stopped before its end (SIGINT, SIGTERM): the figures are the run's so
    /// far. Absent when it was not.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
    /// A run over agents (`--coordinate`): one entry per agent. The figures above are their
    /// sums, latency merged from their histograms. Absent for a run of one loader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents: Option<Vec<AgentReport>>,
}

impl Report {
    /// The report of a run of `config` whose merged tally is `tally`, over a measured
    /// window of `window`.
    pub(crate) fn new(config: &LoadConfig, tally: &Tally, window: Duration) -> Report {
        let seconds = window.as_secs_f64().max(1e-9);
        let open_loop = config.open_loop_rate().is_some();
        let connect_phase =
            Duration::from_nanos(tally.last_connect_ns.saturating_sub(tally.first_connect_ns));
        let connect_failed = tally.connect_failures.total();
        let mut connections = tally.connect_failures;
        let run = tally.run_failures;
        connections.reset += run.reset;
        connections.closed += run.closed;
        connections.turned_away += run.turned_away;
        connections.reply_timeout += run.reply_timeout;
        connections.other += run.other;
        let mut report = Report {
            schema: SCHEMA,
            target: config.targets_text(),
            workload: config.workload.to_string(),
            codec: config.codec.to_string(),
            mode: config.mode(),
            threads: config.threads,
            size: config.size,
            duration_s: window.as_secs_f64(),
            warmup_s: config.warmup.as_secs_f64(),
            connections: Connections {
                attempted: tally.attempted,
                established: tally.established,
                failed: connect_failed,
                connect_latency_us: Percentiles::of(&tally.connect),
                connect_phase_s: connect_phase.as_secs_f64(),
                connects_per_s: tally.established as f64 / connect_phase.as_secs_f64().max(1e-9),
                tls: config.tls.is_some().then(|| TlsHandshakes {
                    handshakes: tally.tls_handshake.len(),
                    per_s: tally.tls_handshake.len() as f64 / connect_phase.as_secs_f64().max(1e-9),
                    latency_us: Percentiles::of(&tally.tls_handshake),
                }),
            },
            messages: Messages {
                sent: tally.sent,
                received: tally.received,
                verified: tally.verified,
                failed: tally.mismatched,
                lost: tally.lost,
                measured: tally.measured,
            },
            throughput: Throughput {
                msgs_per_s: tally.measured as f64 / seconds,
                mib_per_s: tally.measured_bytes as f64 / seconds / (1024.0 * 1024.0),
            },
            latency_us: Percentiles::of(&tally.latency),
            latency_uncorrected_us: open_loop.then(|| Percentiles::of(&tally.uncorrected)),
            schedule_lag_us: open_loop.then(|| Percentiles::of(&tally.schedule_lag)),
            latency_spectrum: config.latency_spectrum.then(|| spectrum(&tally.latency)),
            broadcast: None,
            errors: Errors { mismatch: tally.mismatched, lost: tally.lost, connections },
            first_mismatches: tally.mismatches.clone(),
            ok: tally.failure_count() == 0 && tally.verified > 0,
            interrupted: false,
            agents: None,
        };
        // What the workload adds (broadcast: its deliveries).
        (config.workload.kind().report)(config, tally, &mut report);
        report
    }
}

impl Report {
    /// Why the run failed, in words, the most telling first (the errors line has the
    /// counts).
    fn failure_reasons(&self) -> Vec<String> {
        let (e, k) = (&self.errors, &self.errors.connections);
        let count = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let mut reasons = Vec::new();
        let agents = self.agents.as_deref().unwrap_or_default();
        for agent in agents.iter().filter(|agent| agent.error.is_some()) {
            let why = agent.error.as_deref().unwrap_or_default();
            if agent.lost {
                reasons.push(format!(
                    "agent {} was lost ({why}): the other agents' results are kept",
                    agent.name
                ));
            } else {
                reasons.push(format!("agent {} failed: {why}", agent.name));
            }
        }
        if k.reply_timeout > 0 {
            let waited = count(k.reply_timeout, "connection", "connections");
            reasons.push(format!(
                "replies timed out: {waited} waited --reply-timeout for a reply that never came whole"
            ));
        }
        match (k.closed, k.reset) {
            (0, 0) => {}
            (closed, 0) => reasons
                .push(format!("the server closed {} mid-run", count(closed, "connection", "connections"))),
            (0, reset) => reasons
                .push(format!("the server reset {} mid-run", count(reset, "connection", "connections"))),
            (closed, reset) => {
                reasons.push(format!("the server closed {closed} and reset {reset} connections mid-run"))
            }
        }
        if self.connections.failed > 0 {
            reasons.push(format!(
                "{} failed to connect",
                count(self.connections.failed, "connection", "connections")
            ));
        }
        if k.turned_away > 0 {
            let turned = count(k.turned_away, "connection", "connections");
            reasons.push(format!("the server turned {turned} away (ERR server full)"));
        }
        if e.mismatch > 0 {
            reasons.push(format!(
                "{} did not match (the first shown above)",
                count(e.mismatch, "reply", "replies")
            ));
        }
        if e.lost > 0 {
            let what = if self.broadcast.is_some() { "never delivered" } else { "never answered" };
            reasons.push(format!("{} {what}", e.lost));
        }
        if reasons.is_empty() && agents.iter().any(|agent| !agent.ok) {
            let failed: Vec<&str> =
                agents.iter().filter(|agent| !agent.ok).map(|agent| agent.name.as_str()).collect();
            reasons.push(format!("agents not ok: {}", failed.join(", ")));
        }
        if reasons.is_empty() {
            reasons.push("connection errors (see the errors line)".to_string());
        }
        reasons
    }
}

/// A duration in microseconds, in the unit that reads best.
struct Micros(f64);

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            us if us < 1000.0 => write!(f, "{us:.0} us"),
            us if us < 1_000_000.0 => write!(f, "{:.2} ms", us / 1000.0),
            us => write!(f, "{:.2} s", us / 1e6),
        }
    }
}

fn percentiles(f: &mut fmt::Formatter<'_>, label: &str, p: &Percentiles) -> fmt::Result {
    writeln!(
        f,
        "{label:<13}p50 {}  p90 {}  p99 {}  p99.9 {}  p99.99 {}  max {}",
        Micros(p.p50),
        Micros(p.p90),
        Micros(p.p99),
        Micros(p.p99_9),
        Micros(p.p99_99),
        Micros(p.max)
    )
}

/// One agent's line under the `agents` line.
fn agent_line(f: &mut fmt::Formatter<'_>, agent: &AgentReport) -> fmt::Result {
    let verdict = match (agent.ok, agent.lost) {
        (_, true) => "LOST",
        (true, _) => "ok",
        (false, _) => "FAILED",
    };
    let (c, m, p) = (&agent.connections, &agent.messages, &agent.latency_us);
    write!(
        f,
        "  {:<14} {verdict:<6} connections {}/{}  verified {}  failed {}  lost {}  {:.0} msgs/s  p50 {}  p99 {}  clock {:+.0} us",
        agent.name,
        c.established,
        c.attempted,
        m.verified,
        m.failed,
        m.lost,
        agent.throughput.msgs_per_s,
        Micros(p.p50),
        Micros(p.p99),
        agent.clock_offset_us
    )?;
    if let Some(error) = &agent.error {
        write!(f, "  ({error})")?;
    }
    writeln!(f)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "evloop-load: {} ({}) against {}, {}, {} connections, {:.1} s measured",
            self.workload, self.codec, self.target, self.mode, self.connections.attempted, self.duration_s
        )?;
        let c = &self.connections;
        writeln!(
            f,
            "connections  attempted {}  established {}  failed {}  in {} ({:.0}/s)  connect p50 {}  p99 {}",
            c.attempted,
            c.established,
            c.failed,
            Micros(c.connect_phase_s * 1e6),
            c.connects_per_s,
            Micros(c.connect_latency_us.p50),
            Micros(c.connect_latency_us.p99)
        )?;
        if let Some(tls) = &c.tls {
            writeln!(
                f,
                "tls          handshakes {}  ({:.0}/s)  handshake p50 {}  p99 {}",
                tls.handshakes,
                tls.per_s,
                Micros(tls.latency_us.p50),
                Micros(tls.latency_us.p99)
            )?;
        }
        let m = &self.messages;
        write!(
            f,
            "messages     sent {}  received {}  verified {}  failed {}  lost {}",
            m.sent, m.received, m.verified, m.failed, m.lost
        )?;
        if self.warmup_s > 0.0 {
            write!(f, "  (warmup included; {} measured after it)", m.measured)?;
        }
        writeln!(f)?;
        if let Some(b) = &self.broadcast {
            writeln!(f, "deliveries   expected {}  seen {}", b.deliveries_expected, b.deliveries_seen)?;
            if let Some(reach) = &b.reach_us {
                writeln!(
                    f,
                    "reach        p50 {}  p95 {}  p99 {}  max {}  (a line to every member, {} lines)",
                    Micros(reach.p50),
                    Micros(reach.p95),
                    Micros(reach.p99),
                    Micros(reach.max),
                    reach.count
                )?;
            }
        }
        if self.workload == "file" {
            writeln!(
                f,
                "throughput   {:.0} files/s  {:.2} MiB/s (files and requests together)",
                self.throughput.msgs_per_s, self.throughput.mib_per_s
            )?;
        } else {
            writeln!(
                f,
                "throughput   {:.0} msgs/s  {:.2} MiB/s (requests and replies together)",
                self.throughput.msgs_per_s, self.throughput.mib_per_s
            )?;
        }
        percentiles(f, "latency", &self.latency_us)?;
        if let Some(uncorrected) = &self.latency_uncorrected_us {
            percentiles(f, "uncorrected", uncorrected)?;
        }
        if let Some(lag) = &self.schedule_lag_us {
            percentiles(f, "loader lag", lag)?;
        }
        if let Some(steps) = &self.latency_spectrum {
            // The count in each step, as in the JSON (`latency_spectrum[].count`).
            writeln!(f, "latency spectrum (µs at percentile, values in the step):")?;
            for step in steps {
                writeln!(f, "  {:>12.3}  {:>10.5}%  {:>10}", step.value_us, step.percentile, step.count)?;
            }
        }
        if let Some(agents) = &self.agents {
            writeln!(
                f,
                "agents       {} (the figures above are their sums; latency merged from their histograms)",
                agents.len()
            )?;
            for agent in agents {
                agent_line(f, agent)?;
            }
        }
        let e = &self.errors;
        let k = &e.connections;
        if !self.ok {
            writeln!(
                f,
                "errors       mismatch {}  lost {}  refused {}  turned away {}  reset {}  closed {}  timeout {}  addr_not_available {}  other {}  reply timeout {}",
                e.mismatch,
                e.lost,
                k.refused,
                k.turned_away,
                k.reset,
                k.closed,
                k.timeout,
                k.addr_not_available,
                k.other,
                k.reply_timeout
            )?;
        }
        for mismatch in &self.first_mismatches {
            match mismatch.offset {
                Some(offset) => {
                    writeln!(f, "mismatch     connection {} at byte {offset}", mismatch.connection)?
                }
                None => writeln!(f, "mismatch     connection {}", mismatch.connection)?,
            }
            writeln!(f, "  expected   {:?}", mismatch.expected)?;
            writeln!(f, "  got        {:?}", mismatch.got)?;
        }
        if self.interrupted {
            writeln!(
                f,
                "interrupted  stopped before its end (SIGINT or SIGTERM): the figures are the run's so far"
            )?;
        }
        if self.ok && self.mode.contains("(replies not checked)") {
            write!(f, "result       OK: every request answered by its marker (replies not checked)")
        } else if self.ok {
            write!(f, "result       OK: every reply verified")
        } else if c.established == 0 && k.refused > 0 {
            write!(
                f,
                "result       FAILED: no connection was established: refused {} times; is a server listening at {}?",
                k.refused, self.target
            )
        } else if k.turned_away > 0 && k.turned_away == k.total() && e.mismatch + e.lost == 0 {
            write!(
                f,
                "result       FAILED: the server turned {} connections away (ERR server full): raise its --max-connections, or open fewer",
                k.turned_away
            )
        } else if self.messages.verified == 0 && e.mismatch + e.lost + k.total() == 0 {
            write!(f, "result       FAILED: no reply was verified")
        } else {
            write!(f, "result       FAILED: {}", self.failure_reasons().join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run over agents lists them, and a lost agent is named in the result line, the
    /// others' figures kept.
    #[test]
    fn a_lost_agent_is_named_in_the_result_line() {
        let config = LoadConfig::default();
        let mut tally = Tally {
            attempted: 5,
            established: 5,
            sent: 100,
            received: 100,
            verified: 100,
            ..Tally::default()
        };
        Tally::record(&mut tally.latency, 50_000);
        let mut report = Report::new(&config, &tally, Duration::from_secs(1));
        let mut kept = AgentReport::named("kept", "host-a");
        kept.fill(&report);
        kept.ok = true;
        let mut lost = AgentReport::named("gone", "host-b");
        lost.lost = true;
        lost.error = Some("no word from it for 5.0 s".to_string());
        report.agents = Some(vec![kept, lost]);
        report.ok = false;
        let text = report.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.iter().any(|line| line.starts_with("agents       2 ")), "{text}");
        assert!(lines.iter().any(|line| line.starts_with("  kept ") && line.contains(" ok ")), "{text}");
        assert!(lines.iter().any(|line| line.starts_with("  gone ") && line.contains(" LOST ")), "{text}");
        assert_eq!(
            lines.last(),
            Some(
                &"result       FAILED: agent gone was lost (no word from it for 5.0 s): the other agents' results are kept"
            ),
            "{text}"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["agents"][1]["lost"], true);
        assert_eq!(json["agents"][0].get("lost"), None, "absent when not lost");
        let plain = serde_json::to_value(Report::new(&config, &tally, Duration::from_secs(1))).unwrap();
        assert_eq!(plain.get("agents"), None, "absent from a run of one loader");
    }
}
