//! The vendor boundary: the one HTTP path every connector request takes.
//!
//! A vendor counts HTTP requests, not lookups: an Okta lookup is two calls,
//! a Lever lookup may follow pages, a Mosyle listing is many. So the fleet's
//! limit is applied here, per request, and nowhere else. [`VendorClient::send`]
//!
//! 1. picks the bucket the request counts against (`rate.buckets`, by path);
//! 2. takes one fleet slot (and in-flight lease), waiting as long as a job
//!    may hold its delivery, and never sending when the limiter cannot
//!    answer;
//! 3. sends with the attempt timeout and reads the body;
//! 4. reads the vendor's quota headers once ([`quota`]) and tells the
//!    limiter; answers a throttle by letting the limiter adapt and, while
//!    the hold budget lasts, sending the same request again in a later slot;
//! 5. classifies the response once: success (or a status the connector
//!    accepts as an answer, such as a 404 meaning "no such user") is a
//!    [`VendorReply`]; anything else a [`ConnectorError`] carrying its class.
//!
//! Connectors build requests and read replies; they never see the limiter,
//! so work they can answer without the vendor (a cache hit) costs no slot.

pub mod jitter;
pub mod quota;

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, StatusCode};
use rolecall_common::config::{Limit, RateSettings, SaasSettings};
use rolecall_common::telemetry::SPAN_TARGET;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::time::Instant;
use tracing::{Instrument, debug, info_span};
use url::Url;

use crate::error::ConnectorError;
use crate::limiter::{Admission, Gate, Lease, Limiter, Limiters, LocalLimiter, SendMark, Throttle};
use crate::metrics::VendorMetrics;
use jitter::JitterMargin;
use quota::Quota;

/// Throttled requests re-sent in later slots before the job gives up its
/// delivery (and waits in a defer queue).
const THROTTLE_RESENDS: u32 = 3;

/// The HTTP client every connector uses. Redirects are followed only within
/// one origin: a credential header must never reach another host.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("rolecall/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(32)
        .redirect(rolecall_common::http::same_origin_redirects())
        .build()
        .expect("a client with these settings always builds")
}

/// The vendor's error code in `body` at `fields` (pointers or top-level
/// field names, comma-separated; the first present wins).
fn error_code_in(body: &Value, fields: &str) -> Option<String> {
    let found = fields.split(',').map(str::trim).find_map(|f| {
        if f.starts_with('/') {
            body.pointer(f)
        } else {
            body.get(f)
        }
    })?;
    Some(match found {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// Something for the job handler to tell admins about, noticed while sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The vendor asked the fleet to pause longer than `rate.max_pause`.
    PauseCapped {
        /// The pause the vendor asked for.
        asked: Duration,
        /// The pause applied.
        applied: Duration,
    },
}

/// How long requests wait and how long one may take.
#[derive(Debug, Clone, Copy)]
pub struct ClientTimings {
    /// Bound on one HTTP request, body included.
    pub attempt_timeout: Duration,
    /// Longest a job waits for quota before it gives its delivery back.
    pub max_hold: Duration,
}

impl Default for ClientTimings {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_secs(10),
            max_hold: Duration::from_secs(5),
        }
    }
}

struct Shared {
    saas: String,
    http: reqwest::Client,
    limiters: RwLock<Limiters>,
    margin: JitterMargin,
    metrics: Arc<VendorMetrics>,
    attempt_timeout: Duration,
    notices: Mutex<Vec<Notice>>,
}

/// One SaaS app's way to its vendor. Cheap to clone.
#[derive(Clone)]
pub struct VendorClient {
    shared: Arc<Shared>,
    error_code: Option<Arc<str>>,
    max_hold: Duration,
}

/// A vendor's answer, body read.
#[derive(Debug, Clone)]
pub struct VendorReply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl VendorReply {
    /// The body as JSON (`null` when empty).
    pub fn json(&self) -> Result<Value, ConnectorError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body).map_err(|e| ConnectorError::undecodable(&e))
    }

    /// The body as a typed document.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConnectorError> {
        serde_json::from_slice(&self.body).map_err(|e| ConnectorError::undecodable(&e))
    }
}

impl VendorClient {
    /// A client for `saas`, paced by process-local limiters until
    /// [`attach`](Self::attach) hands it the fleet's.
    pub fn new(
        saas: &SaasSettings,
        http: reqwest::Client,
        metrics: Arc<VendorMetrics>,
        timings: ClientTimings,
    ) -> Self {
        Self::with_rate(&saas.name, &saas.rate, http, metrics, timings)
    }

    /// A client paced only by this process at an effectively unlimited
    /// rate: for unit tests of request shapes.
    pub fn unlimited(saas: &str) -> Self {
        Self::with_rate(
            saas,
            &RateSettings::per_second(1_000_000.0, 1_000),
            http_client(),
            Arc::new(VendorMetrics::default()),
            ClientTimings::default(),
        )
    }

    fn with_rate(
        saas: &str,
        rate: &RateSettings,
        http: reqwest::Client,
        metrics: Arc<VendorMetrics>,
        timings: ClientTimings,
    ) -> Self {
        let local = |limit| Arc::new(LocalLimiter::new(limit)) as Arc<dyn Limiter>;
        let limiters = Limiters::new(
            local(rate.limit()),
            rate.buckets
                .iter()
                .map(|b| (b.clone(), local(b.limit)))
                .collect(),
        );
        Self {
            shared: Arc::new(Shared {
                saas: saas.to_owned(),
                http,
                limiters: RwLock::new(limiters),
                margin: JitterMargin::new(rate.margin),
                metrics,
                attempt_timeout: timings.attempt_timeout,
                notices: Mutex::new(Vec::new()),
            }),
            error_code: None,
            max_hold: timings.max_hold,
        }
    }

    /// A client with its own HTTP client, metrics and local limits (tests, tools).
    pub fn standalone(saas: &SaasSettings) -> Self {
        Self::new(
            saas,
            http_client(),
            Arc::new(VendorMetrics::default()),
            ClientTimings::default(),
        )
    }

    /// Puts the fleet's limiters in place (per connected session).
    pub fn attach(&self, limiters: Limiters) {
        *self.shared.limiters.write().expect("never poisoned") = limiters;
    }

    /// The SaaS app's request counters.
    pub fn metrics(&self) -> &Arc<VendorMetrics> {
        &self.shared.metrics
    }

    /// Reads the vendor's error code from failed responses at `field` (a
    /// field name, or a JSON pointer such as `/error/code`; several,
    /// comma-separated, are tried in order).
    pub fn with_error_code(&self, field: &str) -> Self {
        Self {
            error_code: Some(field.into()),
            ..self.clone()
        }
    }

    /// Waits for quota up to `max_hold` instead of the job's budget: longer
    /// for work no job waits on (a listing refreshed in the background),
    /// zero to fail fast.
    pub fn with_max_hold(&self, max_hold: Duration) -> Self {
        Self {
            max_hold,
            ..self.clone()
        }
    }

    /// Starts a request.
    pub fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.shared.http.request(method, url)
    }

    /// Starts a GET.
    pub fn get(&self, url: Url) -> RequestBuilder {
        self.request(Method::GET, url)
    }

    /// Starts a POST.
    pub fn post(&self, url: Url) -> RequestBuilder {
        self.request(Method::POST, url)
    }

    /// Notices gathered since the last call (for alerts).
    pub fn take_notices(&self) -> Vec<Notice> {
        std::mem::take(&mut *self.shared.notices.lock().expect("never poisoned"))
    }

    /// Sends within the fleet's limit; a non-success status is an error.
    pub async fn send(&self, request: RequestBuilder) -> Result<VendorReply, ConnectorError> {
        self.send_accepting(request, &[]).await
    }

    /// As [`send`](Self::send), but the statuses in `accept` are answers
    /// the connector reads itself (a 404 meaning "no such user").
    pub async fn send_accepting(
        &self,
        request: RequestBuilder,
        accept: &[u16],
    ) -> Result<VendorReply, ConnectorError> {
        let mut request = request.build().map_err(|e| {
            ConnectorError::Decode(format!("building the request: {}", e.without_url()))
        })?;
        if request.timeout().is_none() {
            *request.timeout_mut() = Some(self.shared.attempt_timeout);
        }
        let limiters = self.shared.limiters.read().expect("never poisoned").clone();
        let (bucket, limiter) =
            limiters.for_request(request.method().as_str(), request.url().path());
        let limiter = limiter.clone();
        let limit = limiter.limit();
        let started = Instant::now();
        let method = request.method().as_str().to_owned();
        let host = request.url().host_str().unwrap_or_default().to_owned();
        let mut resends = 0;
        loop {
            let wait_started = Instant::now();
            // Child spans of the job's process span: the wait for a fleet
            // slot, then the HTTP call. Attributes are the vendor's host,
            // never the URL (a lookup URL may hold the user's e-mail).
            let wait_span = info_span!(
                target: SPAN_TARGET,
                "limiter wait",
                "rolecall.saas" = %self.shared.saas,
                "rolecall.bucket" = bucket,
            );
            let (lease, booked_at, sent_mark) = self
                .admit(&limiter, limit, started)
                .instrument(wait_span)
                .await?;
            self.shared
                .metrics
                .record_wait(bucket, started.elapsed(), wait_started.elapsed());
            if let Some(factor) = limiter.factor() {
                self.shared.metrics.record_factor(bucket, factor);
            }
            let attempt = request
                .try_clone()
                .ok_or_else(|| ConnectorError::Decode("a streaming body cannot be sent".into()))?;
            let http_span = info_span!(
                target: SPAN_TARGET,
                "vendor request",
                otel.name = %method,
                otel.kind = "client",
                otel.status_code = tracing::field::Empty,
                "http.request.method" = %method,
                "server.address" = %host,
                "http.response.status_code" = tracing::field::Empty,
                "error.type" = tracing::field::Empty,
                "rolecall.saas" = %self.shared.saas,
                "rolecall.bucket" = bucket,
                "rolecall.attempt" = resends + 1,
            );
            let sent = self.execute(attempt).instrument(http_span.clone()).await;
            if let Some(lease) = lease {
                limiter.release(lease).await;
            }
            let reply = match sent {
                Ok(reply) => reply,
                Err(e) => {
                    http_span.record("otel.status_code", "ERROR");
                    http_span.record("error.type", e.kind());
                    self.shared
                        .metrics
                        .record_request(bucket, None, false, booked_at.elapsed());
                    return Err(e);
                }
            };
            http_span.record("http.response.status_code", reply.status.as_u16());
            if reply.status.is_server_error() || reply.status.as_u16() == 429 {
                http_span.record("otel.status_code", "ERROR");
                http_span.record("error.type", reply.status.as_str());
            }
            drop(http_span);
            let round_trip = booked_at.elapsed();
            self.shared.margin.observe(round_trip);
            let quota = Quota::read(&reply.headers);
            self.shared.metrics.record_request(
                bucket,
                Some(reply.status),
                quota.is_throttle(reply.status),
                round_trip,
            );
            if let Some(hint) = quota.hint() {
                limiter.quota(hint).await;
            }
            if quota.is_throttle(reply.status) {
                let wait = quota.throttle_wait();
                let outcome = limiter
                    .throttled(Throttle {
                        retry_after: wait,
                        round_trip,
                        sent: sent_mark,
                    })
                    .await;
                if outcome.paused_for.is_some() {
                    self.shared.metrics.record_pause(bucket);
                }
                if let Some(factor) = limiter.factor() {
                    self.shared.metrics.record_factor(bucket, factor);
                }
                if outcome.capped {
                    self.notice(Notice::PauseCapped {
                        asked: wait.unwrap_or_default(),
                        applied: outcome.paused_for.unwrap_or_default(),
                    });
                }
                // The fleet limiter holds everyone back for the pause; wait
                // it out here too, so a limiter that does not (a local one)
                // never resends early.
                let pause = outcome.paused_for.or(wait).unwrap_or_default();
                debug!(saas = %self.shared.saas, bucket, status = reply.status.as_u16(), pause_ms = pause.as_millis() as u64, "Vendor throttled a request.");
                if resends < THROTTLE_RESENDS && started.elapsed() + pause <= self.max_hold {
                    resends += 1;
                    tokio::time::sleep(pause).await;
                    continue;
                }
            }
            if reply.status.is_success() || accept.contains(&reply.status.as_u16()) {
                return Ok(reply);
            }
            return Err(self.classify(&reply, &quota));
        }
    }

    /// Waits for a slot: returns its lease, the instant it passed the gate
    /// and its place in the send log.
    async fn admit(
        &self,
        limiter: &Arc<dyn Limiter>,
        limit: Limit,
        started: Instant,
    ) -> Result<(Option<Lease>, Instant, Option<SendMark>), ConnectorError> {
        loop {
            // A window the vendor counts needs room for jitter; a token
            // bucket with a burst absorbs it in the token of its burst the
            // limiter leaves to the vendor (ACQUIRE).
            let margin = if limit.burst.get() == 1 {
                self.shared.margin.margin(limit.window)
            } else {
                Duration::ZERO
            };
            let admission = limiter
                .acquire(margin)
                .await
                .map_err(|e| ConnectorError::LimiterUnavailable(e.to_string()))?;
            match admission {
                Admission::Granted {
                    after,
                    lease,
                    generation,
                } => {
                    let booked_at = Instant::now() + after;
                    tokio::time::sleep_until(booked_at).await;
                    // The last check, in Redis: a throttle or pause since the
                    // booking makes it stale (ask again rather than fire at
                    // the old pace), and the vendor's window must have room
                    // by actual send times. If the limiter cannot say,
                    // nothing is sent.
                    loop {
                        match limiter.gate(generation, margin).await {
                            // Delays are measured from here: what happened
                            // before the gate no longer moves arrivals.
                            Ok(Gate::Go(mark)) => return Ok((lease, Instant::now(), mark)),
                            Ok(Gate::Wait(wait)) => tokio::time::sleep(wait).await,
                            Ok(Gate::Stale) => break,
                            Err(e) => {
                                if let Some(lease) = lease {
                                    limiter.release(lease).await;
                                }
                                return Err(ConnectorError::LimiterUnavailable(e.to_string()));
                            }
                        }
                    }
                    if let Some(lease) = lease {
                        limiter.release(lease).await;
                    }
                }
                Admission::Wait { wait, reason } => {
                    // Past the hold budget the job gives its delivery back
                    // (a defer queue) instead of pinning it.
                    if started.elapsed() + wait > self.max_hold {
                        return Err(ConnectorError::QuotaWait {
                            wait,
                            reason: reason.as_str(),
                        });
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn execute(&self, request: reqwest::Request) -> Result<VendorReply, ConnectorError> {
        let response = self.shared.http.execute(request).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await?;
        Ok(VendorReply {
            status,
            headers,
            body,
        })
    }

    /// The error a reply is, classified the one way every reply is: for a
    /// status a connector accepted and then found to be an error after all,
    /// as for any other.
    pub fn error_for(&self, reply: &VendorReply) -> ConnectorError {
        self.classify(reply, &Quota::read(&reply.headers))
    }

    fn classify(&self, reply: &VendorReply, quota: &Quota) -> ConnectorError {
        let code = self.error_code.as_deref().and_then(|fields| {
            let doc: Value = serde_json::from_slice(&reply.body).ok()?;
            error_code_in(&doc, fields)
        });
        ConnectorError::from_status(reply.status, quota, code.as_deref())
    }

    fn notice(&self, notice: Notice) {
        self.shared
            .notices
            .lock()
            .expect("never poisoned")
            .push(notice);
    }
}

#[cfg(test)]
mod tests {
    use super::error_code_in as error_code;

    #[test]
    fn error_codes_are_read_like_the_vendor_client_reads_them() {
        let body = serde_json::json!({"code": 1001, "error": {"type": "NotFound"}});
        assert_eq!(error_code(&body, "/code").as_deref(), Some("1001"));
        assert_eq!(error_code(&body, "code").as_deref(), Some("1001"));
        assert_eq!(
            error_code(&body, "/missing, /error/type").as_deref(),
            Some("NotFound")
        );
        assert_eq!(error_code(&body, "/missing"), None);
    }
}
