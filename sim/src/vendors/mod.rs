//! One module per simulated vendor, each owning its wire format; what they share
//! is how a request is let in ([`Gate`], [`guard`]) and a few small helpers.
//!
//! A sim serves exactly one [`Vendor`]: several vendors claim the same paths
//! (`/v1` is both Lever's and Mosyle Business's, `/v2` both Mosyle Manager's
//! and Zoom's), and a test that wants two vendors starts two sims.

pub(crate) mod github;
pub(crate) mod lever;
pub(crate) mod mosyle;
pub(crate) mod okta;
pub(crate) mod scim;
pub(crate) mod zoom;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat};
use serde::{Deserialize, Serialize};

use crate::faults::{Fault, FaultQueue};
use crate::stats::{Epoch, RequestRecord, Stats, StatsSnapshot};
use crate::throttle::{RateLimit, TokenBucket, retry_after_secs};

/// Which vendor a sim impersonates (`--vendor` on the command line, kebab-case
/// in JSON).
///
/// Base paths: Lever `/v1`, Mosyle Business `/v1`, Mosyle Manager `/v2`, Miro
/// SCIM `/api/v1/scim`, generic SCIM `/scim/v2`, Okta `/api/v1`, GitHub `/`
/// (`/orgs/...`), Zoom `/v2`. Slack (VENDORS.md §6) is not simulated.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Vendor {
    #[default]
    Lever,
    MosyleBusiness,
    MosyleManager,
    MiroScim,
    Scim,
    Okta,
    Github,
    Zoom,
}

impl Vendor {
    pub const ALL: [Self; 8] = [
        Self::Lever,
        Self::MosyleBusiness,
        Self::MosyleManager,
        Self::MiroScim,
        Self::Scim,
        Self::Okta,
        Self::Github,
        Self::Zoom,
    ];

    /// The name on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lever => "lever",
            Self::MosyleBusiness => "mosyle-business",
            Self::MosyleManager => "mosyle-manager",
            Self::MiroScim => "miro-scim",
            Self::Scim => "scim",
            Self::Okta => "okta",
            Self::Github => "github",
            Self::Zoom => "zoom",
        }
    }
}

impl std::fmt::Display for Vendor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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

/// The gate's verdict, the quota left, and the ticket to log the answer with.
pub(crate) struct Admission<'g> {
    pub(crate) verdict: Verdict,
    /// `None` when the sim is unlimited.
    pub(crate) quota: Option<Quota>,
    pub(crate) ticket: Ticket<'g>,
}

/// The token bucket as a quota-reporting vendor shows it: `limit` is the
/// bucket's capacity (burst), `remaining` the whole tokens left after this
/// request, `reset_unix_s` the epoch second by which the bucket is full again
/// (`remaining == limit`) if no more requests come — a window vendor's
/// "reset", and never earlier than a token is available.
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
        let (taken, level) = self.bucket.take(now);
        let quota = level.map(|level| Quota {
            limit: level.burst,
            remaining: level.remaining(),
            reset_unix_s: unix_secs_ceil(SystemTime::now() + level.until_full()),
        });
        let verdict = match taken {
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
            quota,
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

/// What a vendor decides at the door; the order (throttle, faults, latency,
/// auth, handler) is the same for every vendor and lives in [`guard`].
pub(crate) trait Service: Send + Sync + 'static {
    fn gate(&self) -> &Gate;

    /// The vendor's answer when the throttle refuses a request, with its own
    /// `Retry-After` (or none, for vendors that only send reset headers).
    fn throttled(&self, retry_after_secs: u64) -> Response;

    /// An injected status in the vendor's error shape; [`guard`] adds the
    /// fault's `Retry-After`.
    fn injected(&self, status: StatusCode) -> Response;

    /// Checks the credentials a request carries in its headers: `None` lets
    /// it through, `Some` is the vendor's refusal. Vendors whose credentials
    /// travel in the body (Mosyle) check those in their handlers.
    fn refuse(&self, request: &Request) -> Option<Response>;

    /// Headers every response carries, throttled and refused ones included
    /// (Okta's and GitHub's rate-limit headers).
    fn decorate(&self, _headers: &mut HeaderMap, _quota: Option<Quota>) {}
}

/// Throttle before auth, as the limit is counted per request; then injected
/// faults, which stand in for the vendor failing to serve; then latency; then
/// auth.
pub(crate) async fn guard<S: Service>(
    State(service): State<Arc<S>>,
    request: Request,
    next: Next,
) -> Response {
    let Admission {
        verdict,
        quota,
        ticket,
    } = service.gate().admit();
    service.gate().delay().await;
    let mut response = match verdict {
        Verdict::Throttled { retry_after_secs } => service.throttled(retry_after_secs),
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
                service.gate().record_unauthorized();
                refused
            }
        },
    };
    service.decorate(response.headers_mut(), quota);
    ticket.answered(response.status().as_u16());
    response
}

pub(crate) fn set_retry_after(response: &mut Response, secs: u64) {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
}

/// A JSON body with an explicit content type (SCIM's `application/scim+json`).
pub(crate) fn json_as(
    status: StatusCode,
    content_type: &'static str,
    body: &serde_json::Value,
) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body.to_string(),
    )
        .into_response()
}

/// The token of an `Authorization: <scheme> <token>` header whose scheme is
/// one of `schemes` (compared ignoring case, as RFC 9110 says).
pub(crate) fn auth_token<'h>(headers: &'h HeaderMap, schemes: &[&str]) -> Option<&'h str> {
    let (scheme, token) = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim()
        .split_once(' ')?;
    schemes
        .iter()
        .any(|s| s.eq_ignore_ascii_case(scheme))
        .then(|| token.trim())
}

/// `http://<Host>`: vendors put absolute URLs in payloads and `Link` headers,
/// and a client following them must come back to the sim.
pub(crate) fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

/// RFC 3339 UTC with milliseconds, as Okta, SCIM `meta` and Zoom print times.
pub(crate) fn iso_ms(epoch_ms: i64) -> String {
    DateTime::from_timestamp_millis(epoch_ms)
        .map(|at| at.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// As [`iso_ms`], to the second (Zoom, GitHub).
pub(crate) fn iso_secs(epoch_ms: i64) -> String {
    DateTime::from_timestamp_millis(epoch_ms)
        .map(|at| at.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_default()
}

pub(crate) fn unix_secs_ceil(at: SystemTime) -> u64 {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    since.as_secs() + u64::from(since.subsec_nanos() > 0)
}

/// Emails whose lookups answer 500, lower-cased so a test may name them in
/// any case.
#[derive(Clone, Debug, Default)]
pub(crate) struct FailEmails(HashSet<String>);

impl FailEmails {
    pub(crate) fn new(emails: &HashSet<String>) -> Self {
        Self(emails.iter().map(|e| e.to_lowercase()).collect())
    }

    pub(crate) fn contains(&self, email: &str) -> bool {
        !self.0.is_empty() && self.0.contains(&email.to_lowercase())
    }
}

/// Percent-encodes a query value, for the `Link` headers vendors send.
pub(crate) fn encode_query(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
