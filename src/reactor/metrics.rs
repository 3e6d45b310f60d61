//! The Prometheus text exposition of the reactor's counters, for `Intent::Metrics` (the
//! `metrics` handler's scrape): `# HELP` and `# TYPE` lines, counters ending in `_total`,
//! units in the names, and a `handler`/`listen` label per listener for what is counted per
//! listener. Rendered on request, from the counters the reactor keeps anyway: a scrape costs
//! the loop one pass over the services, nothing per message.
//!
//! Under `--workers`, each worker also writes its samples once a second to a file in a
//! directory the supervisor made (on tmpfs where there is one), and whichever worker a
//! scrape reaches adds up its own live samples and the others' latest: every scrape shows
//! totals over all workers, at most a second old for the others.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::Reactor;
use crate::server::stats::EVENT_BUCKETS;

/// How often a worker shares its samples with the others.
pub(super) const SHARE_EVERY: Duration = Duration::from_secs(1);

/// Sharing samples between workers: this worker's file, and the directory of all of them.
#[derive(Debug)]
pub(super) struct SharedSamples {
    dir: PathBuf,
    own: PathBuf,
    pub next: Instant,
}

impl SharedSamples {
    pub fn new(dir: PathBuf, worker: usize, now: Instant) -> SharedSamples {
        let own = dir.join(format!("worker-{worker}"));
        SharedSamples { dir, own, next: now }
    }
}

/// One metric: its help, its type, and its samples (labels, value).
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    samples: Vec<(String, f64)>,
}

/// How samples of one name combine over workers: sums, but the longest wakeup is the
/// longest of any.
fn combine(name: &str, a: f64, b: f64) -> f64 {
    if name == "evloop_longest_wakeup_seconds" { a.max(b) } else { a + b }
}

impl Reactor {
    /// A whole HTTP/1.1 200 response carrying the metrics.
    pub(super) fn metrics_response(&self) -> Vec<u8> {
        let body = self.metrics_text();
        let mut response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        response.extend_from_slice(body.as_bytes());
        response
    }

    fn metrics_text(&self) -> String {
        let mut families = self.families();
        if let Some(shared) = &self.shared_samples {
            add_others(&mut families, &shared.dir, &shared.own);
        }
        let mut text = String::new();
        for family in &families {
            let _ = writeln!(text, "# HELP {} {}", family.name, family.help);
            let _ = writeln!(text, "# TYPE {} {}", family.name, family.kind);
            for (labels, value) in &family.samples {
                let _ = writeln!(text, "{}{labels} {value}", family.name);
            }
        }
        text
    }

    /// Writes this worker's samples for the others (once a second, atomically: a new file
    /// renamed over the old, so a reader never sees half of one).
    pub(super) fn share_samples(&mut self, now: Instant) {
        let Some(shared) = &self.shared_samples else { return };
        if now < shared.next {
            return;
        }
        let mut text = String::new();
        for family in self.families() {
            for (labels, value) in family.samples {
                let _ = writeln!(text, "{}{labels} {value}", family.name);
            }
        }
        let shared = self.shared_samples.as_mut().expect("checked above");
        shared.next = now + SHARE_EVERY;
        let temporary = shared.own.with_extension("new");
        if let Err(error) =
            std::fs::write(&temporary, text).and_then(|()| std::fs::rename(&temporary, &shared.own))
        {
            log::warn!("cannot share metrics with the other workers; error={error}");
        }
    }

    fn families(&self) -> Vec<Family> {
        let stats = self.stats_snapshot();
        let mut families = Vec::new();
        let mut metric =
            |name: &'static str, kind: &'static str, help: &'static str, samples: &[(String, String)]| {
                let samples = samples
                    .iter()
                    .map(|(labels, value)| (labels.clone(), value.parse().unwrap_or(0.0)))
                    .collect();
                families.push(Family { name, kind, help, samples });
            };
        let one = |value: u64| vec![(String::new(), value.to_string())];
        metric(
            "evloop_connections_open",
            "gauge",
            "Client connections open now.",
            &one(stats.connections_open as u64),
        );
        let per_listener: Vec<(String, String)> = self
            .services
            .iter()
            .enumerate()
            .map(|(index, service)| {
                let listen: Vec<String> = self
                    .listeners
                    .iter()
                    .filter(|slot| slot.service == index)
                    .map(|slot| slot.addr.to_string())
                    .collect();
                let labels = format!(
                    "{{handler=\"{}\",listen=\"{}\"}}",
                    escape(&service.name),
                    escape(&listen.join(","))
                );
                (labels, service.members.len().to_string())
            })
            .collect();
        metric(
            "evloop_listener_connections_open",
            "gauge",
            "Client connections open now, per listener (handler and its addresses).",
            &per_listener,
        );
        metric(
            "evloop_connections_accepted_total",
            "counter",
            "Connections accepted.",
            &one(stats.connections_accepted),
        );
        metric(
            "evloop_connections_rejected_total",
            "counter",
            "Connections turned away with ERR server full.",
            &one(stats.connections_rejected),
        );
        let closed = [
            ("client", stats.closed_by_client),
            ("idle_timeout", stats.closed_idle),
            ("slow_consumer", stats.closed_slow),
            ("error", stats.closed_error),
            ("other", stats.closed_other),
        ];
        let closed: Vec<(String, String)> = closed
            .iter()
            .map(|(reason, count)| (format!("{{reason=\"{reason}\"}}"), count.to_string()))
            .collect();
        metric("evloop_connections_closed_total", "counter", "Connections closed, by reason.", &closed);
        metric(
            "evloop_messages_received_total",
            "counter",
            "Messages decoded and handled.",
            &one(stats.messages_in),
        );
        metric(
            "evloop_messages_sent_total",
            "counter",
            "Messages queued to clients.",
            &one(stats.messages_out),
        );
        metric("evloop_received_bytes_total", "counter", "Bytes read from clients.", &one(stats.bytes_in));
        metric("evloop_sent_bytes_total", "counter", "Bytes written to clients.", &one(stats.bytes_out));
        metric(
            "evloop_frame_errors_total",
            "counter",
            "Malformed input answered with ERR.",
            &one(stats.frame_errors),
        );
        metric(
            "evloop_backpressure_pauses_total",
            "counter",
            "Times a connection's reading paused because its replies backed up.",
            &one(stats.reading_paused),
        );
        metric(
            "evloop_accept_pauses_total",
            "counter",
            "Times accepting paused because descriptors or socket memory ran out.",
            &one(stats.accept_pauses),
        );
        metric(
            "evloop_datagrams_dropped_total",
            "counter",
            "UDP replies dropped because the socket and its queue were full.",
            &one(stats.datagrams_dropped),
        );
        metric("evloop_wakeups_total", "counter", "Times the poll returned.", &one(stats.wakeups));
        let mut buckets = Vec::new();
        let mut cumulative = 0;
        for (index, count) in stats.events_per_wakeup.iter().enumerate() {
            cumulative += count;
            let le = if index + 1 == EVENT_BUCKETS {
                "+Inf".to_string()
            } else {
                ((1u64 << index) - 1).to_string()
            };
            buckets.push((format!("_bucket{{le=\"{le}\"}}"), cumulative.to_string()));
        }
        buckets.push(("_sum".to_string(), stats.events.to_string()));
        buckets.push(("_count".to_string(), stats.wakeups.to_string()));
        metric(
            "evloop_events_per_wakeup",
            "histogram",
            "Readiness events handled per wakeup: how many clients share one turn.",
            &buckets,
        );
        metric(
            "evloop_longest_wakeup_seconds",
            "gauge",
            "The longest time one wakeup took: how long every other client waited.",
            &[(String::new(), format!("{:.6}", stats.longest_wakeup.as_secs_f64()))],
        );
        if stats.backplane_links > 0 {
            metric(
                "evloop_backplane_links_up",
                "gauge",
                "Backplane links up (of 2).",
                &one(stats.backplane_links_up as u64),
            );
            metric(
                "evloop_backplane_published_total",
                "counter",
                "Room lines published.",
                &one(stats.backplane_published),
            );
            metric(
                "evloop_backplane_publish_dropped_total",
                "counter",
                "Room lines not published (link down, engine behind).",
                &one(stats.backplane_publish_dropped),
            );
            metric(
                "evloop_backplane_received_total",
                "counter",
                "Room lines received.",
                &one(stats.backplane_received),
            );
            metric(
                "evloop_backplane_gaps_total",
                "counter",
                "Room lines known missed.",
                &one(stats.backplane_gaps),
            );
            metric(
                "evloop_backplane_reconnects_total",
                "counter",
                "Times a backplane link came back.",
                &one(stats.backplane_reconnects),
            );
        }
        families
    }
}

/// Adds the other workers' latest samples (the files in `dir` but `own`) into `families`.
fn add_others(families: &mut [Family], dir: &Path, own: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut others: BTreeMap<String, f64> = BTreeMap::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path == own || path.extension().is_some() {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        for line in text.lines() {
            let Some((series, value)) = line.rsplit_once(' ') else { continue };
            let Ok(value) = value.parse::<f64>() else { continue };
            let name = series.split('{').next().unwrap_or(series);
            let entry = others.entry(series.to_string()).or_insert(0.0);
            *entry = combine(name, *entry, value);
        }
    }
    for family in families.iter_mut() {
        for (labels, value) in &mut family.samples {
            let series = format!("{}{labels}", family.name);
            if let Some(other) = others.remove(&series) {
                *value = combine(family.name, *value, other);
            }
        }
    }
}

/// A label value, escaped as the text format wants (backslash, quote, newline).
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
