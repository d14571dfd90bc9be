//! Reading what a vendor says about its quota, in one place.
//!
//! Spellings in use:
//! - `X-RateLimit-Limit|Remaining|Reset` (GitHub, Miro REST) and
//!   `X-Rate-Limit-*` (Okta): the reset is documented by all three as UTC
//!   epoch seconds (VENDORS.md §3.6, §5, §7), so it is read as one — never
//!   guessed from the number's size;
//! - the IETF headers: `RateLimit-Limit|Remaining|Reset` (earlier drafts,
//!   reset in delta seconds), `RateLimit: "name";r=R;t=T` and
//!   `RateLimit-Policy: "name";q=Q;w=W` (structured fields; `t` and `w` in
//!   delta seconds);
//! - `Retry-After` as delay seconds or an HTTP date (RFC 9110 §10.2.3).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::limiter::QuotaHint;

/// Everything quota-related one response said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quota {
    /// Requests allowed per window, when stated.
    pub limit: Option<u64>,
    /// Requests left in the current window, when stated.
    pub remaining: Option<u64>,
    /// When the window resets, when stated.
    pub reset_at: Option<SystemTime>,
    /// How long the vendor asked us to wait (`Retry-After`).
    pub retry_after: Option<Duration>,
}

impl Quota {
    /// Reads the quota headers of a response.
    pub fn read(headers: &HeaderMap) -> Self {
        let now = SystemTime::now();
        let mut q = Quota {
            retry_after: retry_after(headers),
            ..Quota::default()
        };
        // Epoch-second families first (documented by the vendors that send them).
        for prefix in ["x-ratelimit-", "x-rate-limit-"] {
            let get = |n: &str| number(headers, &format!("{prefix}{n}"));
            q.limit = q.limit.or(get("limit"));
            q.remaining = q.remaining.or(get("remaining"));
            q.reset_at = q
                .reset_at
                .or(get("reset").map(|s| UNIX_EPOCH + Duration::from_secs(s)));
        }
        // IETF drafts: delta seconds.
        q.limit = q.limit.or(number(headers, "ratelimit-limit"));
        q.remaining = q.remaining.or(number(headers, "ratelimit-remaining"));
        q.reset_at = q
            .reset_at
            .or(number(headers, "ratelimit-reset").map(|s| now + Duration::from_secs(s)));
        if let Some(v) = text(headers, "ratelimit") {
            q.remaining = q.remaining.or(param(v, &["r", "remaining"]));
            q.reset_at = q
                .reset_at
                .or(param(v, &["t", "reset"]).map(|s| now + Duration::from_secs(s)));
            q.limit = q.limit.or(param(v, &["limit"]));
        }
        if let Some(v) = text(headers, "ratelimit-policy") {
            q.limit = q.limit.or(param(v, &["q"]).or_else(|| leading_number(v)));
        }
        q
    }

    /// What the limiter needs to know, when the vendor said anything.
    pub fn hint(&self) -> Option<QuotaHint> {
        self.remaining.map(|remaining| QuotaHint {
            limit: self.limit,
            remaining: Some(remaining),
            reset_at: self.reset_at,
        })
    }

    /// Time until the window resets.
    pub fn until_reset(&self) -> Option<Duration> {
        let at = self.reset_at?;
        Some(
            at.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
                .max(Duration::from_secs(1)),
        )
    }

    /// Whether a response with this status is the vendor throttling us:
    /// 429 everywhere; 503 with `Retry-After`; 403 with no quota left
    /// (GitHub's primary limit) or with `Retry-After` (GitHub's secondary
    /// limits, which leave the primary quota untouched: read as a refused
    /// credential, they would raise an incident and set no fleet pause
    /// while GitHub warns that requests during the limit may get the
    /// integration banned).
    pub fn is_throttle(&self, status: StatusCode) -> bool {
        match status.as_u16() {
            429 => true,
            503 => self.retry_after.is_some(),
            403 => self.remaining == Some(0) || self.retry_after.is_some(),
            _ => false,
        }
    }

    /// The wait a throttle names: `Retry-After`, else the reset time.
    pub fn throttle_wait(&self) -> Option<Duration> {
        self.retry_after.or_else(|| self.until_reset())
    }
}

fn text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

fn number(headers: &HeaderMap, name: &str) -> Option<u64> {
    text(headers, name)?.parse().ok()
}

/// `key=value` from a list of `;`/`,`-separated parameters.
fn param(value: &str, keys: &[&str]) -> Option<u64> {
    value
        .split([';', ','])
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| keys.iter().any(|want| k.trim().eq_ignore_ascii_case(want)))
        .and_then(|(_, v)| v.trim().trim_matches('"').parse().ok())
}

/// The `100` of an older `RateLimit-Policy: 100;w=60`.
fn leading_number(value: &str) -> Option<u64> {
    value.split([';', ',']).next()?.trim().parse().ok()
}

/// Parses `Retry-After` as delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = text(headers, RETRY_AFTER.as_str())?;
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    // All three HTTP-date forms a server may still send (RFC 9110 §5.6.7):
    // IMF-fixdate, the obsolete RFC 850 form and asctime.
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn okta_and_github_resets_are_epoch_seconds_whatever_their_size() {
        let q = Quota::read(&headers(&[
            ("X-Rate-Limit-Remaining", "0"),
            ("X-Rate-Limit-Limit", "600"),
            ("X-Rate-Limit-Reset", "4102444800"),
        ]));
        assert_eq!((q.remaining, q.limit), (Some(0), Some(600)));
        assert_eq!(
            q.reset_at,
            Some(UNIX_EPOCH + Duration::from_secs(4_102_444_800))
        );
        // A small epoch value is still an epoch (long past), not "in 30 s".
        let q = Quota::read(&headers(&[
            ("x-ratelimit-remaining", "3"),
            ("x-ratelimit-reset", "30"),
        ]));
        assert_eq!(q.reset_at, Some(UNIX_EPOCH + Duration::from_secs(30)));
    }

    #[test]
    fn ietf_headers_count_their_reset_from_now() {
        let q = Quota::read(&headers(&[
            ("RateLimit", "\"default\";r=4;t=30"),
            ("RateLimit-Policy", "\"default\";q=100;w=60"),
        ]));
        assert_eq!((q.remaining, q.limit), (Some(4), Some(100)));
        let wait = q.until_reset().unwrap();
        assert!(
            wait > Duration::from_secs(28) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        let q = Quota::read(&headers(&[
            ("RateLimit-Remaining", "0"),
            ("RateLimit-Reset", "5"),
        ]));
        assert_eq!(q.remaining, Some(0));
        assert!(q.until_reset().unwrap() <= Duration::from_secs(5));
        let q = Quota::read(&headers(&[("RateLimit", "limit=10, remaining=2, reset=7")]));
        assert_eq!((q.limit, q.remaining), (Some(10), Some(2)));
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let read = |v: &str| retry_after(&headers(&[("retry-after", v)]));
        assert_eq!(read("7"), Some(Duration::from_secs(7)));
        assert_eq!(read("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        assert_eq!(
            read("Wednesday, 21-Oct-15 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(read("Wed Oct 21 07:28:00 2015"), Some(Duration::ZERO));
        let ahead = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(90));
        let wait = read(&ahead).expect("a date ahead is a wait");
        assert!(
            wait > Duration::from_secs(85) && wait <= Duration::from_secs(90),
            "{wait:?}"
        );
        assert_eq!(read("soon"), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn throttles_are_429s_503s_with_a_wait_and_403s_with_no_quota_or_a_wait() {
        let none = Quota::default();
        assert!(none.is_throttle(StatusCode::TOO_MANY_REQUESTS));
        assert!(!none.is_throttle(StatusCode::SERVICE_UNAVAILABLE));
        assert!(!none.is_throttle(StatusCode::FORBIDDEN));
        let spent = Quota::read(&headers(&[("x-ratelimit-remaining", "0")]));
        assert!(spent.is_throttle(StatusCode::FORBIDDEN));
        let wait = Quota::read(&headers(&[("retry-after", "2")]));
        assert!(wait.is_throttle(StatusCode::SERVICE_UNAVAILABLE));
        // GitHub's secondary limit: quota left, but a wait named.
        let secondary = Quota::read(&headers(&[
            ("x-ratelimit-remaining", "4990"),
            ("retry-after", "60"),
        ]));
        assert!(secondary.is_throttle(StatusCode::FORBIDDEN));
        assert_eq!(secondary.throttle_wait(), Some(Duration::from_secs(60)));
        let refused = Quota::read(&headers(&[("x-ratelimit-remaining", "4990")]));
        assert!(
            !refused.is_throttle(StatusCode::FORBIDDEN),
            "a plain 403 is a refusal"
        );
    }

    proptest::proptest! {
        /// Any quota header values read without a panic.
        #[test]
        fn any_quota_header_values_are_read(
            remaining in "[0-9a-z;=,\" ]{0,20}",
            reset in "[0-9a-zA-Z:, ]{0,30}",
            policy in "[0-9a-z;=,\" ]{0,20}",
        ) {
            let mut h = HeaderMap::new();
            for (k, v) in [
                ("x-ratelimit-remaining", &remaining),
                ("x-rate-limit-reset", &reset),
                ("ratelimit", &remaining),
                ("ratelimit-policy", &policy),
                ("retry-after", &reset),
            ] {
                if let Ok(v) = HeaderValue::from_str(v) {
                    h.insert(k, v);
                }
            }
            let q = Quota::read(&h);
            let _ = (q.hint(), q.until_reset(), q.throttle_wait());
        }
    }
}
