//! The Prometheus text exposition of the reactor's counters, for `Intent::Metrics` (the
//! `metrics` handler's scrape): `# HELP` and `# TYPE` lines, counters ending in `_total`,
//! units in the names, and a `handler`/`listen` label per listener for what is counted per
//! listener. Rendered on request, from the counters the reactor keeps anyway: a scrape costs
//! the loop one pass over the services, nothing per message.
//!
//! Under `--workers`, whichever worker a scrape reaches must answer for all of them, and a
//! counter must never go down from one scrape to the next (Prometheus reads a decrease as a
//! restart and adds the whole value to `rate()`). So the supervisor makes one block of
//! shared memory with a slot per worker (`sys/shared_memory.rs`), the model of the
//! Prometheus Python client's multiprocess mode; each worker stores its samples in its own
//! slot before any reply leaves it (at the start of each flush) and at the end of each turn,
//! and the worker answering a scrape adds up every slot. Each stored word only grows, so
//! every sum only grows, whichever worker answers, and it includes everything a client has
//! seen an answer to. A worker that replaces a dead one starts its counters from the dead
//! one's last values, which stay in the slot: the totals do not drop.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::{ListenerSlot, Service};
use crate::config::ServerConfig;
use crate::stats::{EVENT_BUCKETS, Stats};
use crate::sys::shared_memory::SharedWords;

/// Words per worker slot: a header (the layout's hash, the number of samples) and the
/// samples, each an `f64` stored as its bits. Far more than any layout needs (about 50
/// samples and one per listener); a layout that does not fit is not shared (logged).
pub(crate) const SLOT_WORDS: usize = 4096;
/// The header of a slot: the layout's hash, then the number of samples.
const HEADER_WORDS: usize = 2;

/// How a family's samples behave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric family.
#[derive(Debug)]
struct Family {
    name: &'static str,
    kind: Kind,
    help: &'static str,
}

/// Which sample of its family a value is: rendered into labels only when a scrape is
/// answered, so storing the samples costs no formatting.
#[derive(Clone, Copy, Debug)]
enum Label {
    None,
    /// `{handler=..,listen=..}` of service `i`.
    Listener(usize),
    /// `{reason=..}`.
    Reason(&'static str),
    /// `_bucket{le=..}` number `i` of a histogram.
    Bucket(usize),
    /// `_sum` of a histogram.
    Sum,
    /// `_count` of a histogram.
    Count,
}

macro_rules! family {
    ($name:literal, $kind:ident, $help:literal) => {
        &Family { name: $name, kind: Kind::$kind, help: $help }
    };
}

/// The samples this worker shares, and the slots of all workers.
#[derive(Debug)]
pub(crate) struct SharedMetrics {
    region: SharedWords,
    /// This worker's slot.
    own: usize,
    /// Where this worker's counters start: the last values of the worker it replaced (0
    /// for gauges, which are its own only).
    base: Vec<f64>,
    /// The hash of this worker's layout: a slot with another layout is not added.
    layout: u64,
}

impl SharedMetrics {
    /// Under `--workers`: the block of metrics shared with the other workers, mapped.
    pub fn inherited(config: &ServerConfig) -> Option<SharedMetrics> {
        let (fd, worker) = config.shared_metrics?;
        match SharedWords::map_inherited(fd) {
            Ok(region) => Some(SharedMetrics { region, own: worker, base: Vec::new(), layout: 0 }),
            Err(error) => {
                log::warn!("cannot share metrics with the other workers; error={error}");
                None
            }
        }
    }

    fn slots(&self) -> impl Iterator<Item = &[std::sync::atomic::AtomicU64]> {
        self.region.words().chunks_exact(SLOT_WORDS)
    }

    fn own_slot(&self) -> Option<&[std::sync::atomic::AtomicU64]> {
        self.region.words().chunks_exact(SLOT_WORDS).nth(self.own)
    }
}

/// The samples of one slot, if it holds `count` samples of the layout `hash`.
fn slot_samples(slot: &[std::sync::atomic::AtomicU64], hash: u64, count: usize) -> Option<Vec<f64>> {
    if slot[0].load(Ordering::Acquire) != hash || slot[1].load(Ordering::Acquire) != count as u64 {
        return None;
    }
    Some(
        slot[HEADER_WORDS..HEADER_WORDS + count]
            .iter()
            .map(|word| f64::from_bits(word.load(Ordering::Relaxed)))
            .collect(),
    )
}

/// How samples of one family combine over workers: sums, but the longest wakeup is the
/// longest of any.
fn combine(family: &Family, a: f64, b: f64) -> f64 {
    if family.name == "evloop_longest_wakeup_seconds" { a.max(b) } else { a + b }
}

/// What the metrics are rendered from: the reactor's counters (with the open connections and
/// the backplane's counters brought in), and what the labels name.
pub(super) struct View<'r> {
    pub stats: &'r Stats,
    /// Connections not served yet.
    pub preparing: usize,
    pub services: &'r [Service],
    pub listeners: &'r [ListenerSlot],
    /// Whether a backplane is in use (its counters are then samples too).
    pub backplane: bool,
}

impl View<'_> {
    /// Calls `emit` for each sample, in one fixed order (the layout every worker of one
    /// command line shares).
    fn visit_samples(&self, mut emit: impl FnMut(&'static Family, Label, f64)) {
        let stats = self.stats;
        let mut one = |family: &'static Family, value: u64| emit(family, Label::None, value as f64);
        one(
            family!("evloop_connections_open", Gauge, "Client connections open now."),
            stats.connections_open as u64,
        );
        one(
            family!(
                "evloop_connections_preparing",
                Gauge,
                "Of those, connections not served yet: a PROXY header or a handshake is not done."
            ),
            self.preparing as u64,
        );
        let listeners = family!(
            "evloop_listener_connections_open",
            Gauge,
            "Client connections served now, per listener (handler and its addresses)."
        );
        for (index, service) in self.services.iter().enumerate() {
            emit(listeners, Label::Listener(index), service.connections as f64);
        }
        let mut one = |family: &'static Family, value: u64| emit(family, Label::None, value as f64);
        one(
            family!("evloop_connections_accepted_total", Counter, "Connections accepted."),
            stats.connections_accepted,
        );
        one(
            family!(
                "evloop_connections_rejected_total",
                Counter,
                "Connections turned away with ERR server full."
            ),
            stats.connections_rejected,
        );
        let closed = family!("evloop_connections_closed_total", Counter, "Connections closed, by reason.");
        for (reason, count) in [
            ("client", stats.closed_by_client),
            ("idle_timeout", stats.closed_idle),
            ("handshake_timeout", stats.closed_handshake_timeout),
            ("ping_timeout", stats.closed_ping_timeout),
            ("slow_consumer", stats.closed_slow),
            ("error", stats.closed_error),
            ("evicted", stats.closed_evicted),
            ("other", stats.closed_other),
        ] {
            emit(closed, Label::Reason(reason), count as f64);
        }
        let mut one = |family: &'static Family, value: u64| emit(family, Label::None, value as f64);
        one(
            family!(
                "evloop_client_memory_bytes",
                Gauge,
                "Memory all clients hold now: unfinished input, pending output, buffers in their transport and protocol (bounded by --max-client-memory)."
            ),
            stats.client_memory as u64,
        );
        one(
            family!(
                "evloop_clients_evicted_total",
                Counter,
                "Clients evicted to keep their memory within --max-client-memory, the biggest holders first."
            ),
            stats.clients_evicted,
        );
        one(
            family!("evloop_messages_received_total", Counter, "Messages decoded and handled."),
            stats.messages_in,
        );
        one(
            family!("evloop_messages_sent_total", Counter, "Messages queued to clients."),
            stats.messages_out,
        );
        one(family!("evloop_received_bytes_total", Counter, "Bytes read from clients."), stats.bytes_in);
        one(family!("evloop_sent_bytes_total", Counter, "Bytes written to clients."), stats.bytes_out);
        one(
            family!("evloop_frame_errors_total", Counter, "Malformed input answered with ERR."),
            stats.frame_errors,
        );
        one(
            family!(
                "evloop_backpressure_pauses_total",
                Counter,
                "Times a connection's reading paused because its replies backed up."
            ),
            stats.reading_paused,
        );
        one(
            family!(
                "evloop_accept_pauses_total",
                Counter,
                "Times accepting paused because descriptors or socket memory ran out."
            ),
            stats.accept_pauses,
        );
        one(
            family!(
                "evloop_datagrams_dropped_total",
                Counter,
                "UDP replies dropped because the socket and its queue were full."
            ),
            stats.datagrams_dropped,
        );
        one(family!("evloop_wakeups_total", Counter, "Times the poll returned."), stats.wakeups);
        one(
            family!("evloop_tls_handshakes_total", Counter, "TLS handshakes completed."),
            stats.tls_handshakes,
        );
        one(
            family!(
                "evloop_tls_failures_total",
                Counter,
                "TLS connections closed for a TLS error (not TLS, a bad ClientHello, a failed handshake)."
            ),
            stats.tls_failures,
        );
        one(
            family!(
                "evloop_tls_reloads_total",
                Counter,
                "Times the TLS certificate and key were reloaded (SIGUSR1)."
            ),
            stats.tls_reloads,
        );
        let histogram = family!(
            "evloop_events_per_wakeup",
            Histogram,
            "Readiness events handled per wakeup: how many clients share one turn."
        );
        let mut cumulative = 0;
        for (index, count) in stats.events_per_wakeup.iter().enumerate() {
            cumulative += count;
            emit(histogram, Label::Bucket(index), cumulative as f64);
        }
        emit(histogram, Label::Sum, stats.events as f64);
        emit(histogram, Label::Count, stats.wakeups as f64);
        emit(
            family!(
                "evloop_longest_wakeup_seconds",
                Gauge,
                "The longest time one wakeup took: how long every other client waited."
            ),
            Label::None,
            stats.longest_wakeup.as_secs_f64(),
        );
        if self.backplane {
            let mut one = |family: &'static Family, value: u64| emit(family, Label::None, value as f64);
            one(
                family!("evloop_backplane_links_up", Gauge, "Backplane links up (of 2)."),
                stats.backplane_links_up as u64,
            );
            one(
                family!("evloop_backplane_published_total", Counter, "Room lines published."),
                stats.backplane_published,
            );
            one(
                family!(
                    "evloop_backplane_publish_dropped_total",
                    Counter,
                    "Room lines not published (link down, engine behind)."
                ),
                stats.backplane_publish_dropped,
            );
            one(
                family!("evloop_backplane_received_total", Counter, "Room lines received."),
                stats.backplane_received,
            );
            one(
                family!("evloop_backplane_gaps_total", Counter, "Room lines known missed."),
                stats.backplane_gaps,
            );
            one(
                family!("evloop_backplane_reconnects_total", Counter, "Times a backplane link came back."),
                stats.backplane_reconnects,
            );
        }
    }

    /// A whole HTTP/1.1 200 response carrying the metrics: this worker's, or under
    /// `--workers` every worker's added up (`shared`, this worker's slot stored already).
    pub fn response(&self, shared: Option<&SharedMetrics>) -> Vec<u8> {
        let body = self.text(shared);
        let mut response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        response.extend_from_slice(body.as_bytes());
        response
    }

    fn text(&self, shared: Option<&SharedMetrics>) -> String {
        let mut samples: Vec<(&'static Family, Label, f64)> = Vec::new();
        self.visit_samples(|family, label, value| samples.push((family, label, value)));
        if let Some(shared) = shared {
            // Every slot, this worker's included (it holds the base and the values just
            // stored), in place of the live values.
            let mut sums: Option<Vec<f64>> = None;
            for slot in shared.slots() {
                let Some(values) = slot_samples(slot, shared.layout, samples.len()) else { continue };
                sums = Some(match sums {
                    None => values,
                    Some(sums) => sums
                        .into_iter()
                        .zip(values)
                        .zip(&samples)
                        .map(|((sum, value), (family, _, _))| combine(family, sum, value))
                        .collect(),
                });
            }
            if let Some(sums) = sums {
                for ((_, _, value), sum) in samples.iter_mut().zip(sums) {
                    *value = sum;
                }
            }
        }
        let mut text = String::new();
        let mut last: Option<&'static str> = None;
        for (family, label, value) in samples {
            if last != Some(family.name) {
                let _ = writeln!(text, "# HELP {} {}", family.name, family.help);
                let _ = writeln!(text, "# TYPE {} {}", family.name, family.kind.name());
                last = Some(family.name);
            }
            let _ = writeln!(text, "{}{} {}", family.name, self.render_label(label), value);
        }
        text
    }

    /// A sample's labels, as the text format writes them.
    fn render_label(&self, label: Label) -> String {
        match label {
            Label::None => String::new(),
            Label::Listener(index) => {
                let listen: Vec<String> = self
                    .listeners
                    .iter()
                    .filter(|slot| slot.service == index)
                    .map(|slot| slot.addr.to_string())
                    .collect();
                format!(
                    "{{handler=\"{}\",listen=\"{}\"}}",
                    escape(&self.services[index].name),
                    escape(&listen.join(","))
                )
            }
            Label::Reason(reason) => format!("{{reason=\"{reason}\"}}"),
            Label::Bucket(index) if index + 1 == EVENT_BUCKETS => "_bucket{le=\"+Inf\"}".to_string(),
            Label::Bucket(index) => format!("_bucket{{le=\"{}\"}}", (1u64 << index) - 1),
            Label::Sum => "_sum".to_string(),
            Label::Count => "_count".to_string(),
        }
    }
}

impl SharedMetrics {
    /// Takes this worker's slot for `view`'s layout, continuing from the counters a dead
    /// predecessor left there; false (logged) if the layout does not fit or there is no slot.
    pub fn claim(&mut self, view: &View<'_>) -> bool {
        let mut layout = Vec::new();
        view.visit_samples(|family, label, _| layout.push((family, label)));
        let hash = layout_hash(&layout, view);
        let count = layout.len();
        if HEADER_WORDS + count > SLOT_WORDS {
            log::warn!("too many metrics to share with the other workers; samples={count}");
            return false;
        }
        let Some(slot) = self.own_slot() else {
            log::warn!("no metrics slot for this worker; worker={}", self.own);
            return false;
        };
        let left = slot_samples(slot, hash, count).unwrap_or_else(|| vec![0.0; count]);
        let base: Vec<f64> = layout
            .iter()
            .zip(left)
            .map(|((family, _), value)| if family.kind == Kind::Gauge { 0.0 } else { value })
            .collect();
        // The values first, then the header that says whose they are.
        for (word, value) in slot[HEADER_WORDS..].iter().zip(&base) {
            word.store(value.to_bits(), Ordering::Relaxed);
        }
        slot[1].store(count as u64, Ordering::Release);
        slot[0].store(hash, Ordering::Release);
        self.base = base;
        self.layout = hash;
        true
    }

    /// Stores `view`'s samples in this worker's slot, so that a scrape any worker answers
    /// includes them.
    pub fn store(&self, view: &View<'_>) {
        if let Some(slot) = self.own_slot() {
            let mut index = 0;
            view.visit_samples(|_, _, value| {
                let value = value + self.base.get(index).copied().unwrap_or(0.0);
                slot[HEADER_WORDS + index].store(value.to_bits(), Ordering::Relaxed);
                index += 1;
            });
        }
    }
}

/// A hash (FNV-1a) of the series in `layout`, names and labels: workers of one command line
/// share it, so their slots add up sample by sample.
fn layout_hash(layout: &[(&'static Family, Label)], view: &View<'_>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (family, label) in layout {
        for byte in family.name.bytes().chain(view.render_label(*label).into_bytes()).chain([0]) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    // Never 0, which an unused slot holds.
    hash | 1
}

/// A label value, escaped as the text format wants (backslash, quote, newline).
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
