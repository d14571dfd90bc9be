//! A process-local limiter (governor): the fleet limiter's front gate, and
//! on its own the limiter of unit tests and standalone connectors.

use std::num::NonZeroU32;
use std::time::Duration;

use async_trait::async_trait;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rolecall_common::config::Limit;

use super::{Admission, Gate, Lease, Limiter, LimiterError, QuotaHint, Throttle, ThrottleOutcome};

/// Paces requests in this process only.
pub struct LocalLimiter {
    inner: DefaultDirectRateLimiter,
    limit: Limit,
}

impl LocalLimiter {
    /// A limiter allowing `limit.per_second` sustained, `limit.burst` at once.
    pub fn new(limit: Limit) -> Self {
        Self {
            inner: RateLimiter::direct(quota(limit.per_second, limit.burst)),
            limit,
        }
    }

    pub(super) async fn until_ready(&self) {
        self.inner.until_ready().await;
    }
}

/// The governor quota for a rate; fractional rates (0.5/s) are allowed.
pub fn quota(per_second: f64, burst: NonZeroU32) -> Quota {
    let period = Duration::from_secs_f64(1.0 / per_second).max(Duration::from_nanos(1));
    Quota::with_period(period)
        .expect("the period is positive")
        .allow_burst(burst)
}

#[async_trait]
impl Limiter for LocalLimiter {
    async fn acquire(&self, _: Duration) -> Result<Admission, LimiterError> {
        self.until_ready().await;
        Ok(Admission::Granted {
            after: Duration::ZERO,
            lease: None,
            generation: 0,
        })
    }

    async fn gate(&self, _: u64, _: Duration) -> Result<Gate, LimiterError> {
        Ok(Gate::Go(None))
    }

    async fn release(&self, _: Lease) {}

    async fn throttled(&self, _: Throttle) -> ThrottleOutcome {
        ThrottleOutcome::default()
    }

    async fn quota(&self, _: QuotaHint) {}

    fn limit(&self) -> Limit {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_local_limiter_paces_after_the_burst() {
        let limiter = LocalLimiter::new(Limit {
            per_second: 100.0,
            burst: NonZeroU32::new(5).unwrap(),
            window: Duration::from_secs(1),
        });
        let started = std::time::Instant::now();
        for _ in 0..15 {
            limiter.acquire(Duration::ZERO).await.unwrap();
        }
        // 5 at once, then 10 more at 10 ms each.
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(90), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(500), "{elapsed:?}");
    }
}
