//! The pipeline every connector call runs in, as tower layers.
//!
//! Outermost first:
//!
//! 1. job deadline — bounds a job's in-process work, quota waits included,
//!    well below RabbitMQ's consumer timeout, so a stuck vendor never pins a
//!    delivery;
//! 2. retry — transient failures are retried with jittered exponential
//!    backoff;
//! 3. metrics — one count per call, by outcome;
//! 4. the connector, whose every HTTP request goes through the vendor
//!    client (`crate::vendor`): the fleet's limit, the attempt timeout and
//!    the vendor's throttles are handled there, per request, because a
//!    vendor counts requests, not lookups.
//!
//! Throttles are not retried here: the vendor client already re-sent the
//! request in later slots for as long as a job may hold its delivery, and
//! longer waits belong to the broker's defer queues. Each retry horizon has
//! one owner, so retry loops never multiply.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

use crate::connectors::{Connector, ConnectorError, VendorRequest, VendorResponse};
use crate::error::ErrorClass;
use crate::metrics::VendorMetrics;

/// A connector wrapped in the pipeline; cheap to clone per job.
pub type VendorService = BoxCloneSyncService<VendorRequest, VendorResponse, ConnectorError>;

/// Pipeline parameters.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// Bound on one job's in-process work.
    pub job_deadline: Duration,
    /// Attempts for transient failures.
    pub attempts: u32,
    /// First backoff delay; doubles per attempt, with full jitter.
    pub backoff_base: Duration,
}

/// Wraps `connector` in the pipeline.
pub fn build(
    connector: Arc<dyn Connector>,
    metrics: Arc<VendorMetrics>,
    settings: &PipelineSettings,
) -> VendorService {
    let service = ServiceBuilder::new()
        .map_err(|e: BoxError| from_box(e, "job"))
        .timeout(settings.job_deadline)
        .retry(RetryPolicy::new(settings))
        .layer_fn(|inner| Measured {
            inner,
            metrics: metrics.clone(),
        })
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
    backoff_base: Duration,
}

impl RetryPolicy {
    fn new(settings: &PipelineSettings) -> Self {
        Self {
            attempts_left: settings.attempts.saturating_sub(1),
            attempt: 0,
            backoff_base: settings.backoff_base,
        }
    }
}

pub use rolecall_common::backoff::backoff;

impl tower::retry::Policy<VendorRequest, VendorResponse, ConnectorError> for RetryPolicy {
    type Future = Pin<Box<dyn Future<Output = ()> + Send>>;

    fn retry(
        &mut self,
        _: &mut VendorRequest,
        result: &mut Result<VendorResponse, ConnectorError>,
    ) -> Option<Self::Future> {
        let error = result.as_ref().err()?;
        let wait = match error.class() {
            ErrorClass::Transient => {
                if self.attempts_left == 0 {
                    return None;
                }
                self.attempts_left -= 1;
                self.attempt += 1;
                backoff(self.backoff_base, self.attempt)
            }
            // Throttles were waited out by the vendor client as long as a
            // job may; the rest cannot get better by trying again now.
            ErrorClass::Throttled(_)
            | ErrorClass::Auth
            | ErrorClass::Permanent
            | ErrorClass::Unavailable => return None,
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
            attempts: 3,
            backoff_base: Duration::from_millis(100),
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
        let metrics = Arc::new(VendorMetrics::default());
        let svc = build(connector.clone(), metrics.clone(), &s);
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
    async fn throttles_go_back_to_the_broker_without_retrying_here() {
        let (c, svc, _) = run(
            vec![Err(ConnectorError::Throttled {
                status: 429,
                retry_after: Some(Duration::from_secs(2)),
            })],
            Duration::ZERO,
            settings(),
        );
        let err = svc.oneshot(user()).await.unwrap_err();
        assert_eq!(
            err.class(),
            ErrorClass::Throttled(Some(Duration::from_secs(2)))
        );
        assert_eq!(c.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_job_deadline_bounds_a_slow_call() {
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
