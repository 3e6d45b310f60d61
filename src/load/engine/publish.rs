//! Bookkeeping: this thread's totals, added to the counters all threads share a few times
//! a second (the progress line and the broadcast drain read them).

use std::sync::atomic::Ordering;

use super::PUBLISH_EVERY_NS;
use crate::load::shared::Shared;
use crate::load::tally::Tally;

/// The totals last added to the shared counters, so each publish adds only the change.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Published {
    sent: u64,
    received: u64,
    failures: u64,
    deliveries_expected: u64,
    deliveries_seen: u64,
    /// When the next publish is due.
    next_ns: u64,
}

impl Published {
    /// Nothing published yet; the first publish is due at `now`.
    pub fn new(now: u64) -> Published {
        Published { next_ns: now, ..Published::default() }
    }

    /// When the next publish is due.
    pub fn next_ns(&self) -> u64 {
        self.next_ns
    }

    /// Adds what changed in `tally` since the last publish to the shared totals, if one is
    /// due or `force`; `thread` is the publishing thread's index (its p99 slot).
    pub fn publish(&mut self, tally: &Tally, shared: &Shared, thread: usize, now: u64, force: bool) {
        if !force && now < self.next_ns {
            return;
        }
        let now_published = Published {
            sent: tally.sent,
            received: tally.received,
            failures: tally.failure_count(),
            deliveries_expected: tally.deliveries_expected,
            deliveries_seen: tally.deliveries_seen,
            next_ns: now + PUBLISH_EVERY_NS,
        };
        let before = std::mem::replace(self, now_published);
        shared.sent.fetch_add(now_published.sent - before.sent, Ordering::AcqRel);
        shared.received.fetch_add(now_published.received - before.received, Ordering::AcqRel);
        shared.failures.fetch_add(now_published.failures - before.failures, Ordering::AcqRel);
        shared
            .deliveries_expected
            .fetch_add(now_published.deliveries_expected - before.deliveries_expected, Ordering::AcqRel);
        shared
            .deliveries_seen
            .fetch_add(now_published.deliveries_seen - before.deliveries_seen, Ordering::AcqRel);
        shared.p99_ns[thread].store(tally.latency.value_at_quantile(0.99), Ordering::Relaxed);
    }
}
