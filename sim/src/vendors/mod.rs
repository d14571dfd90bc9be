//! One module per simulated vendor, each owning its wire format; what they share
//! is how a request is let in.

pub(crate) mod lever;

use std::time::{Duration, Instant};

use crate::stats::{Stats, StatsSnapshot};
use crate::throttle::{RateLimit, TokenBucket, retry_after_secs};

/// The door every vendor request passes first: throttle, count, then delay.
///
/// Kept apart from the vendors so the throttle and the statistics behave the same
/// whichever payloads are served behind them.
pub(crate) struct Gate {
    bucket: TokenBucket,
    stats: Stats,
    latency: Duration,
}

pub(crate) enum Admission {
    Admitted,
    Throttled { retry_after_secs: u64 },
}

impl Gate {
    pub(crate) fn new(rate: Option<RateLimit>, latency: Duration) -> Self {
        Self {
            bucket: TokenBucket::new(rate, Instant::now()),
            stats: Stats::default(),
            latency,
        }
    }

    /// The latency is added after the decision, to throttled requests too: a
    /// real 429 also travels over the network.
    pub(crate) async fn admit(&self) -> Admission {
        let now = Instant::now();
        let verdict = self.bucket.try_take(now);
        self.stats.record_request(now, verdict.is_ok());
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        match verdict {
            Ok(()) => Admission::Admitted,
            Err(wait) => {
                tracing::debug!(?wait, "throttled");
                Admission::Throttled {
                    retry_after_secs: retry_after_secs(wait),
                }
            }
        }
    }

    pub(crate) fn record_unauthorized(&self) {
        self.stats.record_unauthorized();
    }

    pub(crate) fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    pub(crate) fn rate(&self) -> Option<RateLimit> {
        self.bucket.limit()
    }

    pub(crate) fn set_rate(&self, rate: Option<RateLimit>) {
        tracing::info!(?rate, "rate limit changed");
        self.bucket.set_limit(rate, Instant::now());
    }
}
