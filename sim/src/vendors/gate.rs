//! The door every vendor request passes: the network on the way in, the
//! bucket's limiter, injected faults, auth, the handler, the network on the
//! way back.
//!
//! Kept apart from the vendors so throttling, faults, latency and the
//! statistics behave the same whichever payloads are served behind them.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::Rng;

use super::unix_secs_ceil;
use crate::buckets::{BucketError, BucketSpec, DEFAULT_BUCKET, PathPattern};
use crate::clock::WallClock;
use crate::faults::{Fault, FaultQueue};
use crate::limit::{Limit, Limiter};
use crate::stats::{Arrival, Epoch, RequestRecord, Stats, StatsSnapshot};
use crate::throttle::retry_after_secs;

/// How the gate is set up; see `SimConfig` for each field's meaning.
pub(crate) struct GateSettings {
    pub(crate) limit: Option<Limit>,
    pub(crate) buckets: Vec<BucketSpec>,
    pub(crate) latency: Duration,
    pub(crate) jitter: Duration,
    pub(crate) retry_after: bool,
}

pub(crate) struct Gate {
    clock: WallClock,
    /// The default bucket first, then the named ones in configured order.
    buckets: Vec<Bucket>,
    faults: FaultQueue,
    stats: Stats,
    network: Network,
    retry_after: bool,
}

struct Bucket {
    name: String,
    /// `None` for the default bucket, which takes what no pattern matches.
    pattern: Option<PathPattern>,
    limiter: Limiter,
}

/// The network between client and vendor: each way takes half the latency
/// plus a uniform draw of up to half the jitter, independently. A request is
/// counted where the vendor counts it, after the way in, so jitter can bunch
/// requests sent evenly into one window, as it does on a real network.
#[derive(Clone, Copy, Debug)]
struct Network {
    latency: Duration,
    jitter: Duration,
}

impl Network {
    fn one_way(&self) -> Duration {
        let jitter = self.jitter / 2;
        let drawn = if jitter.is_zero() {
            Duration::ZERO
        } else {
            let nanos = u64::try_from(jitter.as_nanos()).unwrap_or(u64::MAX);
            Duration::from_nanos(rand::rng().random_range(0..=nanos))
        };
        self.latency / 2 + drawn
    }

    async fn travel(&self) {
        let delay = self.one_way();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
}

/// The gate's verdict, the quota left, and the ticket to log the answer with.
pub(crate) struct Admission {
    pub(crate) verdict: Verdict,
    /// `None` when the bucket is unlimited.
    pub(crate) quota: Option<Quota>,
    pub(crate) ticket: Ticket,
}

/// The request's bucket as a quota-reporting vendor shows it: `limit` is
/// the bucket's capacity (a token bucket's burst, a window's requests),
/// `remaining` the whole requests left after this one, `reset_unix_s` the
/// epoch second by which the bucket is back to `limit` if no more requests
/// come (a window vendor's "reset"; never earlier than a request would be
/// admitted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Quota {
    pub(crate) limit: u32,
    pub(crate) remaining: u32,
    pub(crate) reset_unix_s: u64,
}

impl Quota {
    /// What to advertise when the sim is unlimited: the vendor's nominal
    /// quota, untouched, resetting after one `window`.
    pub(crate) fn nominal(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            remaining: limit,
            reset_unix_s: unix_secs_ceil(SystemTime::now() + window),
        }
    }
}

pub(crate) enum Verdict {
    Admitted,
    /// `None` when the sim sends no `Retry-After` with its 429s.
    Throttled {
        retry_after_secs: Option<u64>,
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
pub(crate) struct Ticket {
    gate: Arc<Gate>,
    arrived: Instant,
    epoch: Epoch,
    status: u16,
}

impl Ticket {
    pub(crate) fn answered(mut self, status: u16) {
        self.status = status;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.gate
            .stats
            .record_response(self.epoch, self.arrived, self.status);
    }
}

impl Gate {
    pub(crate) fn new(settings: GateSettings) -> Result<Self, BucketError> {
        crate::buckets::validate_all(&settings.buckets)?;
        let now = Instant::now();
        let clock = WallClock::now();
        let default = Bucket {
            name: DEFAULT_BUCKET.to_owned(),
            pattern: None,
            limiter: Limiter::new(settings.limit, now),
        };
        let named = settings.buckets.iter().map(|spec| Bucket {
            name: spec.name.clone(),
            pattern: Some(PathPattern::new(&spec.pattern)),
            limiter: Limiter::new(spec.limit, now),
        });
        let names = settings
            .buckets
            .iter()
            .map(|spec| (spec.name.clone(), Some(spec.pattern.clone())))
            .collect();
        Ok(Self {
            clock,
            buckets: std::iter::once(default).chain(named).collect(),
            faults: FaultQueue::default(),
            stats: Stats::new(clock, names),
            network: Network {
                latency: settings.latency,
                jitter: settings.jitter,
            },
            retry_after: settings.retry_after,
        })
    }

    /// The first named bucket whose pattern matches, else the default.
    fn bucket_for(&self, path: &str) -> usize {
        self.buckets
            .iter()
            .position(|b| b.pattern.as_ref().is_some_and(|p| p.matches(path)))
            .unwrap_or(0)
    }

    fn bucket_named(&self, name: &str) -> Result<&Bucket, BucketError> {
        self.buckets
            .iter()
            .find(|b| b.name == name)
            .ok_or_else(|| BucketError::Unknown(name.to_owned()))
    }

    /// Decides, and counts the request where the vendor counts it.
    fn admit(self: &Arc<Self>, path: &str) -> Admission {
        let now = Instant::now();
        let index = self.bucket_for(path);
        let bucket = &self.buckets[index];
        let decision = bucket.limiter.take(now, self.clock.unix(now));
        let quota = decision.level.map(|level| Quota {
            limit: level.limit,
            remaining: level.remaining,
            reset_unix_s: unix_secs_ceil(
                std::time::UNIX_EPOCH + self.clock.unix(now) + level.until_reset,
            ),
        });
        let verdict = match decision.taken {
            Ok(()) => match self.faults.take() {
                None => Verdict::Admitted,
                Some(fault) => Verdict::Faulted {
                    status: fault.status,
                    retry_after_secs: fault.retry_after_secs(),
                },
            },
            Err(wait) => {
                tracing::debug!(?wait, bucket = %bucket.name, "throttled");
                Verdict::Throttled {
                    retry_after_secs: self.retry_after.then(|| retry_after_secs(wait)),
                }
            }
        };
        // Only a 429 tells the client it went over the limit.
        let refused = matches!(
            verdict,
            Verdict::Throttled { .. } | Verdict::Faulted { status: 429, .. }
        );
        let epoch = self.stats.record_request(Arrival {
            at: now,
            bucket: index,
            measure: decision.measure,
            accepted: !refused,
        });
        Admission {
            verdict,
            quota,
            ticket: Ticket {
                gate: self.clone(),
                arrived: now,
                epoch,
                status: CLIENT_CLOSED_REQUEST,
            },
        }
    }

    /// The way in, then admission. Once sent, a request reaches the vendor
    /// and is counted even if its client gives up on the way (it is logged
    /// as 499), so the way in runs on its own task. `None` only when that
    /// task could not finish (the runtime is shutting down).
    async fn arrive(self: &Arc<Self>, path: String) -> Option<Admission> {
        self.stats.record_received();
        let gate = self.clone();
        let travelled = async move {
            gate.network.travel().await;
            gate.admit(&path)
        };
        if self.network.latency.is_zero() && self.network.jitter.is_zero() {
            return Some(travelled.await);
        }
        match tokio::spawn(travelled).await {
            Ok(admission) => Some(admission),
            Err(error) => match error.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(_) => None,
            },
        }
    }

    pub(crate) fn record_unauthorized(&self) {
        self.stats.record_unauthorized();
    }

    pub(crate) fn stats(&self) -> StatsSnapshot {
        let mut snapshot = self.stats.snapshot();
        for bucket in &self.buckets {
            if let Some(stats) = snapshot.buckets.get_mut(&bucket.name) {
                stats.describe(bucket.limiter.limit());
            }
        }
        snapshot
    }

    pub(crate) fn requests(&self) -> Vec<RequestRecord> {
        self.stats.requests()
    }

    /// Leaves the limits, what the limiters counted and pending faults
    /// alone: a reset starts a new measurement, not a new scenario.
    pub(crate) fn reset_stats(&self) {
        tracing::info!("stats reset");
        self.stats.reset();
    }

    /// The limit of bucket `name` ([`DEFAULT_BUCKET`] for the default).
    pub(crate) fn limit(&self, name: &str) -> Result<Option<Limit>, BucketError> {
        Ok(self.bucket_named(name)?.limiter.limit())
    }

    pub(crate) fn set_limit(&self, name: &str, limit: Option<Limit>) -> Result<(), BucketError> {
        if let Some(limit) = &limit {
            limit.validate().map_err(|source| BucketError::Limit {
                name: name.to_owned(),
                source,
            })?;
        }
        let bucket = self.bucket_named(name)?;
        tracing::info!(bucket = name, ?limit, "rate limit changed");
        bucket.limiter.set_limit(limit, Instant::now());
        Ok(())
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

/// What a vendor decides at the door; the order (network, throttle, faults,
/// auth, handler, network) is the same for every vendor and lives in
/// [`guard`].
pub(crate) trait Service: Send + Sync + 'static {
    fn gate(&self) -> &Arc<Gate>;

    /// The vendor's 429 body; [`guard`] adds `Retry-After` when the sim
    /// sends one.
    fn throttled(&self) -> Response {
        self.injected(StatusCode::TOO_MANY_REQUESTS)
    }

    /// An injected status in the vendor's error shape; [`guard`] adds the
    /// fault's `Retry-After`.
    fn injected(&self, status: StatusCode) -> Response;

    /// Checks the credentials a request carries in its headers: `None` lets
    /// it through, `Some` is the vendor's refusal. Vendors whose credentials
    /// travel in the body (Mosyle) check those in their handlers.
    fn refuse(&self, request: &Request) -> Option<Response>;

    /// Headers every response carries, throttled and refused ones included
    /// (Okta's and GitHub's rate-limit headers), from the request's bucket.
    fn decorate(&self, _headers: &mut HeaderMap, _quota: Option<Quota>) {}
}

/// Throttle before auth, as the limit is counted per request; then injected
/// faults, which stand in for the vendor failing to serve; then auth; the
/// network delays both ways around it all.
pub(crate) async fn guard<S: Service>(
    State(service): State<Arc<S>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.extensions().get::<FullPath>().map_or_else(
        || request.uri().path().to_owned(),
        |FullPath(path)| path.clone(),
    );
    let gate = service.gate();
    let Some(Admission {
        verdict,
        quota,
        ticket,
    }) = gate.arrive(path).await
    else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let mut response = match verdict {
        Verdict::Throttled { retry_after_secs } => {
            let mut response = service.throttled();
            if let Some(secs) = retry_after_secs {
                set_retry_after(&mut response, secs);
            }
            response
        }
        Verdict::Faulted {
            status,
            retry_after_secs,
        } => {
            // Faults are validated when injected; a 500 is the honest fallback anyway.
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = if status == StatusCode::OK {
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    r#"{"data": [{"id": "truncated"#,
                )
                    .into_response()
            } else {
                service.injected(status)
            };
            if let Some(secs) = retry_after_secs {
                set_retry_after(&mut response, secs);
            }
            response
        }
        Verdict::Admitted => match service.refuse(&request) {
            None => next.run(request).await,
            Some(refused) => {
                gate.record_unauthorized();
                refused
            }
        },
    };
    service.decorate(response.headers_mut(), quota);
    gate.network.travel().await;
    ticket.answered(response.status().as_u16());
    response
}

/// The request's path as the client sent it: nested routers see only their
/// suffix (`/users/…` under `/api/v1`), and bucket patterns name it whole.
#[derive(Clone)]
struct FullPath(String);

/// Layered over the vendor's whole router, outside the nesting.
pub(crate) async fn remember_path(mut request: Request, next: Next) -> Response {
    let path = FullPath(request.uri().path().to_owned());
    request.extensions_mut().insert(path);
    next.run(request).await
}

fn set_retry_after(response: &mut Response, secs: u64) {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_way_is_half_the_latency_plus_half_the_jitter_at_most() {
        let network = Network {
            latency: Duration::from_millis(100),
            jitter: Duration::from_millis(40),
        };
        let draws: Vec<Duration> = (0..200).map(|_| network.one_way()).collect();
        let (min, max) = (Duration::from_millis(50), Duration::from_millis(70));
        assert!(draws.iter().all(|d| (min..=max).contains(d)), "{draws:?}");
        // Uniform: 200 draws do not all land in one half.
        assert!(draws.iter().any(|d| *d < Duration::from_millis(60)));
        assert!(draws.iter().any(|d| *d > Duration::from_millis(60)));
        let still = Network {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
        };
        assert_eq!(still.one_way(), Duration::ZERO);
    }

    fn gate(buckets: Vec<BucketSpec>) -> Arc<Gate> {
        Arc::new(
            Gate::new(GateSettings {
                limit: None,
                buckets,
                latency: Duration::ZERO,
                jitter: Duration::ZERO,
                retry_after: true,
            })
            .unwrap_or_else(|e| panic!("{e}")),
        )
    }

    #[test]
    fn requests_go_to_the_first_matching_bucket() {
        let gate = gate(vec![
            BucketSpec::new("roles", "/api/v1/users/*/roles", None),
            BucketSpec::new("user", "/api/v1/users/*", None),
            BucketSpec::new("any-user", "/api/v1/users/*", None),
        ]);
        assert_eq!(gate.bucket_for("/api/v1/users/00u1/roles"), 1);
        assert_eq!(gate.bucket_for("/api/v1/users/00u1"), 2);
        assert_eq!(gate.bucket_for("/api/v1/users"), 0);
        let stats = gate.stats();
        let names: Vec<&String> = stats.buckets.keys().collect();
        assert_eq!(names, ["any-user", "default", "roles", "user"]);
        assert_eq!(
            stats.buckets["roles"].pattern.as_deref(),
            Some("/api/v1/users/*/roles")
        );
    }

    #[test]
    fn limits_change_per_bucket_by_name() {
        let gate = gate(vec![BucketSpec::new("roles", "/r/*", None)]);
        let limit = Limit::sliding_window(1, Duration::from_secs(1));
        assert_eq!(gate.set_limit("roles", Some(limit)), Ok(()));
        assert_eq!(gate.limit("roles"), Ok(Some(limit)));
        assert_eq!(gate.limit(DEFAULT_BUCKET), Ok(None));
        assert_eq!(
            gate.set_limit("nope", None),
            Err(BucketError::Unknown("nope".into()))
        );
        let zero_window = Limit::sliding_window(1, Duration::ZERO);
        assert!(matches!(
            gate.set_limit("roles", Some(zero_window)),
            Err(BucketError::Limit { .. })
        ));
        assert!(matches!(gate.admit("/r/1").verdict, Verdict::Admitted));
        assert!(matches!(
            gate.admit("/r/2").verdict,
            Verdict::Throttled {
                retry_after_secs: Some(1)
            }
        ));
        assert!(matches!(gate.admit("/other").verdict, Verdict::Admitted));
        let stats = gate.stats();
        assert_eq!(stats.buckets["roles"].throttled, 1);
        assert_eq!(stats.buckets["roles"].limit, Some(limit));
        assert_eq!(stats.buckets["default"].accepted, 1);
    }
}
