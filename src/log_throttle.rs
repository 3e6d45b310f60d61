//! Rate-limited logging, for conditions that can repeat thousands of times a second (out of
//! file descriptors, a full server) where one line a second says all there is to say.

use std::time::{Duration, Instant};

/// Lets one message through per period and counts the ones it held back.
#[derive(Debug)]
pub struct LogThrottle {
    period: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogThrottle {
    /// A throttle letting one message through per `period`.
    pub const fn new(period: Duration) -> LogThrottle {
        LogThrottle { period, last: None, suppressed: 0 }
    }

    /// `Some(held_back)` when a message may be logged now (with how many were held back
    /// since the last one), `None` when it should be skipped.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.period => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One message per period passes, and the held-back count is reported with the next.
    #[test]
    fn one_per_period() {
        let mut throttle = LogThrottle::new(Duration::from_secs(1));
        let start = Instant::now();
        assert_eq!(throttle.allow(start), Some(0));
        assert_eq!(throttle.allow(start + Duration::from_millis(10)), None);
        assert_eq!(throttle.allow(start + Duration::from_millis(20)), None);
        assert_eq!(throttle.allow(start + Duration::from_secs(2)), Some(2));
    }
}
