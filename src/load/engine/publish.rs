//! Bookkeeping: this thread's totals, added to the counters all threads share a few times
//! a second (the progress line and the broadcast drain read them).

use std::mem;
use std::sync::atomic::Ordering;

use super::{Engine, PUBLISH_EVERY_NS};

impl Engine<'_> {
    /// Adds what changed since the last publish to the shared totals.
    pub(super) fn publish(&mut self, now: u64, force: bool) {
        if !force && now < self.next_publish_ns {
            return;
        }
        self.next_publish_ns = now + PUBLISH_EVERY_NS;
        let (tally, shared) = (&self.tally, self.shared);
        let now_published = Published {
            sent: tally.sent,
            received: tally.received,
            failures: tally.failure_count(),
            deliveries_expected: tally.deliveries_expected,
            deliveries_seen: tally.deliveries_seen,
        };
        let before = mem::replace(&mut self.published, now_published);
        shared.sent.fetch_add(now_published.sent - before.sent, Ordering::AcqRel);
        shared.received.fetch_add(now_published.received - before.received, Ordering::AcqRel);
        shared.failures.fetch_add(now_published.failures - before.failures, Ordering::AcqRel);
        shared
            .deliveries_expected
            .fetch_add(now_published.deliveries_expected - before.deliveries_expected, Ordering::AcqRel);
        shared
            .deliveries_seen
            .fetch_add(now_published.deliveries_seen - before.deliveries_seen, Ordering::AcqRel);
        shared.p99_ns[self.plan.index].store(tally.latency.value_at_quantile(0.99), Ordering::Relaxed);
    }
}

/// The totals last added to the shared counters, so each publish adds only the change.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Published {
    sent: u64,
    received: u64,
    failures: u64,
    deliveries_expected: u64,
    deliveries_seen: u64,
}
