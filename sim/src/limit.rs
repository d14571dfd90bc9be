//! Which rate-limit scheme a bucket enforces ([`Limit`]), how it is written
//! (JSON for `/_sim/rate`, text for the command line), and the [`Limiter`]
//! that applies it.
//!
//! Vendors count differently, and a fleet that is safe against one scheme can
//! overrun another: Lever documents a token bucket (bursts allowed), Miro
//! "200 requests per 30 s", Okta per-minute windows. The sim offers all
//! three so a benchmark can check the fleet against the strictest.

use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::throttle::{RateLimit, TokenBucket};
use crate::window::{FixedWindow, Measure, SlidingLog};

/// A rate limit as a vendor enforces it.
///
/// On the wire (`GET`/`PUT /_sim/rate`, stats), tagged by `scheme`:
///
/// - `{"scheme": "token_bucket", "per_second": 10, "burst": 20}`; the older
///   `{"per_second": 10, "burst": 20}` (no `scheme`) still reads as this;
/// - `{"scheme": "sliding_window", "requests": 50, "window_ms": 1000,
///   "count_rejected": false}` (`count_rejected` may be omitted);
/// - `{"scheme": "fixed_window", "requests": 200, "window_ms": 30000}`.
///
/// `requests: 0` refuses everything, like a token bucket with `burst: 0`;
/// a window must be at least 1 ms.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "LimitWire", into = "LimitWire")]
pub enum Limit {
    /// Steady `per_second`, bursts up to `burst` (the sim's original scheme).
    TokenBucket(RateLimit),
    /// At most `requests` in any window of `window`, counted on arrival. With
    /// `count_rejected`, refused requests fill the window too, so a client
    /// that keeps knocking stays locked out.
    SlidingWindow {
        requests: u32,
        window: Duration,
        count_rejected: bool,
    },
    /// `requests` per window `[k·window, (k+1)·window)` of Unix time.
    FixedWindow { requests: u32, window: Duration },
}

impl From<RateLimit> for Limit {
    fn from(rate: RateLimit) -> Self {
        Self::TokenBucket(rate)
    }
}

impl Limit {
    pub fn sliding_window(requests: u32, window: Duration) -> Self {
        Self::SlidingWindow {
            requests,
            window,
            count_rejected: false,
        }
    }

    pub fn fixed_window(requests: u32, window: Duration) -> Self {
        Self::FixedWindow { requests, window }
    }

    /// The window the vendor counts in; one second for a token bucket, whose
    /// peaks are compared with `per_second + burst`.
    pub fn window(&self) -> Duration {
        match self {
            Self::TokenBucket(_) => Duration::from_secs(1),
            Self::SlidingWindow { window, .. } | Self::FixedWindow { window, .. } => *window,
        }
    }

    /// The steady rate the limit allows, for "quota used" = accepted /
    /// (rate × elapsed).
    pub fn per_second(&self) -> f64 {
        match self {
            Self::TokenBucket(rate) => rate.per_second.max(0.0),
            Self::SlidingWindow {
                requests, window, ..
            }
            | Self::FixedWindow { requests, window } => {
                f64::from(*requests) / window.as_secs_f64().max(f64::MIN_POSITIVE)
            }
        }
    }

    pub(crate) fn measure(&self) -> Measure {
        match self {
            Self::FixedWindow { window, .. } => Measure::Fixed(*window),
            _ => Measure::Sliding(self.window()),
        }
    }

    pub fn validate(&self) -> Result<(), LimitError> {
        match self {
            Self::TokenBucket(_) => Ok(()),
            Self::SlidingWindow { window, .. } | Self::FixedWindow { window, .. } => {
                if *window < Duration::from_millis(1) {
                    Err(LimitError::Window(*window))
                } else {
                    Ok(())
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LimitError {
    #[error("unknown rate-limit scheme {0:?} (token_bucket, sliding_window, fixed_window)")]
    Scheme(String),
    #[error("a {scheme} limit needs `{field}`")]
    Missing {
        scheme: &'static str,
        field: &'static str,
    },
    #[error("`{field}` does not apply to a {scheme} limit")]
    Extra {
        scheme: &'static str,
        field: &'static str,
    },
    #[error("a window must be at least 1 ms, not {0:?}")]
    Window(Duration),
    #[error("cannot read {0:?} as a duration (e.g. 500ms, 1s, 30s, 1m)")]
    Duration(String),
    #[error(
        "cannot read {0:?} as a limit (e.g. 50/1s, fixed:200/30s, token-bucket:10/1s,burst=20)"
    )]
    Syntax(String),
}

const TOKEN_BUCKET: &str = "token_bucket";
const SLIDING_WINDOW: &str = "sliding_window";
const FIXED_WINDOW: &str = "fixed_window";

/// The JSON shape, read field by field so each mistake gets its own error
/// and the scheme-less legacy shape keeps working.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    per_second: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    burst: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    window_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    count_rejected: Option<bool>,
}

impl TryFrom<LimitWire> for Limit {
    type Error = LimitError;

    fn try_from(wire: LimitWire) -> Result<Self, LimitError> {
        let scheme = match wire.scheme.as_deref() {
            None | Some(TOKEN_BUCKET) => TOKEN_BUCKET,
            Some(SLIDING_WINDOW) => SLIDING_WINDOW,
            Some(FIXED_WINDOW) => FIXED_WINDOW,
            Some(other) => return Err(LimitError::Scheme(other.to_owned())),
        };
        let missing = |field| LimitError::Missing { scheme, field };
        let extra = |field| LimitError::Extra { scheme, field };
        let limit = if scheme == TOKEN_BUCKET {
            for (field, present) in [
                ("requests", wire.requests.is_some()),
                ("window_ms", wire.window_ms.is_some()),
                ("count_rejected", wire.count_rejected.is_some()),
            ] {
                if present {
                    return Err(extra(field));
                }
            }
            Self::TokenBucket(RateLimit {
                per_second: wire.per_second.ok_or_else(|| missing("per_second"))?,
                burst: wire.burst.ok_or_else(|| missing("burst"))?,
            })
        } else {
            for (field, present) in [
                ("per_second", wire.per_second.is_some()),
                ("burst", wire.burst.is_some()),
                (
                    "count_rejected",
                    scheme == FIXED_WINDOW && wire.count_rejected.is_some(),
                ),
            ] {
                if present {
                    return Err(extra(field));
                }
            }
            let requests = wire.requests.ok_or_else(|| missing("requests"))?;
            let window = Duration::from_millis(wire.window_ms.ok_or_else(|| missing("window_ms"))?);
            if scheme == SLIDING_WINDOW {
                Self::SlidingWindow {
                    requests,
                    window,
                    count_rejected: wire.count_rejected.unwrap_or(false),
                }
            } else {
                Self::FixedWindow { requests, window }
            }
        };
        limit.validate()?;
        Ok(limit)
    }
}

impl From<Limit> for LimitWire {
    fn from(limit: Limit) -> Self {
        let window_ms =
            |window: Duration| Some(u64::try_from(window.as_millis()).unwrap_or(u64::MAX));
        match limit {
            Limit::TokenBucket(rate) => Self {
                scheme: Some(TOKEN_BUCKET.to_owned()),
                per_second: Some(rate.per_second),
                burst: Some(rate.burst),
                ..Self::default()
            },
            Limit::SlidingWindow {
                requests,
                window,
                count_rejected,
            } => Self {
                scheme: Some(SLIDING_WINDOW.to_owned()),
                requests: Some(requests),
                window_ms: window_ms(window),
                count_rejected: Some(count_rejected),
                ..Self::default()
            },
            Limit::FixedWindow { requests, window } => Self {
                scheme: Some(FIXED_WINDOW.to_owned()),
                requests: Some(requests),
                window_ms: window_ms(window),
                ..Self::default()
            },
        }
    }
}

/// The command-line form: `[SCHEME:]N/WINDOW[,OPTION]...`.
///
/// - `50/1s`, `sliding:50/1s`: sliding window (the default scheme here, the
///   strictest reading of "N per W"); option `count-rejected`;
/// - `fixed:200/30s`: fixed, epoch-aligned windows;
/// - `token-bucket:10/1s,burst=20`: a token bucket refilling N per WINDOW
///   (10 per second), `burst` defaulting to N.
impl FromStr for Limit {
    type Err = LimitError;

    fn from_str(text: &str) -> Result<Self, LimitError> {
        let syntax = || LimitError::Syntax(text.to_owned());
        let (scheme, rest) = match text.split_once(':') {
            Some((scheme, rest)) => (scheme.trim(), rest),
            None => ("sliding", text),
        };
        let mut parts = rest.split(',').map(str::trim);
        let (requests, window) = parts
            .next()
            .and_then(|amount| amount.split_once('/'))
            .ok_or_else(syntax)?;
        let requests: u32 = requests.trim().parse().map_err(|_| syntax())?;
        let window = parse_window(window.trim())?;
        let options: Vec<&str> = parts.collect();
        let limit = match scheme {
            "sliding" | "sliding-window" => {
                let count_rejected = match options.as_slice() {
                    [] => false,
                    ["count-rejected"] => true,
                    _ => return Err(syntax()),
                };
                Self::SlidingWindow {
                    requests,
                    window,
                    count_rejected,
                }
            }
            "fixed" | "fixed-window" if options.is_empty() => {
                Self::FixedWindow { requests, window }
            }
            "token-bucket" | "bucket" => {
                let burst = match options.as_slice() {
                    [] => requests,
                    [option] => option
                        .strip_prefix("burst=")
                        .and_then(|b| b.parse().ok())
                        .ok_or_else(syntax)?,
                    _ => return Err(syntax()),
                };
                Self::TokenBucket(RateLimit {
                    per_second: f64::from(requests) / window.as_secs_f64().max(f64::MIN_POSITIVE),
                    burst,
                })
            }
            "fixed" | "fixed-window" => return Err(syntax()),
            other => return Err(LimitError::Scheme(other.to_owned())),
        };
        limit.validate()?;
        Ok(limit)
    }
}

/// `500ms`, `1s`, `30s`, `1m`, `1h`; fractions (`1.5s`) are accepted.
pub fn parse_window(text: &str) -> Result<Duration, LimitError> {
    let bad = || LimitError::Duration(text.to_owned());
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "s" => number,
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| bad())
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TokenBucket(RateLimit { per_second, burst }) => {
                write!(f, "token bucket, {per_second}/s, burst {burst}")
            }
            Self::SlidingWindow {
                requests,
                window,
                count_rejected,
            } => {
                write!(f, "sliding window, {requests} per {window:?}")?;
                if *count_rejected {
                    f.write_str(", refused requests count")?;
                }
                Ok(())
            }
            Self::FixedWindow { requests, window } => {
                write!(f, "fixed windows, {requests} per {window:?}")
            }
        }
    }
}

/// Where a limited bucket stands after a request, in the terms quota headers
/// use: its capacity, whole requests left, and how long until it is back to
/// full (a window vendor's "reset").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Level {
    pub(crate) limit: u32,
    pub(crate) remaining: u32,
    pub(crate) until_reset: Duration,
}

/// The limiter's answer: admitted, or refused with the time until a request
/// would be admitted; the level (`None` when unlimited).
pub(crate) struct Decision {
    pub(crate) taken: Result<(), Duration>,
    pub(crate) level: Option<Level>,
    /// The windows the limit counts in, for the statistics.
    pub(crate) measure: Measure,
}

/// One bucket's limit and its state, under one lock.
pub(crate) struct Limiter {
    state: Mutex<State>,
}

enum State {
    Unlimited,
    TokenBucket(TokenBucket),
    Sliding(SlidingLog),
    Fixed(FixedWindow),
}

impl State {
    fn start(limit: Option<Limit>, now: Instant) -> Self {
        match limit {
            None => Self::Unlimited,
            Some(Limit::TokenBucket(rate)) => Self::TokenBucket(TokenBucket::new(rate, now)),
            Some(Limit::SlidingWindow {
                requests,
                window,
                count_rejected,
            }) => Self::Sliding(SlidingLog::new(requests, window, count_rejected)),
            Some(Limit::FixedWindow { requests, window }) => {
                Self::Fixed(FixedWindow::new(requests, window))
            }
        }
    }

    fn limit(&self) -> Option<Limit> {
        match self {
            Self::Unlimited => None,
            Self::TokenBucket(bucket) => Some(Limit::TokenBucket(bucket.limit())),
            Self::Sliding(log) => Some(Limit::SlidingWindow {
                requests: log.requests(),
                window: log.window(),
                count_rejected: log.count_rejected(),
            }),
            Self::Fixed(fixed) => Some(Limit::FixedWindow {
                requests: fixed.requests(),
                window: fixed.window(),
            }),
        }
    }
}

impl Limiter {
    pub(crate) fn new(limit: Option<Limit>, now: Instant) -> Self {
        Self {
            state: Mutex::new(State::start(limit, now)),
        }
    }

    pub(crate) fn limit(&self) -> Option<Limit> {
        self.lock().limit()
    }

    /// A token bucket starts full (each benchmark phase starts clean, as it
    /// always has); windows keep what they counted, so a lowered limit
    /// applies to requests already in the window, as at a real vendor.
    pub(crate) fn set_limit(&self, limit: Option<Limit>, now: Instant) {
        let mut state = self.lock();
        match (&mut *state, limit) {
            (
                State::Sliding(log),
                Some(Limit::SlidingWindow {
                    requests,
                    window,
                    count_rejected,
                }),
            ) => log.relimit(requests, window, count_rejected),
            (State::Fixed(fixed), Some(Limit::FixedWindow { requests, window })) => {
                fixed.relimit(requests, window);
            }
            (state, limit) => *state = State::start(limit, now),
        }
    }

    /// `now` on the monotonic clock and `unix` (the same moment since the
    /// epoch) for epoch-aligned windows.
    pub(crate) fn take(&self, now: Instant, unix: Duration) -> Decision {
        let mut state = self.lock();
        let measure = state
            .limit()
            .map_or(Measure::Sliding(Duration::from_secs(1)), |l| l.measure());
        let (taken, level) = match &mut *state {
            State::Unlimited => (Ok(()), None),
            State::TokenBucket(bucket) => {
                let (taken, level) = bucket.take(now);
                let level = Level {
                    limit: level.burst,
                    remaining: level.remaining(),
                    until_reset: level.until_full(),
                };
                (taken, Some(level))
            }
            State::Sliding(log) => {
                let (taken, standing) = log.take(now);
                (taken, Some(standing.level(log.requests())))
            }
            State::Fixed(fixed) => {
                let (taken, standing) = fixed.take(unix);
                (taken, Some(standing.level(fixed.requests())))
            }
        };
        Decision {
            taken,
            level,
            measure,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is plain numbers, valid even if a holder panicked.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl crate::window::Standing {
    fn level(self, limit: u32) -> Level {
        Level {
            limit,
            remaining: self.remaining,
            until_reset: self.until_reset,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn bucket(per_second: f64, burst: u32) -> Limit {
        Limit::TokenBucket(RateLimit { per_second, burst })
    }

    fn parse(value: serde_json::Value) -> Result<Limit, String> {
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    #[test]
    fn json_reads_the_legacy_shape_and_every_scheme() {
        assert_eq!(
            parse(json!({"per_second": 2.5, "burst": 3})),
            Ok(bucket(2.5, 3))
        );
        assert_eq!(
            parse(json!({"scheme": "token_bucket", "per_second": 10, "burst": 20})),
            Ok(bucket(10.0, 20))
        );
        assert_eq!(
            parse(json!({"scheme": "sliding_window", "requests": 50, "window_ms": 1000})),
            Ok(Limit::sliding_window(50, ms(1000)))
        );
        assert_eq!(
            parse(
                json!({"scheme": "sliding_window", "requests": 5, "window_ms": 30000, "count_rejected": true})
            ),
            Ok(Limit::SlidingWindow {
                requests: 5,
                window: ms(30_000),
                count_rejected: true
            })
        );
        assert_eq!(
            parse(json!({"scheme": "fixed_window", "requests": 200, "window_ms": 30000})),
            Ok(Limit::fixed_window(200, ms(30_000)))
        );
        // Written back tagged, and read again unchanged.
        for limit in [
            bucket(2.5, 3),
            Limit::sliding_window(50, ms(1000)),
            Limit::fixed_window(200, ms(60_000)),
        ] {
            let value = serde_json::to_value(limit).unwrap_or_default();
            assert!(value["scheme"].is_string(), "{value}");
            assert_eq!(parse(value), Ok(limit));
        }
        assert_eq!(
            serde_json::to_value(bucket(10.0, 20)).ok(),
            Some(json!({"scheme": "token_bucket", "per_second": 10.0, "burst": 20}))
        );
        // A reader that only knows the legacy shape still reads a token bucket.
        let legacy: Result<RateLimit, _> =
            serde_json::from_value(serde_json::to_value(bucket(10.0, 20)).unwrap_or_default());
        assert!(legacy.is_ok());
    }

    #[test]
    fn json_mistakes_are_named() {
        for (bad, expected) in [
            (json!({"scheme": "leaky"}), "unknown rate-limit scheme"),
            (json!({"per_second": 1}), "needs `burst`"),
            (
                json!({"scheme": "sliding_window", "window_ms": 1000}),
                "needs `requests`",
            ),
            (
                json!({"scheme": "fixed_window", "requests": 1}),
                "needs `window_ms`",
            ),
            (
                json!({"scheme": "fixed_window", "requests": 1, "window_ms": 0}),
                "at least 1 ms",
            ),
            (
                json!({"scheme": "sliding_window", "requests": 1, "window_ms": 1000, "burst": 2}),
                "`burst` does not apply",
            ),
            (
                json!({"scheme": "fixed_window", "requests": 1, "window_ms": 1000, "count_rejected": true}),
                "`count_rejected` does not apply",
            ),
            (
                json!({"per_second": 1, "burst": 1, "window_ms": 5}),
                "`window_ms` does not apply",
            ),
            (
                json!({"per_second": 1, "burst": 1, "typo": 5}),
                "unknown field",
            ),
        ] {
            let error = parse(bad.clone()).expect_err("accepted");
            assert!(error.contains(expected), "{bad}: {error}");
        }
    }

    #[test]
    fn text_form() {
        let read = |text: &str| text.parse::<Limit>();
        assert_eq!(read("50/1s"), Ok(Limit::sliding_window(50, ms(1000))));
        assert_eq!(
            read("sliding:600/1m"),
            Ok(Limit::sliding_window(600, ms(60_000)))
        );
        assert_eq!(
            read("sliding:5/500ms,count-rejected"),
            Ok(Limit::SlidingWindow {
                requests: 5,
                window: ms(500),
                count_rejected: true
            })
        );
        assert_eq!(
            read("fixed:200/30s"),
            Ok(Limit::fixed_window(200, ms(30_000)))
        );
        assert_eq!(read("token-bucket:10/1s,burst=20"), Ok(bucket(10.0, 20)));
        assert_eq!(read("token-bucket:30/1m"), Ok(bucket(0.5, 30)));
        for bad in [
            "",
            "50",
            "x/1s",
            "50/1",
            "50/0s",
            "fixed:1/1s,count-rejected",
            "leaky:1/1s",
            "sliding:1/1s,burst=2",
            "token-bucket:1/1s,burst=x",
        ] {
            assert!(read(bad).is_err(), "{bad}");
        }
        assert_eq!(read("leaky:1/1s"), Err(LimitError::Scheme("leaky".into())));
    }

    #[test]
    fn windows_read_with_units() {
        assert_eq!(parse_window("500ms"), Ok(ms(500)));
        assert_eq!(parse_window("1.5s"), Ok(ms(1500)));
        assert_eq!(parse_window("2m"), Ok(ms(120_000)));
        assert_eq!(parse_window("1h"), Ok(ms(3_600_000)));
        for bad in ["", "1", "s", "1d", "-1s", "1.2.3s"] {
            assert!(parse_window(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rates_and_windows_for_the_statistics() {
        assert_eq!(Limit::sliding_window(200, ms(30_000)).window(), ms(30_000));
        assert_eq!(bucket(10.0, 20).window(), ms(1000));
        assert!((Limit::fixed_window(600, ms(60_000)).per_second() - 10.0).abs() < 1e-9);
        assert!((bucket(10.0, 20).per_second() - 10.0).abs() < 1e-9);
        assert_eq!(
            Limit::fixed_window(1, ms(5)).measure(),
            Measure::Fixed(ms(5))
        );
        assert_eq!(bucket(1.0, 1).measure(), Measure::Sliding(ms(1000)));
    }

    #[test]
    fn limiter_applies_each_scheme_and_reports_its_level() {
        let t0 = Instant::now();
        let unix = ms(1_700_000_000_000);
        let unlimited = Limiter::new(None, t0);
        assert!((0..1000).all(|_| unlimited.take(t0, unix).taken.is_ok()));
        assert!(unlimited.take(t0, unix).level.is_none());

        let sliding = Limiter::new(Some(Limit::sliding_window(2, ms(1000))), t0);
        assert!(sliding.take(t0, unix).taken.is_ok());
        let second = sliding.take(t0 + ms(10), unix);
        assert!(second.taken.is_ok());
        assert_eq!(
            second.level,
            Some(Level {
                limit: 2,
                remaining: 0,
                until_reset: ms(1000)
            })
        );
        assert_eq!(sliding.take(t0 + ms(20), unix).taken, Err(ms(980)));

        let fixed = Limiter::new(Some(Limit::fixed_window(1, ms(1000))), t0);
        assert!(fixed.take(t0, unix + ms(200)).taken.is_ok());
        assert_eq!(fixed.take(t0, unix + ms(300)).taken, Err(ms(700)));
        assert!(fixed.take(t0, unix + ms(1000)).taken.is_ok());

        let tokens = Limiter::new(Some(bucket(1.0, 1)), t0);
        let first = tokens.take(t0, unix);
        assert_eq!(
            first.level,
            Some(Level {
                limit: 1,
                remaining: 0,
                until_reset: ms(1000)
            })
        );
        assert_eq!(tokens.take(t0, unix).taken, Err(ms(1000)));
    }

    #[test]
    fn a_new_limit_refills_a_bucket_but_windows_remember() {
        let t0 = Instant::now();
        let unix = ms(1_700_000_000_000);
        let tokens = Limiter::new(Some(bucket(1.0, 1)), t0);
        assert!(tokens.take(t0, unix).taken.is_ok());
        assert!(tokens.take(t0, unix).taken.is_err());
        tokens.set_limit(Some(bucket(1.0, 2)), t0);
        assert_eq!(tokens.limit(), Some(bucket(1.0, 2)));
        assert!(tokens.take(t0, unix).taken.is_ok());
        assert!(tokens.take(t0, unix).taken.is_ok());

        // Halving a sliding window mid-run: the requests already counted count.
        let sliding = Limiter::new(Some(Limit::sliding_window(4, ms(1000))), t0);
        for _ in 0..3 {
            assert!(sliding.take(t0, unix).taken.is_ok());
        }
        sliding.set_limit(Some(Limit::sliding_window(2, ms(1000))), t0);
        assert_eq!(sliding.limit(), Some(Limit::sliding_window(2, ms(1000))));
        assert!(sliding.take(t0 + ms(500), unix).taken.is_err());
        assert!(sliding.take(t0 + ms(1000), unix).taken.is_ok());

        let fixed = Limiter::new(Some(Limit::fixed_window(2, ms(1000))), t0);
        assert!(fixed.take(t0, unix).taken.is_ok());
        fixed.set_limit(Some(Limit::fixed_window(1, ms(1000))), t0);
        assert!(fixed.take(t0, unix).taken.is_err());

        // Another scheme, or none, starts from scratch.
        sliding.set_limit(Some(Limit::fixed_window(1, ms(1000))), t0);
        assert!(sliding.take(t0 + ms(1000), unix).taken.is_ok());
        sliding.set_limit(None, t0);
        assert_eq!(sliding.limit(), None);
        assert!(sliding.take(t0, unix).taken.is_ok());
    }

    #[test]
    fn display_names_the_scheme() {
        assert_eq!(
            Limit::sliding_window(50, ms(1000)).to_string(),
            "sliding window, 50 per 1s"
        );
        assert_eq!(
            Limit::fixed_window(200, ms(30_000)).to_string(),
            "fixed windows, 200 per 30s"
        );
        assert_eq!(bucket(10.0, 20).to_string(), "token bucket, 10/s, burst 20");
    }
}
