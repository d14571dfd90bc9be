//! Rate limiters a vendor call waits on.
//!
//! A vendor's quota belongs to the whole fleet, so the limiter that matters
//! is [`FleetLimiter`]: one GCRA per SaaS app in Redis, decided together with
//! the fleet-wide in-flight cap, the vendor's pause and the adaptive factor
//! in one atomic Lua script that reads Redis' own clock (no clock skew
//! between workers). A process-local governor sits in front so a worker never
//! asks Redis for more than the whole fleet may use.
//!
//! The script *reserves*: when the next slot is a few hundred milliseconds
//! away it books it and says how long to sleep, so a waiting request makes
//! one Redis call, not one per poll. Only when the wait is longer than the
//! reservation horizon (or the app is paused, or every in-flight slot is
//! taken) does the caller get "ask again after X", and it sleeps exactly X.

use std::num::NonZeroU32;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use redis::Script;
use redis::aio::ConnectionManager;
use rolecall_common::config::RateSettings;
use rolecall_common::names::Names;
use tracing::{info, warn};

/// What the limiter decided for one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Send after `after` (a booked slot); release `lease` when the call ends.
    Granted {
        /// How long to wait before sending.
        after: Duration,
        /// The in-flight slot held, when the app caps requests in flight.
        lease: Option<Lease>,
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

/// Quota the vendor reported on a response (X-RateLimit-* headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuotaHint {
    /// Requests allowed in the vendor's window.
    pub limit: Option<u64>,
    /// Requests left in it.
    pub remaining: Option<u64>,
    /// When the window resets.
    pub reset_at: Option<SystemTime>,
}

/// The limiter could not decide (Redis is unreachable). Never treated as
/// "unlimited": the caller holds its job until the limiter answers again.
#[derive(Debug, thiserror::Error)]
#[error("rate limiter unavailable: {0}")]
pub struct LimiterError(String);

impl From<redis::RedisError> for LimiterError {
    fn from(e: redis::RedisError) -> Self {
        LimiterError(e.to_string())
    }
}

/// Something a vendor call asks before it may go out, and tells afterwards.
#[async_trait]
pub trait Limiter: Send + Sync + 'static {
    /// Asks for one request.
    async fn acquire(&self) -> Result<Admission, LimiterError>;
    /// Returns an in-flight slot.
    async fn release(&self, lease: Lease);
    /// The vendor throttled a request we were allowed to send: pause the
    /// fleet for `retry_after` and, when adaptive, slow down.
    async fn throttled(&self, retry_after: Option<Duration>);
    /// The vendor reported its remaining quota.
    async fn quota(&self, hint: QuotaHint);
    /// How long the vendor's pause still lasts, if one started after a slot
    /// was booked (checked before a booked request goes out).
    async fn pause_remaining(&self) -> Option<Duration> {
        None
    }
}

/// Paces requests in this process only (governor). The fleet limiter uses
/// it as its front gate; alone it serves unit tests and single workers.
pub struct LocalLimiter {
    inner: DefaultDirectRateLimiter,
}

impl LocalLimiter {
    /// A limiter allowing `rate.per_second` sustained, `rate.burst` at once.
    pub fn new(rate: RateSettings) -> Self {
        Self {
            inner: RateLimiter::direct(quota(rate.per_second, rate.burst)),
        }
    }

    async fn until_ready(&self) {
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
    async fn acquire(&self) -> Result<Admission, LimiterError> {
        self.until_ready().await;
        Ok(Admission::Granted {
            after: Duration::ZERO,
            lease: None,
        })
    }

    async fn release(&self, _: Lease) {}

    async fn throttled(&self, _: Option<Duration>) {}

    async fn quota(&self, _: QuotaHint) {}
}

/// How fast the adaptive factor recovers after the vendor stops throttling:
/// +5 % of the configured rate per second.
const RECOVERY_PER_S: f64 = 0.05;
/// Multiplicative decrease on a throttle.
const DECREASE: f64 = 0.7;
/// The factor never goes below this share of the configured rate.
const MIN_FACTOR: f64 = 0.05;
/// A burst of 429s from one overload is one decrease, not one per request.
const DECREASE_EVERY_MS: u64 = 1_000;

/// Shared Lua: current time from Redis, and the adaptive factor with its
/// lazy additive recovery applied.
const PRELUDE: &str = r#"
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now_us / 1000)
local function factor_now(state_key, recovery)
  local st = redis.call('HMGET', state_key, 'factor', 'updated_ms')
  local f = tonumber(st[1]) or 1
  local updated = tonumber(st[2]) or now_ms
  if f < 1 then f = math.min(1, f + (now_ms - updated) / 1000 * recovery) end
  return f
end
"#;

/// KEYS: state, pause, leases, override.
/// ARGV: per_second, burst, max_in_flight (0 = none), lease id, lease ttl ms,
/// reservation horizon µs, recovery per s.
/// Returns {granted, wait µs, reason, effective milli-rps, base milli-rps, burst}.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{PRELUDE}
local ov = redis.call('HMGET', KEYS[4], 'per_second', 'burst', 'max_in_flight')
local rate = tonumber(ov[1]) or tonumber(ARGV[1])
local burst = tonumber(ov[2]) or tonumber(ARGV[2])
local cap = tonumber(ov[3]) or tonumber(ARGV[3])
local f = factor_now(KEYS[1], tonumber(ARGV[7]))
local eff = rate * f
local function reply(granted, wait_us, reason)
  return {{granted, math.floor(wait_us), reason, math.floor(eff * 1000), math.floor(rate * 1000), burst}}
end
local pause = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
if pause > now_ms then return reply(0, (pause - now_ms) * 1000, 'paused') end
if cap > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now_ms)
  if redis.call('ZCARD', KEYS[3]) >= cap then
    local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
    local until_expiry = (tonumber(first[2]) - now_ms) * 1000
    -- Leases are normally returned long before they expire: look again soon.
    return reply(0, math.max(1000, math.min(until_expiry, 25000)), 'in_flight')
  end
end
local interval = 1000000 / eff
local tat = tonumber(redis.call('HGET', KEYS[1], 'tat') or '0') or 0
local new_tat = math.max(tat, now_us) + interval
local wait = new_tat - burst * interval - now_us
if wait > tonumber(ARGV[6]) then return reply(0, wait - tonumber(ARGV[6]), 'rate') end
if wait < 0 then wait = 0 end
redis.call('HSET', KEYS[1], 'tat', string.format('%.0f', new_tat), 'factor', tostring(f), 'updated_ms', now_ms,
  'effective_per_second', tostring(eff))
if cap > 0 then
  redis.call('ZADD', KEYS[3], now_ms + math.floor(wait / 1000) + tonumber(ARGV[5]), ARGV[4])
  redis.call('PEXPIRE', KEYS[3], math.floor(wait / 1000) + tonumber(ARGV[5]) + 1000)
end
return reply(1, wait, 'ok')
"#
    ))
});

/// KEYS: state, pause. ARGV: pause ms (0 = none), decrease (1/0), ratio,
/// min factor, min ms between decreases, recovery per s.
/// Returns {factor × 1000, pause until ms}.
static THROTTLED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{PRELUDE}
local pause_ms = tonumber(ARGV[1])
local until_ms = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
if pause_ms > 0 and now_ms + pause_ms > until_ms then
  until_ms = now_ms + pause_ms
  redis.call('SET', KEYS[2], until_ms, 'PX', pause_ms + 1000)
end
local f = factor_now(KEYS[1], tonumber(ARGV[6]))
if ARGV[2] == '1' then
  local last = tonumber(redis.call('HGET', KEYS[1], 'decreased_ms') or '0') or 0
  if now_ms - last >= tonumber(ARGV[5]) then
    f = math.max(tonumber(ARGV[4]), f * tonumber(ARGV[3]))
    redis.call('HSET', KEYS[1], 'decreased_ms', now_ms)
  end
end
redis.call('HSET', KEYS[1], 'factor', tostring(f), 'updated_ms', now_ms)
return {{math.floor(f * 1000), until_ms}}
"#
    ))
});

/// The fleet-wide limiter of one SaaS app.
pub struct FleetLimiter {
    saas: String,
    conn: ConnectionManager,
    state_key: String,
    pause_key: String,
    leases_key: String,
    override_key: String,
    rate: RateSettings,
    front: Mutex<(f64, u32, Arc<LocalLimiter>)>,
    lease_ttl: Duration,
    horizon: Duration,
    lease_prefix: String,
    lease_seq: std::sync::atomic::AtomicU64,
    last_factor: std::sync::atomic::AtomicU64,
}

impl FleetLimiter {
    /// A limiter for `saas` under `names`. `lease_ttl` bounds how long a
    /// crashed worker's in-flight slots outlive it (one attempt's timeout
    /// plus a margin); `horizon` is how far ahead slots are booked.
    pub fn new(
        saas: &str,
        rate: RateSettings,
        conn: ConnectionManager,
        names: &Names,
        lease_ttl: Duration,
        horizon: Duration,
    ) -> Self {
        Self {
            saas: saas.to_string(),
            conn,
            state_key: names.limiter_key(saas),
            pause_key: names.pause_key(saas),
            leases_key: names.leases_key(saas),
            override_key: names.limits_override_key(saas),
            rate,
            front: Mutex::new((
                rate.per_second,
                rate.burst.get(),
                Arc::new(LocalLimiter::new(rate)),
            )),
            lease_ttl,
            horizon,
            lease_prefix: ulid::Ulid::new().to_string(),
            lease_seq: std::sync::atomic::AtomicU64::new(0),
            last_factor: std::sync::atomic::AtomicU64::new(1000),
        }
    }

    fn front(&self) -> Arc<LocalLimiter> {
        self.front.lock().expect("never poisoned").2.clone()
    }

    /// Keeps the front gate at the fleet's configured rate when an operator
    /// override changes it.
    fn track_base(&self, per_second: f64, burst: u32) {
        let mut front = self.front.lock().expect("never poisoned");
        let changed = (front.0 - per_second).abs() > 1e-9 || front.1 != burst;
        if let Some(burst_nz) = NonZeroU32::new(burst).filter(|_| changed && per_second > 0.0) {
            info!(saas = %self.saas, per_second, burst, "Vendor limit changed; following it.");
            *front = (
                per_second,
                burst,
                Arc::new(LocalLimiter {
                    inner: RateLimiter::direct(quota(per_second, burst_nz)),
                }),
            );
        }
    }

    fn note_factor(&self, milli: u64) {
        let before = self
            .last_factor
            .swap(milli, std::sync::atomic::Ordering::Relaxed);
        // Log changes of at least 10 %, not every small recovery step.
        if before.abs_diff(milli) >= 100 || (milli == 1000 && before != 1000) {
            info!(saas = %self.saas, factor = milli as f64 / 1000.0, "Adaptive rate factor changed.");
        }
    }

    async fn signal(&self, pause: Duration, decrease: bool) {
        let mut conn = self.conn.clone();
        let result: Result<(u64, u64), _> = THROTTLED
            .key(&self.state_key)
            .key(&self.pause_key)
            .arg(pause.as_millis() as u64)
            .arg(if decrease && self.rate.adaptive {
                "1"
            } else {
                "0"
            })
            .arg(DECREASE)
            .arg(MIN_FACTOR)
            .arg(DECREASE_EVERY_MS)
            .arg(RECOVERY_PER_S)
            .invoke_async(&mut conn)
            .await;
        match result {
            Ok((factor, _)) => self.note_factor(factor),
            Err(e) => {
                warn!(saas = %self.saas, error = %e, "Could not record the vendor's throttle in Redis.")
            }
        }
    }
}

#[async_trait]
impl Limiter for FleetLimiter {
    async fn acquire(&self) -> Result<Admission, LimiterError> {
        self.front().until_ready().await;
        let lease_id = format!(
            "{}-{}",
            self.lease_prefix,
            self.lease_seq
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let cap = self.rate.max_in_flight.map_or(0, NonZeroU32::get);
        let mut conn = self.conn.clone();
        let (granted, wait_us, reason, eff_milli, base_milli, burst): (
            i64,
            i64,
            String,
            i64,
            i64,
            u32,
        ) = ACQUIRE
            .key(&self.state_key)
            .key(&self.pause_key)
            .key(&self.leases_key)
            .key(&self.override_key)
            .arg(self.rate.per_second)
            .arg(self.rate.burst.get())
            .arg(cap)
            .arg(&lease_id)
            .arg(self.lease_ttl.as_millis() as u64)
            .arg(self.horizon.as_micros() as u64)
            .arg(RECOVERY_PER_S)
            .invoke_async(&mut conn)
            .await?;
        self.track_base(base_milli as f64 / 1000.0, burst);
        if base_milli > 0 {
            self.note_factor((eff_milli * 1000 / base_milli).max(0) as u64);
        }
        let wait = Duration::from_micros(wait_us.max(0) as u64);
        Ok(if granted == 1 {
            Admission::Granted {
                after: wait,
                lease: (cap > 0).then_some(Lease(lease_id)),
            }
        } else {
            Admission::Wait {
                wait,
                reason: WaitReason::parse(&reason),
            }
        })
    }

    async fn release(&self, lease: Lease) {
        let mut conn = self.conn.clone();
        let result: Result<(), _> = redis::cmd("ZREM")
            .arg(&self.leases_key)
            .arg(&lease.0)
            .query_async(&mut conn)
            .await;
        if let Err(e) = result {
            // The lease expires by itself; only capacity is lost meanwhile.
            warn!(saas = %self.saas, error = %e, "Could not release an in-flight slot; it will expire.");
        }
    }

    async fn throttled(&self, retry_after: Option<Duration>) {
        // A vendor that names no wait still gets a short fleet-wide breather.
        let pause = retry_after.unwrap_or(Duration::from_secs(1));
        warn!(saas = %self.saas, pause_ms = pause.as_millis() as u64, "Vendor throttled a request; pausing the fleet for this SaaS app.");
        self.signal(pause, true).await;
    }

    async fn pause_remaining(&self) -> Option<Duration> {
        let mut conn = self.conn.clone();
        let until: Option<u64> = redis::cmd("GET")
            .arg(&self.pause_key)
            .query_async(&mut conn)
            .await
            .ok()
            .flatten();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()?
            .as_millis() as u64;
        until
            .filter(|u| *u > now)
            .map(|u| Duration::from_millis(u - now))
    }

    async fn quota(&self, hint: QuotaHint) {
        let Some(remaining) = hint.remaining else {
            return;
        };
        let until_reset = hint
            .reset_at
            .and_then(|at| at.duration_since(SystemTime::now()).ok())
            .map(|d| d.min(Duration::from_secs(300)));
        if remaining == 0 {
            // The window is spent: nobody in the fleet sends until it resets.
            let pause = until_reset.unwrap_or(Duration::from_secs(1));
            info!(saas = %self.saas, pause_ms = pause.as_millis() as u64, "Vendor quota exhausted; pausing the fleet until it resets.");
            self.signal(pause, true).await;
        } else if hint.limit.is_some_and(|limit| remaining * 10 < limit) {
            // Under 10 % left: slow down before the vendor has to say 429.
            self.signal(Duration::ZERO, true).await;
        }
    }
}

/// Reads `X-RateLimit-*` / `X-Rate-Limit-*` headers (Okta, Miro, GitHub style).
pub fn quota_hint(headers: &reqwest::header::HeaderMap) -> Option<QuotaHint> {
    let number = |names: &[&str]| {
        names.iter().find_map(|n| {
            headers
                .get(*n)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
    };
    let remaining = number(&["x-ratelimit-remaining", "x-rate-limit-remaining"]);
    remaining?;
    let limit = number(&["x-ratelimit-limit", "x-rate-limit-limit"]);
    let reset_at = number(&["x-ratelimit-reset", "x-rate-limit-reset"]).map(|v| {
        // Epoch seconds in the documented vendors; small numbers are "seconds from now".
        if v > 1_000_000_000 {
            UNIX_EPOCH + Duration::from_secs(v)
        } else {
            SystemTime::now() + Duration::from_secs(v)
        }
    });
    Some(QuotaHint {
        limit,
        remaining,
        reset_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    #[tokio::test]
    async fn the_local_limiter_paces_after_the_burst() {
        let limiter = LocalLimiter::new(RateSettings {
            per_second: 100.0,
            burst: NonZeroU32::new(5).unwrap(),
            max_in_flight: None,
            adaptive: true,
        });
        let started = std::time::Instant::now();
        for _ in 0..15 {
            limiter.acquire().await.unwrap();
        }
        // 5 at once, then 10 more at 10 ms each.
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(90), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(500), "{elapsed:?}");
    }

    #[test]
    fn quota_headers_are_read_in_both_spellings() {
        let mut h = HeaderMap::new();
        h.insert("X-Rate-Limit-Remaining", HeaderValue::from_static("0"));
        h.insert("X-Rate-Limit-Limit", HeaderValue::from_static("600"));
        h.insert("X-Rate-Limit-Reset", HeaderValue::from_static("4102444800"));
        let hint = quota_hint(&h).unwrap();
        assert_eq!(hint.remaining, Some(0));
        assert_eq!(hint.limit, Some(600));
        assert_eq!(
            hint.reset_at,
            Some(UNIX_EPOCH + Duration::from_secs(4_102_444_800))
        );
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("12"));
        assert_eq!(quota_hint(&h).unwrap().remaining, Some(12));
        assert!(quota_hint(&HeaderMap::new()).is_none());
    }
}
