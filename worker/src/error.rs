//! Connector errors carry their own retry decision.
//!
//! Every failure is classified once, where it is understood (the HTTP status,
//! the transport error), and the pipeline and the consumer only ever branch
//! on [`ErrorClass`]. Error texts never hold a credential: connectors build
//! them from status codes and vendor error codes, and transport errors are
//! stripped of their URL.

use std::time::Duration;

use reqwest::StatusCode;

use crate::vendor::quota::Quota;

/// How a failure is to be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Worth retrying soon: timeouts, connection errors, 5xx.
    Transient,
    /// The vendor asked us to slow down, optionally saying for how long.
    Throttled(Option<Duration>),
    /// The vendor refused our credential: retrying cannot help, admins must act.
    Auth,
    /// Retrying cannot help: a 4xx, a response we cannot read.
    Permanent,
    /// Our own rate limiter could not decide (Redis unreachable): hold the
    /// job until it can; never send without a limit.
    Unavailable,
}

impl ErrorClass {
    /// Short name for logs, Redis and alerts.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Throttled(_) => "throttled",
            ErrorClass::Auth => "auth",
            ErrorClass::Permanent => "permanent",
            ErrorClass::Unavailable => "unavailable",
        }
    }
}

/// A failed vendor call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectorError {
    /// The vendor answered 429 (or 503 with Retry-After).
    #[error("vendor throttled the request (HTTP {status})")]
    Throttled {
        /// The status received.
        status: u16,
        /// How long the vendor asked us to wait.
        retry_after: Option<Duration>,
    },
    /// The vendor refused the credential (401/403).
    #[error("vendor refused the credential (HTTP {status}{detail})")]
    Unauthorized {
        /// The status received.
        status: u16,
        /// The vendor's error code, when it gave one.
        detail: String,
    },
    /// A 5xx or 408.
    #[error("vendor failed (HTTP {status}{detail})")]
    Upstream {
        /// The status received.
        status: u16,
        /// The vendor's error code, when it gave one.
        detail: String,
    },
    /// Any other unexpected status.
    #[error("vendor rejected the request (HTTP {status}{detail})")]
    Rejected {
        /// The status received.
        status: u16,
        /// The vendor's error code, when it gave one.
        detail: String,
    },
    /// Could not connect, or the connection broke.
    #[error("could not reach the vendor: {0}")]
    Transport(String),
    /// An attempt or the whole job took too long.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// The response did not have the vendor's documented shape.
    #[error("vendor response has an unexpected shape: {0}")]
    Decode(String),
    /// The fleet must wait longer for quota than a job may hold its delivery.
    #[error("waiting for quota ({reason}) for {wait:?}")]
    QuotaWait {
        /// How long until quota is expected.
        wait: Duration,
        /// Why (paused by the vendor, rate limit, in-flight cap).
        reason: &'static str,
    },
    /// The fleet-wide rate limiter could not be asked.
    #[error("{0}")]
    LimiterUnavailable(String),
    /// The vendor's answer does not settle the question (a page cap reached,
    /// a partial list): never read as "not found".
    #[error("no verdict: {0}")]
    Inconclusive(String),
    /// The connector does not offer this action.
    #[error("this connector cannot {0}")]
    Unsupported(&'static str),
    /// The SaaS app's configuration does not enable this action.
    #[error("{0} is not enabled for this SaaS app (add it to its `actions`)")]
    NotEnabled(&'static str),
    /// The vendor answered with an application error in a success response
    /// (Mosyle's HTTP 200 with a non-OK `status`).
    #[error("vendor reported an error: {0}")]
    VendorStatus(String),
}

impl ConnectorError {
    /// A vendor answer that is not the JSON expected, said without quoting
    /// it: serde's own text quotes the offending value (a user's e-mail, a
    /// token a vendor echoes), and this error travels to logs, alerts and
    /// the ledger. Kept: what kind of mismatch, where in the body, and the
    /// name of a missing field (ours, from the expected shape).
    pub fn undecodable(e: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        let text = e.to_string();
        let what = match e.classify() {
            Category::Syntax => "not valid JSON".to_string(),
            Category::Eof => "the JSON ends early".to_string(),
            Category::Io => "the body could not be read".to_string(),
            Category::Data => match text.strip_prefix("missing field `") {
                Some(rest) => format!("missing field `{}`", rest.split('`').next().unwrap_or("")),
                None => "a value of another type or range than expected".to_string(),
            },
        };
        ConnectorError::Decode(if e.line() == 0 {
            what
        } else {
            format!("{what} (line {}, column {})", e.line(), e.column())
        })
    }

    /// A short, fixed name of the failure (`error.type` on spans): never
    /// the message, which may quote a vendor's answer.
    pub fn kind(&self) -> &'static str {
        match self {
            ConnectorError::Throttled { .. } => "throttled",
            ConnectorError::Unauthorized { .. } => "unauthorized",
            ConnectorError::Upstream { .. } => "upstream",
            ConnectorError::Rejected { .. } => "rejected",
            ConnectorError::Transport(_) => "transport",
            ConnectorError::Timeout(_) => "timeout",
            ConnectorError::Decode(_) => "decode",
            ConnectorError::QuotaWait { .. } => "quota_wait",
            ConnectorError::LimiterUnavailable(_) => "limiter_unavailable",
            ConnectorError::Inconclusive(_) => "inconclusive",
            ConnectorError::Unsupported(_) => "unsupported",
            ConnectorError::NotEnabled(_) => "not_enabled",
            ConnectorError::VendorStatus(_) => "vendor_status",
        }
    }

    /// How this failure is to be treated.
    pub fn class(&self) -> ErrorClass {
        match self {
            ConnectorError::Throttled { retry_after, .. } => ErrorClass::Throttled(*retry_after),
            ConnectorError::QuotaWait { wait, .. } => ErrorClass::Throttled(Some(*wait)),
            ConnectorError::LimiterUnavailable(_) => ErrorClass::Unavailable,
            ConnectorError::Unauthorized { .. } => ErrorClass::Auth,
            ConnectorError::Upstream { .. }
            | ConnectorError::Transport(_)
            | ConnectorError::Timeout(_) => ErrorClass::Transient,
            ConnectorError::Rejected { .. }
            | ConnectorError::Decode(_)
            | ConnectorError::Inconclusive(_)
            | ConnectorError::Unsupported(_)
            | ConnectorError::NotEnabled(_)
            | ConnectorError::VendorStatus(_) => ErrorClass::Permanent,
        }
    }

    /// A change was asked for a user the vendor does not know: permanent,
    /// since retrying cannot make the user appear.
    pub fn no_such_user(action: &str) -> Self {
        ConnectorError::Rejected {
            status: 404,
            detail: format!(", no such user to {action}"),
        }
    }

    /// Classifies a non-success HTTP response. `vendor_code` is the vendor's
    /// own error code from the body, if one could be read; it is clipped,
    /// since it ends up in results, alerts and logs.
    pub fn from_status(status: StatusCode, quota: &Quota, vendor_code: Option<&str>) -> Self {
        let detail = vendor_code
            .map(|c| format!(", {}", clip(c, MAX_VENDOR_TEXT)))
            .unwrap_or_default();
        let code = status.as_u16();
        if quota.is_throttle(status) {
            return ConnectorError::Throttled {
                status: code,
                retry_after: quota.throttle_wait(),
            };
        }
        match code {
            401 | 403 => ConnectorError::Unauthorized {
                status: code,
                detail,
            },
            408 | 500..=599 => ConnectorError::Upstream {
                status: code,
                detail,
            },
            _ => ConnectorError::Rejected {
                status: code,
                detail,
            },
        }
    }
}

/// Vendor texts kept in errors are cut to this many characters.
pub const MAX_VENDOR_TEXT: usize = 120;

/// Cuts `text` to `max` characters (on a character boundary), marking the cut.
pub fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

impl From<reqwest::Error> for ConnectorError {
    fn from(e: reqwest::Error) -> Self {
        // The URL holds the user's e-mail: `describe` keeps it out.
        if e.is_timeout() {
            ConnectorError::Timeout("vendor request")
        } else if e.is_decode() {
            ConnectorError::Decode(rolecall_common::http::describe(e))
        } else {
            ConnectorError::Transport(rolecall_common::http::describe(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_undecodable_answer_is_described_without_quoting_its_values() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct User {
            email: String,
            active: bool,
        }
        let described = |body: &str| {
            ConnectorError::undecodable(&serde_json::from_str::<User>(body).unwrap_err())
                .to_string()
        };
        let wrong_type = described(r#"{"email": "alice@example.com", "active": "tok-123"}"#);
        assert!(!wrong_type.contains("tok-123"), "{wrong_type}");
        assert_eq!(
            wrong_type,
            "vendor response has an unexpected shape: a value of another type or range than expected (line 1, column 50)"
        );
        let missing = described(r#"{"active": true}"#);
        assert_eq!(
            missing,
            "vendor response has an unexpected shape: missing field `email` (line 1, column 16)"
        );
        let bad_json = described(r#"{"email": alice@example.com}"#);
        assert!(!bad_json.contains("alice"), "{bad_json}");
        assert!(bad_json.contains("not valid JSON (line 1"), "{bad_json}");
        assert!(described(r#"{"email": "#).contains("the JSON ends early"));
        // From a JSON value there is no line to point at.
        let value = serde_json::json!({"email": 7, "active": true});
        let from_value =
            ConnectorError::undecodable(&serde_json::from_value::<User>(value).unwrap_err());
        assert!(!from_value.to_string().contains('7'), "{from_value}");
    }
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    #[tokio::test]
    async fn a_refused_connection_says_so_and_never_shows_the_url() {
        // A port nobody listens on (bound, then dropped).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = reqwest::get(format!(
            "http://127.0.0.1:{port}/users?email=someone@example.com"
        ))
        .await
        .unwrap_err();
        let text = ConnectorError::from(e).to_string();
        assert!(text.to_lowercase().contains("refused"), "{text}");
        assert!(!text.contains("someone@example.com"), "{text}");
    }

    fn headers(retry: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = retry {
            h.insert(RETRY_AFTER, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn quota(retry: Option<&str>) -> Quota {
        Quota::read(&headers(retry))
    }

    #[test]
    fn statuses_are_classified_once() {
        let class = |s: u16, r: Option<&str>| {
            ConnectorError::from_status(StatusCode::from_u16(s).unwrap(), &quota(r), None).class()
        };
        assert_eq!(
            class(429, Some("3")),
            ErrorClass::Throttled(Some(Duration::from_secs(3)))
        );
        assert_eq!(class(429, None), ErrorClass::Throttled(None));
        assert_eq!(
            class(503, Some("1")),
            ErrorClass::Throttled(Some(Duration::from_secs(1)))
        );
        assert_eq!(class(503, None), ErrorClass::Transient);
        assert_eq!(class(500, None), ErrorClass::Transient);
        assert_eq!(class(401, None), ErrorClass::Auth);
        assert_eq!(class(403, None), ErrorClass::Auth);
        assert_eq!(class(400, None), ErrorClass::Permanent);
        assert_eq!(class(404, None), ErrorClass::Permanent);
    }

    #[test]
    fn a_403_with_no_quota_left_is_a_throttle_until_the_reset() {
        let mut h = headers(None);
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        let reset = (chrono::Utc::now().timestamp() + 30).to_string();
        h.insert("x-ratelimit-reset", HeaderValue::from_str(&reset).unwrap());
        let e = ConnectorError::from_status(StatusCode::FORBIDDEN, &Quota::read(&h), None);
        match e.class() {
            ErrorClass::Throttled(Some(wait)) => {
                assert!(wait.as_secs() >= 28 && wait.as_secs() <= 30)
            }
            other => panic!("{other:?}"),
        }
        // A plain 403 is still a refused credential.
        let e = ConnectorError::from_status(StatusCode::FORBIDDEN, &quota(None), None);
        assert_eq!(e.class(), ErrorClass::Auth);
    }

    #[test]
    fn vendor_codes_reach_the_message() {
        let e = ConnectorError::from_status(
            StatusCode::UNAUTHORIZED,
            &quota(None),
            Some("UnauthorizedError"),
        );
        assert_eq!(
            e.to_string(),
            "vendor refused the credential (HTTP 401, UnauthorizedError)"
        );
    }

    #[test]
    fn long_vendor_codes_are_clipped() {
        let long = "x".repeat(500);
        let e = ConnectorError::from_status(StatusCode::BAD_REQUEST, &quota(None), Some(&long));
        assert!(e.to_string().len() < 200, "{e}");
    }
}
