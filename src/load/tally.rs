//! What one loader thread counted and measured. Tallies of several threads (or processes)
//! merge into one before the report is made, histograms included, so percentiles are exact
//! over all of them.

use std::io;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency the histograms track: one hour, in ns. Longer values are clamped.
const MAX_TRACKED_NS: u64 = 3_600_000_000_000;

/// How many mismatches are kept in full to show the user.
pub const KEPT_MISMATCHES: usize = 5;

/// Failures by class, as users ask about them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Failures {
    /// Connect refused (nothing listening).
    pub refused: u64,
    /// Connect did not complete within `--connect-timeout`.
    pub timeout: u64,
    /// No local address/port to connect from (ephemeral ports exhausted): use `--sources`.
    pub addr_not_available: u64,
    /// Connection reset by the server during the run.
    pub reset: u64,
    /// The server closed the connection during the run.
    pub closed: u64,
    /// The server was full: it answered `ERR server full` and closed (evloop's notice; a
    /// connection refused by the server, not a wrong reply).
    #[serde(default)]
    pub turned_away: u64,
    /// A connection waited `--reply-timeout` for a reply with nothing heard: the loader gave
    /// its outstanding requests up as lost and closed it (a late reply could no longer be
    /// told from the next one's), or, a closed-loop broadcast sender, stopped sending.
    #[serde(default)]
    pub reply_timeout: u64,
    /// Any other connect or I/O error.
    pub other: u64,
}

impl Failures {
    /// Counts `error` in its class.
    pub fn count(&mut self, error: &io::Error) {
        match error.raw_os_error() {
            Some(libc::ECONNREFUSED) => self.refused += 1,
            Some(libc::ECONNRESET | libc::EPIPE) => self.reset += 1,
            Some(libc::ETIMEDOUT) => self.timeout += 1,
            Some(libc::EADDRNOTAVAIL | libc::EADDRINUSE) => self.addr_not_available += 1,
            _ => self.other += 1,
        }
    }

    fn merge(&mut self, other: &Failures) {
        self.refused += other.refused;
        self.timeout += other.timeout;
        self.addr_not_available += other.addr_not_available;
        self.reset += other.reset;
        self.closed += other.closed;
        self.turned_away += other.turned_away;
        self.reply_timeout += other.reply_timeout;
        self.other += other.other;
    }

    /// All failures.
    pub fn total(&self) -> u64 {
        self.refused
            + self.timeout
            + self.addr_not_available
            + self.reset
            + self.closed
            + self.turned_away
            + self.reply_timeout
            + self.other
    }
}

/// One reply that did not match, shown in full (cut to a readable length).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Mismatch {
    /// The connection it came on.
    pub connection: u32,
    /// What was expected, or a description.
    pub expected: String,
    /// What arrived.
    pub got: String,
    /// Where in the connection's stream of replies it went wrong: the offset of the first
    /// byte that differs (`--expect` over the raw codec) or of the reply's first byte.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// Longest excerpt of a mismatching reply kept.
const EXCERPT: usize = 200;

impl Mismatch {
    /// A mismatch with both sides cut to a readable length.
    pub fn new(connection: u32, expected: &[u8], got: &[u8]) -> Mismatch {
        let excerpt = |bytes: &[u8]| {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(EXCERPT)]).into_owned();
            if bytes.len() > EXCERPT { format!("{text}... ({} bytes)", bytes.len()) } else { text }
        };
        Mismatch { connection, expected: excerpt(expected), got: excerpt(got), offset: None }
    }
}

/// See the module documentation. Serializable so loader processes can hand their tallies,
/// histograms included, to the parent that merges them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Tally {
    /// Connections tried.
    pub attempted: u64,
    /// Connections that came up.
    pub established: u64,
    /// Connect failures (refused, timeout, no address, other).
    pub connect_failures: Failures,
    /// Failures of connections that were up (reset, closed, other).
    pub run_failures: Failures,
    /// Requests (or broadcast messages) sent.
    pub sent: u64,
    /// Replies (or broadcast deliveries) received.
    pub received: u64,
    /// Replies that matched exactly.
    pub verified: u64,
    /// Replies that did not match (wrong bytes, or a reply with nothing outstanding).
    pub mismatched: u64,
    /// Requests with no reply by the end (or broadcast deliveries that never came).
    pub lost: u64,
    /// Verified replies to requests sent after the warmup: what throughput counts.
    pub measured: u64,
    /// Bytes on the wire (both ways) of measured messages.
    pub measured_bytes: u64,
    /// Broadcast deliveries expected.
    pub deliveries_expected: u64,
    /// Broadcast deliveries verified.
    pub deliveries_seen: u64,
    /// Broadcast: sync lines sent before the run (repeated until every member has one):
    /// messages the server counts that are not in `sent`.
    #[serde(default)]
    pub sync_lines: u64,
    /// Latency from the scheduled send time (open loop) or the send (closed loop), in ns.
    #[serde(with = "histogram_serde")]
    pub latency: Histogram<u64>,
    /// Open loop: latency from the actual send, which hides the server's stalls.
    #[serde(with = "histogram_serde")]
    pub uncorrected: Histogram<u64>,
    /// Open loop: how late the loader sent, against its schedule.
    #[serde(with = "histogram_serde")]
    pub schedule_lag: Histogram<u64>,
    /// Connect latency, in ns.
    #[serde(with = "histogram_serde")]
    pub connect: Histogram<u64>,
    /// `--tls`: TLS handshake latency (from the TCP connect done to the handshake done), in
    /// ns; its count is the handshakes done.
    #[serde(with = "histogram_serde")]
    pub tls_handshake: Histogram<u64>,
    /// Closed-loop broadcast: the time for a line to reach every member (from its send to
    /// its last delivery), in ns.
    #[serde(with = "histogram_serde")]
    pub reach: Histogram<u64>,
    /// When the last measured reply came (monotonic ns); ends the window of a `-n` run.
    pub last_reply_ns: u64,
    /// When the first connect started and the last one finished (monotonic ns): the
    /// connect phase, whose rate is the server's accept rate under a connect storm.
    pub first_connect_ns: u64,
    /// See `first_connect_ns`.
    pub last_connect_ns: u64,
    /// The first few mismatches, in full.
    pub mismatches: Vec<Mismatch>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED_NS, 3).expect("valid histogram bounds")
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            attempted: 0,
            established: 0,
            connect_failures: Failures::default(),
            run_failures: Failures::default(),
            sent: 0,
            received: 0,
            verified: 0,
            mismatched: 0,
            lost: 0,
            measured: 0,
            measured_bytes: 0,
            deliveries_expected: 0,
            deliveries_seen: 0,
            sync_lines: 0,
            latency: histogram(),
            uncorrected: histogram(),
            schedule_lag: histogram(),
            connect: histogram(),
            tls_handshake: histogram(),
            reach: histogram(),
            last_reply_ns: 0,
            first_connect_ns: 0,
            last_connect_ns: 0,
            mismatches: Vec::new(),
        }
    }
}

impl Tally {
    /// Records a latency in ns (clamped to the tracked range).
    pub fn record(histogram: &mut Histogram<u64>, nanos: u64) {
        histogram.saturating_record(nanos.clamp(1, MAX_TRACKED_NS));
    }

    /// Counts a mismatching reply, keeping the first few in full.
    pub fn mismatch(&mut self, connection: u32, expected: &[u8], got: &[u8]) {
        self.mismatch_at(connection, None, expected, got);
    }

    /// Counts a mismatching reply found at `offset` of its connection's stream.
    pub fn mismatch_at(&mut self, connection: u32, offset: Option<u64>, expected: &[u8], got: &[u8]) {
        self.mismatched += 1;
        if self.mismatches.len() < KEPT_MISMATCHES {
            self.mismatches.push(Mismatch { offset, ..Mismatch::new(connection, expected, got) });
        }
    }

    /// Adds `other` into this tally.
    pub fn merge(&mut self, other: &Tally) {
        self.attempted += other.attempted;
        self.established += other.established;
        self.connect_failures.merge(&other.connect_failures);
        self.run_failures.merge(&other.run_failures);
        self.sent += other.sent;
        self.received += other.received;
        self.verified += other.verified;
        self.mismatched += other.mismatched;
        self.lost += other.lost;
        self.measured += other.measured;
        self.measured_bytes += other.measured_bytes;
        self.deliveries_expected += other.deliveries_expected;
        self.deliveries_seen += other.deliveries_seen;
        self.sync_lines += other.sync_lines;
        for (mine, theirs) in [
            (&mut self.latency, &other.latency),
            (&mut self.uncorrected, &other.uncorrected),
            (&mut self.schedule_lag, &other.schedule_lag),
            (&mut self.connect, &other.connect),
            (&mut self.tls_handshake, &other.tls_handshake),
            (&mut self.reach, &other.reach),
        ] {
            mine.add(theirs).expect("histograms with the same bounds add");
        }
        self.last_reply_ns = self.last_reply_ns.max(other.last_reply_ns);
        self.first_connect_ns = match (self.first_connect_ns, other.first_connect_ns) {
            (0, theirs) => theirs,
            (mine, 0) => mine,
            (mine, theirs) => mine.min(theirs),
        };
        self.last_connect_ns = self.last_connect_ns.max(other.last_connect_ns);
        let room = KEPT_MISMATCHES.saturating_sub(self.mismatches.len());
        self.mismatches.extend(other.mismatches.iter().take(room).cloned());
    }

    /// Moves its monotonic times (the connect phase, the last reply) by `delta_ns`: onto
    /// another host's clock, for an agent's tally merged by its coordinator.
    pub fn rebase(&mut self, delta_ns: i64) {
        for stamp in [&mut self.last_reply_ns, &mut self.first_connect_ns, &mut self.last_connect_ns] {
            if *stamp != 0 {
                *stamp = (i128::from(*stamp) + i128::from(delta_ns)).max(1) as u64;
            }
        }
    }

    /// Failures of every kind: what decides the exit code.
    pub fn failure_count(&self) -> u64 {
        self.mismatched + self.lost + self.connect_failures.total() + self.run_failures.total()
    }
}

/// Histograms whole, in HdrHistogram's V2 serialization (a 40-byte header, then the counts
/// as ZigZag LEB128 varints with runs of zeros folded), written as hex in the JSON: exact,
/// compact for latency data (a few kilobytes), readable by any HdrHistogram library, and
/// needing no compression (the DEFLATE form is about ten times slower to write). Loader
/// processes hand their tallies to their parent this way, and agents to their coordinator
/// (`load::agents`), so a merge adds counts, never percentiles.
mod histogram_serde {
    use hdrhistogram::Histogram;
    use hdrhistogram::serialization::{Deserializer as V2Reader, Serializer as _, V2Serializer};
    use serde::de::Error as _;
    use serde::ser::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(histogram: &Histogram<u64>, serializer: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::new();
        V2Serializer::new()
            .serialize(histogram, &mut bytes)
            .map_err(|error| S::Error::custom(format!("{error:?}")))?;
        serializer.serialize_str(&super::hex::encode(&bytes))
    }

    /// Reads one back. One whose bounds are not the loader's (from another version, or
    /// another tool) is copied value by value, clamped to the tracked range, so a merge
    /// never fails on it.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Histogram<u64>, D::Error> {
        let text = <&str>::deserialize(deserializer)?;
        let bytes = super::hex::decode(text).ok_or_else(|| D::Error::custom("a histogram is not hex"))?;
        let decoded: Histogram<u64> = V2Reader::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|error| D::Error::custom(format!("not an HdrHistogram V2 histogram: {error:?}")))?;
        let mut histogram = super::histogram();
        if histogram.add(&decoded).is_err() {
            for bucket in decoded.iter_recorded() {
                let value = bucket.value_iterated_to().clamp(1, super::MAX_TRACKED_NS);
                histogram.saturating_record_n(value, bucket.count_at_value());
            }
        }
        Ok(histogram)
    }
}

/// Bytes as lower-case hex and back: the histograms' bytes in JSON.
mod hex {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";

    pub fn encode(bytes: &[u8]) -> String {
        let mut text = String::with_capacity(bytes.len() * 2);
        for byte in bytes {
            text.push(DIGITS[usize::from(byte >> 4)] as char);
            text.push(DIGITS[usize::from(byte & 15)] as char);
        }
        text
    }

    pub fn decode(text: &str) -> Option<Vec<u8>> {
        let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        let text = text.as_bytes();
        if text.len() % 2 != 0 {
            return None;
        }
        text.chunks(2).map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tally survives the trip through JSON, histograms included, so processes merge
    /// exactly.
    #[test]
    fn round_trips_through_json() {
        let mut tally = Tally { sent: 7, verified: 5, ..Tally::default() };
        for nanos in [1_000, 2_000, 2_000, 1_000_000, 5_000_000_000] {
            Tally::record(&mut tally.latency, nanos);
        }
        tally.mismatch(3, b"abc", b"abd");
        let back: Tally = serde_json::from_str(&serde_json::to_string(&tally).unwrap()).unwrap();
        assert_eq!((back.sent, back.verified, back.mismatches.len()), (7, 5, 1));
        assert_eq!(back.latency.len(), 5);
        for quantile in [0.1, 0.5, 0.9, 1.0] {
            assert_eq!(back.latency.value_at_quantile(quantile), tally.latency.value_at_quantile(quantile));
        }
    }

    /// Tallies that went through JSON and were merged hold exactly the histogram of every
    /// sample together: its count is the sum, its max the largest, every percentile that of
    /// all samples (not an average of percentiles).
    #[test]
    fn merged_tallies_equal_one_fed_every_sample() {
        let mut parts = [Tally::default(), Tally::default(), Tally::default()];
        let mut whole = histogram();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for index in 0..30_000u64 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // Each part its own shape: fast, slow, and one with a long tail.
            let part = (index % 3) as usize;
            let nanos = match part {
                0 => 20_000 + seed % 30_000,
                1 => 200_000 + seed % 800_000,
                _ => 50_000 + (seed % 1000) * (seed % 1000) * 50,
            };
            Tally::record(&mut parts[part].latency, nanos);
            Tally::record(&mut whole, nanos);
        }
        let mut merged = Tally::default();
        for part in &parts {
            let back: Tally = serde_json::from_str(&serde_json::to_string(part).unwrap()).unwrap();
            merged.merge(&back);
        }
        assert_eq!(merged.latency.len(), whole.len());
        assert_eq!(merged.latency.max(), whole.max());
        assert_eq!(merged.latency.max(), parts.iter().map(|part| part.latency.max()).max().unwrap());
        for quantile in [0.0, 0.5, 0.9, 0.95, 0.99, 0.999, 0.9999, 1.0] {
            assert_eq!(
                merged.latency.value_at_quantile(quantile),
                whole.value_at_quantile(quantile),
                "q {quantile}"
            );
        }
        // Averaging the parts' p99s would have said something else entirely.
        let averaged = parts.iter().map(|part| part.latency.value_at_quantile(0.99)).sum::<u64>() / 3;
        assert_ne!(lowest_equivalent(averaged), lowest_equivalent(whole.value_at_quantile(0.99)));
    }

    fn lowest_equivalent(nanos: u64) -> u64 {
        histogram().lowest_equivalent(nanos)
    }

    /// A histogram of other bounds (another tool's) is read value by value, clamped.
    #[test]
    fn foreign_histograms_are_copied_in_range() {
        use hdrhistogram::serialization::{Serializer as _, V2Serializer};
        let mut foreign = Histogram::<u64>::new_with_bounds(1, u64::MAX / 4, 2).unwrap();
        foreign.record_n(5_000, 3).unwrap();
        foreign.record(MAX_TRACKED_NS * 10).unwrap();
        let mut bytes = Vec::new();
        V2Serializer::new().serialize(&foreign, &mut bytes).unwrap();
        let json = format!("\"{}\"", hex::encode(&bytes));
        let mut deserializer = serde_json::Deserializer::from_str(&json);
        let back = histogram_serde::deserialize(&mut deserializer).unwrap();
        assert_eq!(back.len(), 4);
        assert!(back.max() <= MAX_TRACKED_NS + MAX_TRACKED_NS / 1000);
        assert_eq!(hex::decode("0aFf"), Some(vec![10, 255]));
        assert_eq!(hex::decode("0"), None);
        assert_eq!(hex::decode("zz"), None);
    }
}
