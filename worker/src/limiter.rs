//! Rate limiters a vendor call waits on.
//!
//! The pipeline only knows the [`Limiter`] trait, so the process-local
//! limiter here and a fleet-wide one can be swapped without touching
//! connectors or layers.

use std::num::NonZeroU32;
use std::time::Duration;

use async_trait::async_trait;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rolecall_common::config::RateSettings;

/// Something a vendor call waits on before it may go out.
#[async_trait]
pub trait Limiter: Send + Sync + 'static {
    /// Waits until one request may be sent.
    async fn acquire(&self);
}

/// A GCRA limiter in this process (governor): exact, nanosecond-scale, and
/// shared by every job of one SaaS app in this worker.
pub struct LocalLimiter {
    inner: DefaultDirectRateLimiter,
}

impl LocalLimiter {
    /// A limiter allowing `rate.per_second` sustained, `rate.burst` at once.
    pub fn new(rate: RateSettings) -> Self {
        Self {
            inner: RateLimiter::direct(quota(rate)),
        }
    }
}

/// The governor quota for a rate; fractional rates (0.5/s) are allowed.
pub fn quota(rate: RateSettings) -> Quota {
    let period = Duration::from_secs_f64(1.0 / rate.per_second).max(Duration::from_nanos(1));
    Quota::with_period(period)
        .expect("the period is positive")
        .allow_burst(rate.burst.min(NonZeroU32::MAX))
}

#[async_trait]
impl Limiter for LocalLimiter {
    async fn acquire(&self) {
        self.inner.until_ready().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_local_limiter_paces_after_the_burst() {
        let limiter = LocalLimiter::new(RateSettings {
            per_second: 100.0,
            burst: NonZeroU32::new(5).unwrap(),
        });
        let started = std::time::Instant::now();
        for _ in 0..15 {
            limiter.acquire().await;
        }
        // 5 at once, then 10 more at 10 ms each.
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(90), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(500), "{elapsed:?}");
    }
}
