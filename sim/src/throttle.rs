//! A token bucket, the scheme Lever documents for its API keys ("a steady
//! state of 10 requests per second, with bursts up to 20"), and the sim's
//! default scheme; windows are in [`crate::window`].
//!
//! Time is passed in rather than read, so the arithmetic can be tested without
//! sleeping.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// `per_second <= 0` (or not finite) means the bucket never refills and
/// `burst == 0` means every request is throttled: both are useful in tests
/// ("quota exhausted", "vendor always busy"), so neither is rejected.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

/// What a throttled client is told to wait when the limit will never let a
/// request through, and the cap on any wait: a `Retry-After` of days would
/// only stall a test.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(60);

/// The bucket's state; [`crate::limit::Limiter`] holds it under its lock.
pub(crate) struct TokenBucket {
    limit: RateLimit,
    tokens: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    /// Starts full: a benchmark that changes the limit between phases wants
    /// each phase to start clean.
    pub(crate) fn new(limit: RateLimit, now: Instant) -> Self {
        Self {
            limit,
            tokens: f64::from(limit.burst),
            refilled_at: now,
        }
    }

    pub(crate) fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Takes one token, or says how long until one is available.
    #[cfg(test)]
    pub(crate) fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        self.take(now).0
    }

    /// As `try_take`, and the bucket's level just after, for vendors that
    /// report their quota in headers on every response.
    pub(crate) fn take(&mut self, now: Instant) -> (Result<(), Duration>, Level) {
        let limit = self.limit;
        let refill = refill_rate(limit);
        if let Some(rate) = refill {
            let elapsed = now.saturating_duration_since(self.refilled_at);
            self.tokens = (self.tokens + elapsed.as_secs_f64() * rate).min(f64::from(limit.burst));
        }
        self.refilled_at = self.refilled_at.max(now);

        let taken = if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait = refill
                .and_then(|rate| Duration::try_from_secs_f64((1.0 - self.tokens) / rate).ok())
                .unwrap_or(MAX_WAIT);
            Err(wait.min(MAX_WAIT))
        };
        let level = Level {
            burst: limit.burst,
            tokens: self.tokens,
            refill_per_second: refill,
        };
        (taken, level)
    }
}

/// How full the bucket is: what a vendor that reports its quota (Okta,
/// GitHub) derives its `limit`/`remaining`/`reset` headers from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Level {
    pub(crate) burst: u32,
    pub(crate) tokens: f64,
    refill_per_second: Option<f64>,
}

impl Level {
    /// Whole requests that would be admitted right now.
    pub(crate) fn remaining(&self) -> u32 {
        // Tokens never exceed the burst, a u32.
        self.tokens.floor().clamp(0.0, f64::from(self.burst)) as u32
    }

    /// How long until the bucket is full again if no request came: the
    /// moment `remaining` is back to `burst`, which is what a window-based
    /// vendor calls its reset. Capped like any wait.
    pub(crate) fn until_full(&self) -> Duration {
        let missing = f64::from(self.burst) - self.tokens;
        if missing <= 0.0 {
            return Duration::ZERO;
        }
        self.refill_per_second
            .and_then(|rate| Duration::try_from_secs_f64(missing / rate).ok())
            .unwrap_or(MAX_WAIT)
            .min(MAX_WAIT)
    }
}

fn refill_rate(limit: RateLimit) -> Option<f64> {
    (limit.per_second.is_finite() && limit.per_second > 0.0).then_some(limit.per_second)
}

/// `Retry-After` carries whole seconds; rounding down would invite a retry that
/// is throttled again, and `0` reads as "retry immediately".
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_second: f64, burst: u32) -> RateLimit {
        RateLimit { per_second, burst }
    }

    #[test]
    fn burst_then_refill() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(limit(2.0, 3), t0);
        assert!((0..3).all(|_| bucket.try_take(t0).is_ok()));
        assert_eq!(bucket.try_take(t0), Err(Duration::from_millis(500)));
        let later = t0 + Duration::from_millis(500);
        assert!(bucket.try_take(later).is_ok());
        assert!(bucket.try_take(later).is_err());
        // Refill never exceeds the burst.
        let much_later = t0 + Duration::from_secs(100);
        assert!((0..3).all(|_| bucket.try_take(much_later).is_ok()));
        assert!(bucket.try_take(much_later).is_err());
    }

    #[test]
    fn degenerate_limits() {
        let t0 = Instant::now();
        let mut never_refills = TokenBucket::new(limit(0.0, 2), t0);
        assert!(never_refills.try_take(t0).is_ok());
        assert!(never_refills.try_take(t0).is_ok());
        let later = t0 + Duration::from_secs(1000);
        assert_eq!(never_refills.try_take(later), Err(MAX_WAIT));

        let mut always_busy = TokenBucket::new(limit(f64::NAN, 0), t0);
        assert_eq!(always_busy.try_take(t0), Err(MAX_WAIT));
    }

    #[test]
    fn level_reports_remaining_and_time_to_full() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(limit(2.0, 4), t0);
        let (taken, level) = bucket.take(t0);
        assert!(taken.is_ok());
        assert_eq!((level.burst, level.remaining()), (4, 3));
        assert_eq!(level.until_full(), Duration::from_millis(500));
        for _ in 0..3 {
            assert!(bucket.take(t0).0.is_ok());
        }
        let (taken, level) = bucket.take(t0);
        assert!(taken.is_err());
        assert_eq!(level.remaining(), 0);
        assert_eq!(level.until_full(), Duration::from_secs(2));
        let mut never = TokenBucket::new(limit(0.0, 1), t0);
        assert!(never.take(t0).0.is_ok());
        assert_eq!(never.take(t0).1.until_full(), MAX_WAIT);
    }

    #[test]
    fn retry_after_rounds_up_to_at_least_one() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(10)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
    }
}
