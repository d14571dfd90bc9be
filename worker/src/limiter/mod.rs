//! Rate limiters a vendor request waits on.
//!
//! A vendor's quota belongs to the whole fleet, so the limiter that matters
//! is [`FleetLimiter`]: one GCRA per SaaS app (and per named bucket) in
//! Redis, decided together with the fleet-wide in-flight cap, the vendor's
//! pause and the adaptive factor in one atomic Lua script that reads Redis'
//! own clock (no clock skew between workers). A process-local governor sits
//! in front so a worker never asks Redis for more than the whole fleet may use.
//!
//! The script *reserves*: when the next slot is a few hundred milliseconds
//! away it books it and says how long to sleep, so a waiting request makes
//! one Redis call, not one per poll. A throttle from the vendor bumps the
//! limiter's generation: a request whose booking predates it asks again
//! instead of firing at the old pace.
//!
//! Only the vendor client (`crate::vendor`) talks to limiters; connectors
//! never see them.

mod fleet;
mod local;
mod scripts;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use rolecall_common::config::{BucketSettings, Limit};

pub use fleet::{FleetLimit, FleetLimiter};
pub use local::{LocalLimiter, quota};
pub use scripts::factor_at;

/// What the limiter decided for one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Send after `after` (a booked slot); release `lease` when the call ends.
    Granted {
        /// How long to wait before sending.
        after: Duration,
        /// The in-flight slot held, when the app caps requests in flight.
        lease: Option<Lease>,
        /// The limiter's generation when the slot was booked.
        generation: u64,
    },
    /// Not now: ask again after `wait`.
    Wait {
        /// How long until asking again makes sense.
        wait: Duration,
        /// Why.
        reason: WaitReason,
    },
}

/// Why a request has to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitReason {
    /// The vendor asked the fleet to pause (429/503 with Retry-After, or an exhausted quota).
    Paused,
    /// The rate limit: the next free slot is beyond the reservation horizon.
    Rate,
    /// Every in-flight slot of the fleet is taken.
    InFlight,
}

impl WaitReason {
    /// Short name for logs and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            WaitReason::Paused => "paused by the vendor",
            WaitReason::Rate => "rate limit",
            WaitReason::InFlight => "in-flight cap",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "paused" => WaitReason::Paused,
            "in_flight" => WaitReason::InFlight,
            _ => WaitReason::Rate,
        }
    }
}

/// An in-flight slot; released after the call, or expiring by itself when
/// the worker dies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease(pub String);

/// Quota the vendor reported on a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuotaHint {
    /// Requests allowed in the vendor's window.
    pub limit: Option<u64>,
    /// Requests left in it.
    pub remaining: Option<u64>,
    /// When the window resets.
    pub reset_at: Option<SystemTime>,
}

/// Where a send stands in the fleet's log of a window the vendor counts
/// (Redis time, µs): a throttle of that send tells how many requests the
/// vendor's window held when it refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendMark(pub u64);

/// The last word before a request leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Send now; the send was logged at the mark, when the limit is a window.
    Go(Option<SendMark>),
    /// The booking is stale (the vendor throttled or paused since): ask again.
    Stale,
    /// The vendor's window is full: check again after this long.
    Wait(Duration),
}

/// How the vendor throttled a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    /// The wait the vendor named (`Retry-After`, or its reset time), if any.
    pub retry_after: Option<Duration>,
    /// How long the response took; the limiter waits at least this long
    /// between two decreases, so one overload is answered once.
    pub round_trip: Duration,
    /// The throttled send's place in the fleet's send log, if it has one.
    pub sent: Option<SendMark>,
}

/// What the limiter made of a throttle.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ThrottleOutcome {
    /// The fleet's pause, when one was set.
    pub paused_for: Option<Duration>,
    /// The vendor asked for a longer pause than `rate.max_pause` allows.
    pub capped: bool,
}

/// The limiter could not decide (Redis is unreachable). Never treated as
/// "unlimited": the caller holds its job until the limiter answers again.
#[derive(Debug, thiserror::Error)]
#[error("rate limiter unavailable: {0}")]
pub struct LimiterError(pub String);

impl From<redis::RedisError> for LimiterError {
    fn from(e: redis::RedisError) -> Self {
        LimiterError(e.to_string())
    }
}

/// Something a vendor request asks before it may go out, and tells afterwards.
#[async_trait]
pub trait Limiter: Send + Sync + 'static {
    /// Asks for one request. `margin` is the room left per window for
    /// network jitter: the pacing stretches each window by it.
    async fn acquire(&self, margin: Duration) -> Result<Admission, LimiterError>;
    /// The last check before a request booked at `generation` leaves. An
    /// error means "do not send": a limiter that cannot answer never lets
    /// a request through.
    async fn gate(&self, generation: u64, margin: Duration) -> Result<Gate, LimiterError>;
    /// Returns an in-flight slot.
    async fn release(&self, lease: Lease);
    /// The vendor throttled a request we were allowed to send.
    async fn throttled(&self, throttle: Throttle) -> ThrottleOutcome;
    /// The vendor reported its remaining quota.
    async fn quota(&self, hint: QuotaHint);
    /// The limit this limiter paces to (for jitter margins and logs).
    fn limit(&self) -> Limit;
    /// The share of the limit the fleet paces to now (1.0 = all of it),
    /// when the limiter adapts to throttles.
    fn factor(&self) -> Option<f64> {
        None
    }
}

/// The limiters of one SaaS app: its default limit and its named buckets.
#[derive(Clone)]
pub struct Limiters {
    default: Arc<dyn Limiter>,
    buckets: Vec<(BucketSettings, Arc<dyn Limiter>)>,
}

impl Limiters {
    /// A default limiter plus one per bucket.
    pub fn new(
        default: Arc<dyn Limiter>,
        buckets: Vec<(BucketSettings, Arc<dyn Limiter>)>,
    ) -> Self {
        Self { default, buckets }
    }

    /// The limiter a request counts against, and its bucket's name.
    pub fn for_request(&self, method: &str, path: &str) -> (&str, &Arc<dyn Limiter>) {
        self.buckets
            .iter()
            .find(|(b, _)| b.covers(method, path))
            .map_or(("default", &self.default), |(b, l)| (b.name.as_str(), l))
    }
}
