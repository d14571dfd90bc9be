//! One module per simulated vendor, each owning its wire format; what they share
//! is how a request is let in.

pub(crate) mod lever;

use std::time::{Duration, Instant};

use crate::faults::{Fault, FaultQueue};
use crate::stats::{Epoch, RequestRecord, Stats, StatsSnapshot};
use crate::throttle::{RateLimit, TokenBucket, retry_after_secs};

/// The door every vendor request passes first: throttle, faults, count, then
/// delay.
///
/// Kept apart from the vendors so the throttle, the faults and the statistics
/// behave the same whichever payloads are served behind them.
pub(crate) struct Gate {
    bucket: TokenBucket,
    faults: FaultQueue,
    stats: Stats,
    latency: Duration,
}

/// The gate's verdict, and the ticket to log the answer with.
pub(crate) struct Admission<'g> {
    pub(crate) verdict: Verdict,
    pub(crate) ticket: Ticket<'g>,
}

pub(crate) enum Verdict {
    Admitted,
    Throttled {
        retry_after_secs: u64,
    },
    /// An injected fault: answer `status` instead of serving the request.
    Faulted {
        status: u16,
        retry_after_secs: Option<u64>,
    },
}

/// nginx's "client closed request": logged for a request whose client went
/// away before the answer, so the log still holds one record per counted
/// request.
pub(crate) const CLIENT_CLOSED_REQUEST: u16 = 499;

/// A counted request not yet logged. Logging happens on drop if the handler
/// never got to [`Ticket::answered`], which is what happens when hyper drops a
/// request whose client disconnected.
pub(crate) struct Ticket<'g> {
    gate: &'g Gate,
    arrived: Instant,
    epoch: Epoch,
    status: u16,
}

impl Ticket<'_> {
    pub(crate) fn answered(mut self, status: u16) {
        self.status = status;
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.gate
            .stats
            .record_response(self.epoch, self.arrived, self.status);
    }
}

impl Gate {
    pub(crate) fn new(rate: Option<RateLimit>, latency: Duration) -> Self {
        Self {
            bucket: TokenBucket::new(rate, Instant::now()),
            faults: FaultQueue::default(),
            stats: Stats::default(),
            latency,
        }
    }

    /// Decides, and counts the request as it arrives.
    pub(crate) fn admit(&self) -> Admission<'_> {
        let now = Instant::now();
        let verdict = match self.bucket.try_take(now) {
            Ok(()) => match self.faults.take() {
                None => Verdict::Admitted,
                Some(fault) => Verdict::Faulted {
                    status: fault.status,
                    retry_after_secs: fault.retry_after_secs(),
                },
            },
            Err(wait) => {
                tracing::debug!(?wait, "throttled");
                Verdict::Throttled {
                    retry_after_secs: retry_after_secs(wait),
                }
            }
        };
        // Only a 429 tells the client it went over the limit.
        let refused = matches!(
            verdict,
            Verdict::Throttled { .. } | Verdict::Faulted { status: 429, .. }
        );
        let epoch = self.stats.record_request(now, !refused);
        Admission {
            verdict,
            ticket: Ticket {
                gate: self,
                arrived: now,
                epoch,
                status: CLIENT_CLOSED_REQUEST,
            },
        }
    }

    /// Applied after the decision, to throttled and faulted requests too: a
    /// real error also travels over the network.
    pub(crate) async fn delay(&self) {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }

    pub(crate) fn record_unauthorized(&self) {
        self.stats.record_unauthorized();
    }

    pub(crate) fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    pub(crate) fn requests(&self) -> Vec<RequestRecord> {
        self.stats.requests()
    }

    /// Leaves the rate, the bucket's tokens and pending faults alone: a reset
    /// starts a new measurement, not a new scenario.
    pub(crate) fn reset_stats(&self) {
        tracing::info!("stats reset");
        self.stats.reset();
    }

    pub(crate) fn rate(&self) -> Option<RateLimit> {
        self.bucket.limit()
    }

    pub(crate) fn set_rate(&self, rate: Option<RateLimit>) {
        tracing::info!(?rate, "rate limit changed");
        self.bucket.set_limit(rate, Instant::now());
    }

    pub(crate) fn inject(&self, fault: Fault) {
        tracing::info!(?fault, "fault injected");
        self.faults.push(fault);
    }

    pub(crate) fn pending_faults(&self) -> Vec<Fault> {
        self.faults.pending()
    }

    pub(crate) fn clear_faults(&self) {
        tracing::info!("faults cleared");
        self.faults.clear();
    }
}
