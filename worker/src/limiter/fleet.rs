//! The fleet-wide limiter of one SaaS app (or one of its buckets), in Redis.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use rolecall_common::RedisConnection;
use rolecall_common::config::Limit;
use rolecall_common::names::Names;
use tracing::{info, warn};

use super::scripts::{ACQUIRE, BETA, CUBIC, GATE, MIN_ADMITTED, MIN_FACTOR, THROTTLED, probe_ms};
use super::{
    Admission, Gate, Lease, Limiter, LimiterError, LocalLimiter, QuotaHint, SendMark, Throttle,
    ThrottleOutcome, WaitReason,
};

/// Two decreases are at least this far apart (longer for slow vendors, see
/// [`Throttle::round_trip`]): the 429s of one overload are one signal.
const MIN_COOLDOWN: Duration = Duration::from_millis(250);

/// What a fleet limiter is configured with.
#[derive(Debug, Clone)]
pub struct FleetLimit {
    /// The vendor's limit for this bucket.
    pub limit: Limit,
    /// Requests in flight at once across the fleet, for the whole SaaS app.
    pub max_in_flight: Option<NonZeroU32>,
    /// Whether throttles slow the fleet down.
    pub adaptive: bool,
    /// Longest pause a vendor may impose.
    pub max_pause: Duration,
}

/// The fleet-wide limiter of one SaaS app's bucket.
pub struct FleetLimiter {
    saas: String,
    conn: RedisConnection,
    state_key: String,
    pause_key: String,
    /// Sorted set of recent sends (Redis time, µs): the window as the vendor counts it.
    log_key: String,
    leases_key: String,
    override_key: String,
    config: FleetLimit,
    front: Mutex<(f64, u32, Arc<LocalLimiter>)>,
    lease_ttl: Duration,
    horizon: Duration,
    lease_prefix: String,
    lease_seq: AtomicU64,
    last_factor: AtomicU64,
}

impl FleetLimiter {
    /// A limiter for `saas` (its `bucket`, or its default limit with
    /// `None`). `lease_ttl` bounds how long a crashed worker's in-flight
    /// slots outlive it; `horizon` is how far ahead slots are booked.
    pub fn new(
        saas: &str,
        bucket: Option<&str>,
        config: FleetLimit,
        conn: RedisConnection,
        names: &Names,
        lease_ttl: Duration,
        horizon: Duration,
    ) -> Self {
        let suffix = bucket.map(|b| format!(":{b}")).unwrap_or_default();
        let limit = config.limit;
        Self {
            saas: format!("{saas}{suffix}"),
            conn,
            state_key: format!("{}{suffix}", names.limiter_key(saas)),
            pause_key: format!("{}{suffix}", names.pause_key(saas)),
            log_key: format!("{}{suffix}:sent", names.limiter_key(saas)),
            // In-flight leases count for the whole SaaS app, whatever the bucket.
            leases_key: names.leases_key(saas),
            override_key: format!("{}{suffix}", names.limits_override_key(saas)),
            config,
            front: Mutex::new((
                limit.per_second,
                limit.burst.get(),
                Arc::new(LocalLimiter::new(limit)),
            )),
            lease_ttl,
            horizon,
            lease_prefix: ulid::Ulid::new().to_string(),
            lease_seq: AtomicU64::new(0),
            last_factor: AtomicU64::new(1000),
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
            let limit = Limit {
                per_second,
                burst: burst_nz,
                window: self.config.limit.window,
            };
            *front = (per_second, burst, Arc::new(LocalLimiter::new(limit)));
        }
    }

    /// Requests per counted window (0: a token bucket, no send log).
    fn counted(&self) -> u64 {
        self.config.limit.counted().unwrap_or(0)
    }

    fn note_factor(&self, milli: u64) {
        let before = self.last_factor.swap(milli, Ordering::Relaxed);
        // Log changes of at least 10 %, not every small recovery step.
        if before.abs_diff(milli) >= 100 || (milli == 1000 && before != 1000) {
            info!(saas = %self.saas, factor = milli as f64 / 1000.0, "Adaptive rate factor changed.");
        }
    }

    /// Records a throttle or an exhausted quota: pauses for `pause`, and
    /// with `adapt` lets the factor follow the vendor's real limit.
    async fn signal(
        &self,
        (pause, capped): (Duration, bool),
        adapt: bool,
        throttled: Option<Option<SendMark>>,
        cooldown: Duration,
    ) -> Result<u64, redis::RedisError> {
        let mut conn = self.conn.clone();
        let window = self.config.limit.window;
        let (factor, _until, _ceiling): (u64, u64, u64) = THROTTLED
            .key(&self.state_key)
            .key(&self.pause_key)
            .key(&self.log_key)
            .key(format!("{}:refused", self.log_key))
            .key(&self.override_key)
            .arg(pause.as_millis() as u64)
            .arg(if adapt && self.config.adaptive {
                "1"
            } else {
                "0"
            })
            .arg(MIN_FACTOR)
            .arg(cooldown.as_millis() as u64)
            .arg(BETA)
            .arg(CUBIC)
            .arg(MIN_ADMITTED)
            .arg(if throttled.is_some() { "1" } else { "0" })
            .arg(throttled.flatten().map_or(0, |m| m.0))
            .arg(window.as_micros() as u64)
            .arg(self.counted())
            .arg(probe_ms(window))
            .arg(self.config.limit.per_second)
            .arg(self.config.limit.burst.get())
            .arg(if capped { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await?;
        self.note_factor(factor);
        Ok(factor)
    }

    /// Caps a vendor-named pause at `rate.max_pause`.
    fn capped(&self, wait: Duration) -> (Duration, bool) {
        if wait > self.config.max_pause {
            (self.config.max_pause, true)
        } else {
            (wait, false)
        }
    }
}

#[async_trait]
impl Limiter for FleetLimiter {
    async fn acquire(&self, margin: Duration) -> Result<Admission, LimiterError> {
        self.front().until_ready().await;
        let lease_id = format!(
            "{}-{}",
            self.lease_prefix,
            self.lease_seq.fetch_add(1, Ordering::Relaxed)
        );
        let cap = self.config.max_in_flight.map_or(0, NonZeroU32::get);
        let limit = self.config.limit;
        let mut conn = self.conn.clone();
        let (granted, wait_us, reason, eff_milli, base_milli, burst, generation): (
            i64,
            i64,
            String,
            i64,
            i64,
            u32,
            u64,
        ) = ACQUIRE
            .key(&self.state_key)
            .key(&self.pause_key)
            .key(&self.leases_key)
            .key(&self.override_key)
            .arg(limit.per_second)
            .arg(limit.burst.get())
            .arg(cap)
            .arg(&lease_id)
            .arg(self.lease_ttl.as_millis() as u64)
            .arg(self.horizon.as_micros() as u64)
            .arg(limit.window.as_micros().max(1) as u64)
            .arg(margin.as_micros() as u64)
            .arg(CUBIC)
            .arg(self.counted())
            .arg(probe_ms(limit.window))
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
                generation,
            }
        } else {
            Admission::Wait {
                wait,
                reason: WaitReason::parse(&reason),
            }
        })
    }

    async fn gate(&self, generation: u64, margin: Duration) -> Result<Gate, LimiterError> {
        let limit = self.config.limit;
        let id = format!(
            "{}-s{}",
            self.lease_prefix,
            self.lease_seq.fetch_add(1, Ordering::Relaxed)
        );
        let mut conn = self.conn.clone();
        let (verdict, us): (i64, i64) = GATE
            .key(&self.state_key)
            .key(&self.pause_key)
            .key(&self.log_key)
            .arg(generation)
            .arg(limit.window.as_micros() as u64)
            .arg(self.counted())
            .arg(margin.as_micros() as u64)
            .arg(id)
            .arg(probe_ms(limit.window))
            .invoke_async(&mut conn)
            .await?;
        Ok(match verdict {
            1 => Gate::Go((us > 0).then_some(SendMark(us as u64))),
            2 => Gate::Wait(Duration::from_micros(us.max(1) as u64)),
            _ => Gate::Stale,
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

    async fn throttled(&self, throttle: Throttle) -> ThrottleOutcome {
        // A named wait is honoured (up to the cap); a bare 429 costs no
        // fleet-wide pause, only a decrease in proportion to how many
        // requests the vendor refused.
        let (pause, capped) = throttle
            .retry_after
            .map(|w| self.capped(w))
            .unwrap_or((Duration::ZERO, false));
        let cooldown = MIN_COOLDOWN.max(throttle.round_trip * 2);
        if capped {
            warn!(saas = %self.saas, pause_ms = pause.as_millis() as u64, "The vendor asked for a longer pause than rate.max_pause; pausing for the maximum.");
        }
        match self
            .signal((pause, capped), true, Some(throttle.sent), cooldown)
            .await
        {
            Ok(_) => ThrottleOutcome {
                paused_for: (!pause.is_zero()).then_some(pause),
                capped,
            },
            Err(e) => {
                warn!(saas = %self.saas, error = %e, "Could not record the vendor's throttle in Redis.");
                ThrottleOutcome {
                    paused_for: None,
                    capped,
                }
            }
        }
    }

    async fn quota(&self, hint: QuotaHint) {
        if hint.remaining != Some(0) {
            return;
        }
        // Paced to exactly the limit the vendor reports, the fleet empties
        // every window by design and its own pacing already waits for the
        // next slot; pausing to a reset given in whole seconds would only
        // throw quota away. A vendor reporting another limit (a quota shared
        // with other clients, a plan below the configuration) is obeyed.
        let configured = self.config.limit.requests().round() as u64;
        if hint.limit == Some(configured) {
            return;
        }
        // The vendor's window is spent: nobody in the fleet sends until it
        // resets. Not a sign of a lower limit (pacing to the full quota ends
        // every window near zero), so the factor stays.
        let until_reset = hint
            .reset_at
            .and_then(|at| at.duration_since(SystemTime::now()).ok())
            .unwrap_or(Duration::from_secs(1));
        let (pause, capped) = self.capped(until_reset.max(Duration::from_millis(50)));
        info!(saas = %self.saas, pause_ms = pause.as_millis() as u64, "Vendor quota exhausted; pausing the fleet until it resets.");
        if let Err(e) = self
            .signal((pause, capped), false, None, MIN_COOLDOWN)
            .await
        {
            warn!(saas = %self.saas, error = %e, "Could not record the vendor's quota in Redis.");
        }
    }

    fn limit(&self) -> Limit {
        self.config.limit
    }

    fn factor(&self) -> Option<f64> {
        // The last factor Redis reported (every acquire and throttle reads it).
        self.config
            .adaptive
            .then(|| self.last_factor.load(Ordering::Relaxed) as f64 / 1000.0)
    }
}
