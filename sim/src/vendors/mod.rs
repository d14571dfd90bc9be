//! One module per simulated vendor, each owning its wire format; what they share
//! is how a request is let in (`gate`: [`Gate`], [`guard`]) and a few small
//! helpers.
//!
//! A sim serves exactly one [`Vendor`]: several vendors claim the same paths
//! (`/v1` is both Lever's and Mosyle Business's, `/v2` both Mosyle Manager's
//! and Zoom's), and a test that wants two vendors starts two sims.

mod gate;
pub(crate) mod github;
pub(crate) mod lever;
pub(crate) mod mosyle;
pub(crate) mod okta;
pub(crate) mod scim;
pub(crate) mod zoom;

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat};
use serde::{Deserialize, Serialize};

pub(crate) use gate::{Gate, GateSettings, Quota, Service, guard, remember_path};

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

impl Vendor {
    /// Whether the vendor's throttled (429) answers carry `Retry-After`, as
    /// far as its documentation says (VENDORS.md): Lever documents none (§2.6),
    /// Miro SCIM shows no headers (§3.6), Okta sends `X-Rate-Limit-Reset`
    /// instead (§5), GitHub `x-ratelimit-reset` for its primary limit (§7),
    /// and Zoom's is unverified (§8). Mosyle documents no rate limit at all
    /// and generic SCIM leaves it to RFC 9110: those two keep the sim's
    /// original `Retry-After`.
    pub fn sends_retry_after(self) -> bool {
        match self {
            Self::MosyleBusiness | Self::MosyleManager | Self::Scim => true,
            Self::Lever | Self::MiroScim | Self::Okta | Self::Github | Self::Zoom => false,
        }
    }
}

impl std::fmt::Display for Vendor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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
