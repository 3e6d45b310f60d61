//! The Prometheus text exposition of the reactor's counters, for `Intent::Metrics` (the
//! `metrics` handler's scrape): `# HELP` and `# TYPE` lines, counters ending in `_total`,
//! units in the names, and a `handler`/`listen` label per listener for what is counted per
//! listener. Rendered on request, from the counters the reactor keeps anyway: a scrape costs
//! the loop one pass over the services, nothing per message.

use std::fmt::Write as _;

use super::Reactor;
use crate::server::stats::EVENT_BUCKETS;

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
        let stats = self.stats_snapshot();
        let mut text = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
            let _ = writeln!(text, "# HELP {name} {help}");
            let _ = writeln!(text, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(text, "{name}{labels} {value}");
            }
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
        text
    }
}

/// A label value, escaped as the text format wants (backslash, quote, newline).
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
