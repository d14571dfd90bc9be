//! The pipeline every connector runs in, as tower layers.
//!
//! Outermost first:
//!
//! 1. job deadline — bounds a job's in-process work, token waits included,
//!    well below RabbitMQ's consumer timeout, so a stuck vendor never pins a
//!    delivery;
//! 2. retry — transient failures are retried with jittered exponential
//!    backoff; a throttle waits what the vendor asked (when that fits the
//!    deadline) and does not use up an attempt;
//! 3. rate limit — every attempt, retries included, waits for a token: the
//!    vendor counts each HTTP call;
//! 4. metrics — one count per attempt, by outcome;
//! 5. attempt timeout — bounds one HTTP call;
//! 6. the connector.
//!
//! Longer horizons (minutes) belong to the broker's delay queues, so each
//! retry horizon has one owner and retry loops never multiply.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use rand::Rng;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

use crate::connectors::{Connector, ConnectorError, VendorRequest, VendorResponse};
use crate::error::ErrorClass;
use crate::limiter::{Admission, Lease, Limiter, QuotaHint, quota_hint};
use crate::metrics::VendorMetrics;

/// A connector wrapped in the pipeline; cheap to clone per job.
pub type VendorService = BoxCloneSyncService<VendorRequest, VendorResponse, ConnectorError>;

/// Pipeline parameters.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// Bound on one job's in-process work.
    pub job_deadline: Duration,
    /// Bound on one HTTP call.
    pub attempt_timeout: Duration,
    /// Attempts for transient failures.
    pub attempts: u32,
    /// First backoff delay; doubles per attempt, with full jitter.
    pub backoff_base: Duration,
    /// Longest throttle wait taken in process; longer ones go to the broker.
    pub max_throttle_wait: Duration,
}

/// Wraps `connector` in the pipeline.
pub fn build(
    connector: Arc<dyn Connector>,
    limiter: Arc<dyn Limiter>,
    metrics: Arc<VendorMetrics>,
    settings: &PipelineSettings,
) -> VendorService {
    let attempt_timeout = settings.attempt_timeout;
    let service = ServiceBuilder::new()
        .map_err(|e: BoxError| from_box(e, "job"))
        .timeout(settings.job_deadline)
        .retry(RetryPolicy::new(settings))
        .layer_fn(|inner| RateLimited {
            inner,
            limiter: limiter.clone(),
            metrics: metrics.clone(),
            max_hold: settings.max_throttle_wait,
        })
        .layer_fn(|inner| Measured {
            inner,
            metrics: metrics.clone(),
        })
        .map_err(|e: BoxError| from_box(e, "vendor request"))
        .timeout(attempt_timeout)
        .service(ConnectorService(connector));
    BoxCloneSyncService::new(service)
}

fn from_box(e: BoxError, what: &'static str) -> ConnectorError {
    if e.is::<tower::timeout::error::Elapsed>() {
        return ConnectorError::Timeout(what);
    }
    match e.downcast::<ConnectorError>() {
        Ok(e) => *e,
        Err(other) => ConnectorError::Transport(other.to_string()),
    }
}

/// Adapts a [`Connector`] to a tower service.
#[derive(Clone)]
struct ConnectorService(Arc<dyn Connector>);

impl Service<VendorRequest> for ConnectorService {
    type Response = VendorResponse;
    type Error = ConnectorError;
    type Future = BoxFuture<'static, Result<VendorResponse, ConnectorError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectorError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: VendorRequest) -> Self::Future {
        let connector = self.0.clone();
        Box::pin(async move { crate::connectors::call(connector.as_ref(), &request).await })
    }
}

tokio::task_local! {
    /// The vendor's quota headers seen during one attempt, if any.
    static QUOTA: std::cell::Cell<Option<QuotaHint>>;
}

/// Called by connectors' response helper: remembers the vendor's quota
/// headers for the rate-limit layer (a no-op outside the pipeline).
pub fn observe_quota(headers: &reqwest::header::HeaderMap) {
    if let Some(hint) = quota_hint(headers) {
        let _ = QUOTA.try_with(|cell| cell.set(Some(hint)));
    }
}

/// Asks the limiter before each attempt and tells it what the vendor said
/// after. The wait happens in the call future (not `poll_ready`) because the
/// service is cloned per job and the limiter is shared by all clones.
#[derive(Clone)]
struct RateLimited<S> {
    inner: S,
    limiter: Arc<dyn Limiter>,
    metrics: Arc<VendorMetrics>,
    max_hold: Duration,
}

impl<S> Service<VendorRequest> for RateLimited<S>
where
    S: Service<VendorRequest, Response = VendorResponse, Error = ConnectorError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = VendorResponse;
    type Error = ConnectorError;
    type Future = BoxFuture<'static, Result<VendorResponse, ConnectorError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectorError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, user: VendorRequest) -> Self::Future {
        let inner = self.inner.clone();
        let limiter = self.limiter.clone();
        let metrics = self.metrics.clone();
        let max_hold = self.max_hold;
        Box::pin(async move {
            let started = tokio::time::Instant::now();
            let mut held = Duration::ZERO;
            let lease = loop {
                match limiter.acquire().await {
                    Err(e) => return Err(ConnectorError::LimiterUnavailable(e.to_string())),
                    Ok(Admission::Granted { after, lease }) => {
                        if !after.is_zero() {
                            tokio::time::sleep(after).await;
                            // The vendor may have paused the fleet while this
                            // slot was booked. The booking is then stale: wait
                            // out the pause and ask again, or every booked
                            // request would fire together when it ends.
                            if let Some(pause) = limiter.pause_remaining().await {
                                if let Some(lease) = lease {
                                    limiter.release(lease).await;
                                }
                                held += pause;
                                tokio::time::sleep(pause).await;
                                continue;
                            }
                        }
                        break lease;
                    }
                    Ok(Admission::Wait { wait, reason }) => {
                        // Past the hold budget the job gives its delivery
                        // back (a defer queue) instead of pinning it.
                        if held + wait > max_hold {
                            metrics.record_wait(started.elapsed());
                            return Err(ConnectorError::QuotaWait {
                                wait,
                                reason: reason.as_str(),
                            });
                        }
                        held += wait;
                        tokio::time::sleep(wait).await;
                    }
                }
            };
            metrics.record_wait(started.elapsed());
            let guard = LeaseGuard(lease.map(|l| (limiter.clone(), l)));
            let (result, hint) = QUOTA
                .scope(std::cell::Cell::new(None), async move {
                    let result = inner.oneshot(user).await;
                    (result, QUOTA.with(|c| c.get()))
                })
                .await;
            guard.release().await;
            if let Some(hint) = hint {
                limiter.quota(hint).await;
            }
            if let Err(ConnectorError::Throttled { retry_after, .. }) = &result {
                limiter.throttled(*retry_after).await;
            }
            result
        })
    }
}

/// Returns an in-flight slot after the call, even when the call future is
/// dropped (deadline): then a task returns it.
struct LeaseGuard(Option<(Arc<dyn Limiter>, Lease)>);

impl LeaseGuard {
    async fn release(mut self) {
        if let Some((limiter, lease)) = self.0.take() {
            limiter.release(lease).await;
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if let Some((limiter, lease)) = self.0.take() {
            tokio::spawn(async move { limiter.release(lease).await });
        }
    }
}

/// Counts attempts by outcome and measures their latency.
#[derive(Clone)]
struct Measured<S> {
    inner: S,
    metrics: Arc<VendorMetrics>,
}

impl<S> Service<VendorRequest> for Measured<S>
where
    S: Service<VendorRequest, Response = VendorResponse, Error = ConnectorError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = VendorResponse;
    type Error = ConnectorError;
    type Future = BoxFuture<'static, Result<VendorResponse, ConnectorError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectorError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, user: VendorRequest) -> Self::Future {
        let inner = self.inner.clone();
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let started = tokio::time::Instant::now();
            let result = inner.oneshot(user).await;
            metrics.record_attempt(&result, started.elapsed());
            result
        })
    }
}

/// Decides, per failed attempt, whether and when to try again.
#[derive(Clone)]
struct RetryPolicy {
    attempts_left: u32,
    attempt: u32,
    throttle_waits_left: u32,
    backoff_base: Duration,
    max_throttle_wait: Duration,
}

impl RetryPolicy {
    fn new(settings: &PipelineSettings) -> Self {
        Self {
            attempts_left: settings.attempts.saturating_sub(1),
            attempt: 0,
            throttle_waits_left: 3,
            backoff_base: settings.backoff_base,
            max_throttle_wait: settings.max_throttle_wait,
        }
    }
}

/// Full jitter (AWS "exponential backoff and jitter"): spreads retries of
/// many workers so they do not hit a recovering vendor together.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let ceiling = base.saturating_mul(1u32 << attempt.min(10));
    let millis = ceiling.as_millis().max(1) as u64;
    Duration::from_millis(rand::rng().random_range(0..=millis))
}

impl tower::retry::Policy<VendorRequest, VendorResponse, ConnectorError> for RetryPolicy {
    type Future = Pin<Box<dyn Future<Output = ()> + Send>>;

    fn retry(
        &mut self,
        _: &mut VendorRequest,
        result: &mut Result<VendorResponse, ConnectorError>,
    ) -> Option<Self::Future> {
        let error = result.as_ref().err()?;
        let wait = match (error, error.class()) {
            // The rate-limit layer already held as long as a job may: the
            // job goes back to the broker to wait there.
            (ConnectorError::QuotaWait { .. }, _) => return None,
            // Waiting for quota is not a failure: it uses up no attempt. A
            // few waits happen in process, longer ones in a defer queue.
            (_, ErrorClass::Throttled(wait)) => {
                let wait = wait.unwrap_or(Duration::from_secs(1));
                if wait > self.max_throttle_wait || self.throttle_waits_left == 0 {
                    return None;
                }
                self.throttle_waits_left -= 1;
                wait
            }
            (_, ErrorClass::Transient) => {
                if self.attempts_left == 0 {
                    return None;
                }
                self.attempts_left -= 1;
                self.attempt += 1;
                backoff(self.backoff_base, self.attempt)
            }
            (_, ErrorClass::Auth | ErrorClass::Permanent | ErrorClass::Unavailable) => return None,
        };
        Some(Box::pin(tokio::time::sleep(wait)))
    }

    fn clone_request(&mut self, request: &VendorRequest) -> Option<VendorRequest> {
        Some(request.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use async_trait::async_trait;
    use rolecall_common::messages::UserRef;

    use crate::connectors::Lookup;
    use crate::limiter::LocalLimiter;
    use rolecall_common::config::RateSettings;

    struct Scripted {
        replies: Mutex<Vec<Result<Lookup, ConnectorError>>>,
        calls: AtomicU32,
        delay: Duration,
    }

    #[async_trait]
    impl Connector for Scripted {
        async fn lookup(&self, _: &UserRef) -> Result<Lookup, ConnectorError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            let mut replies = self.replies.lock().unwrap();
            if replies.len() > 1 {
                replies.remove(0)
            } else {
                replies[0].clone()
            }
        }
    }

    fn user() -> VendorRequest {
        VendorRequest::lookup(UserRef {
            id: "u".into(),
            email: "u@example.com".into(),
            external_id: None,
        })
    }

    fn not_found() -> VendorResponse {
        VendorResponse::Lookup(Lookup::NotFound)
    }

    fn settings() -> PipelineSettings {
        PipelineSettings {
            job_deadline: Duration::from_secs(30),
            attempt_timeout: Duration::from_secs(1),
            attempts: 3,
            backoff_base: Duration::from_millis(100),
            max_throttle_wait: Duration::from_secs(5),
        }
    }

    fn run(
        replies: Vec<Result<Lookup, ConnectorError>>,
        delay: Duration,
        s: PipelineSettings,
    ) -> (Arc<Scripted>, VendorService, Arc<VendorMetrics>) {
        let connector = Arc::new(Scripted {
            replies: Mutex::new(replies),
            calls: AtomicU32::new(0),
            delay,
        });
        let limiter = Arc::new(LocalLimiter::new(RateSettings {
            per_second: 1000.0,
            burst: std::num::NonZeroU32::new(100).unwrap(),
            max_in_flight: None,
            adaptive: true,
        }));
        let metrics = Arc::new(VendorMetrics::default());
        let svc = build(connector.clone(), limiter, metrics.clone(), &s);
        (connector, svc, metrics)
    }

    fn upstream() -> Result<Lookup, ConnectorError> {
        Err(ConnectorError::Upstream {
            status: 500,
            detail: String::new(),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_until_success() {
        let (c, svc, metrics) = run(
            vec![upstream(), upstream(), Ok(Lookup::NotFound)],
            Duration::ZERO,
            settings(),
        );
        assert_eq!(svc.oneshot(user()).await.unwrap(), not_found());
        assert_eq!(c.calls.load(Ordering::SeqCst), 3);
        assert_eq!(metrics.snapshot().attempts, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_are_bounded() {
        let (c, svc, _) = run(vec![upstream()], Duration::ZERO, settings());
        let err = svc.oneshot(user()).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::Transient);
        assert_eq!(c.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_failures_are_not_retried() {
        let (c, svc, _) = run(
            vec![Err(ConnectorError::Unauthorized {
                status: 401,
                detail: String::new(),
            })],
            Duration::ZERO,
            settings(),
        );
        assert_eq!(
            svc.oneshot(user()).await.unwrap_err().class(),
            ErrorClass::Auth
        );
        assert_eq!(c.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn short_throttles_wait_without_using_attempts() {
        let throttled = || {
            Err(ConnectorError::Throttled {
                status: 429,
                retry_after: Some(Duration::from_secs(2)),
            })
        };
        let (c, svc, _) = run(
            vec![throttled(), throttled(), throttled(), Ok(Lookup::NotFound)],
            Duration::ZERO,
            settings(),
        );
        let started = tokio::time::Instant::now();
        assert_eq!(svc.oneshot(user()).await.unwrap(), not_found());
        assert_eq!(c.calls.load(Ordering::SeqCst), 4);
        assert!(started.elapsed() >= Duration::from_secs(6));

        // A fourth throttle in a row sends the job back to the broker to wait there.
        let (c, svc, _) = run(vec![throttled()], Duration::ZERO, settings());
        let err = svc.oneshot(user()).await.unwrap_err();
        assert!(matches!(err.class(), ErrorClass::Throttled(_)));
        assert_eq!(c.calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn long_throttles_go_back_to_the_broker() {
        let (c, svc, _) = run(
            vec![Err(ConnectorError::Throttled {
                status: 429,
                retry_after: Some(Duration::from_secs(60)),
            })],
            Duration::ZERO,
            settings(),
        );
        let err = svc.oneshot(user()).await.unwrap_err();
        assert_eq!(
            err.class(),
            ErrorClass::Throttled(Some(Duration::from_secs(60)))
        );
        assert_eq!(c.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_attempts_time_out_and_the_job_deadline_holds() {
        let mut s = settings();
        s.job_deadline = Duration::from_millis(2500);
        let (_, svc, _) = run(vec![Ok(Lookup::NotFound)], Duration::from_secs(10), s);
        let started = tokio::time::Instant::now();
        let err = svc.oneshot(user()).await.unwrap_err();
        assert!(matches!(err, ConnectorError::Timeout(_)), "{err:?}");
        assert!(started.elapsed() <= Duration::from_millis(2600));
    }

    #[test]
    fn backoff_grows_and_stays_within_its_ceiling() {
        for attempt in 0..5 {
            let d = backoff(Duration::from_millis(100), attempt);
            assert!(d <= Duration::from_millis(100 << attempt));
        }
    }
}
