//! A SaaS app's rate limit, written the way its vendor documents it.
//!
//! Vendors state limits in two shapes, and both are accepted:
//!
//! - a token bucket — `per_second = 10, burst = 20` (Lever);
//! - a window — `requests = 200, per = "30s"` (Miro's SCIM API), counted
//!   per sliding or fixed window by the vendor.
//!
//! Vendors that count endpoint groups separately (Okta) get named
//! `buckets`, each with its own limit and the request paths it covers.
//!
//! The number configured is the vendor's own; the fleet turns it into safe
//! pacing itself: it leaves a margin for network jitter (`margin`, derived
//! from the latencies it observes unless given), so a window never holds one
//! request more than the vendor allows, however requests happen to arrive.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::Duration;

use serde::Deserialize;

/// The `rate` table as written.
#[allow(missing_docs)]
#[derive(Debug, Deserialize, Clone, Default)]
pub struct RawRate {
    #[serde(default)]
    pub per_second: Option<f64>,
    #[serde(default)]
    pub burst: Option<u32>,
    #[serde(default)]
    pub requests: Option<u32>,
    #[serde(default)]
    pub per: Option<String>,
    #[serde(default)]
    pub margin: Option<String>,
    #[serde(default)]
    pub max_in_flight: Option<u32>,
    #[serde(default)]
    pub adaptive: Option<bool>,
    #[serde(default)]
    pub max_pause: Option<String>,
    #[serde(default)]
    pub buckets: BTreeMap<String, RawBucket>,
}

/// One named bucket as written.
#[allow(missing_docs)]
#[derive(Debug, Deserialize, Clone, Default)]
pub struct RawBucket {
    #[serde(default)]
    pub per_second: Option<f64>,
    #[serde(default)]
    pub burst: Option<u32>,
    #[serde(default)]
    pub requests: Option<u32>,
    #[serde(default)]
    pub per: Option<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
}

/// A limit: how many requests per window, and how many at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    /// Sustained requests per second (requests ÷ window).
    pub per_second: f64,
    /// Requests allowed back to back after idling.
    pub burst: NonZeroU32,
    /// The vendor's counting window (1 s for a `per_second` limit).
    pub window: Duration,
}

impl Limit {
    /// Requests the vendor allows per window.
    pub fn requests(&self) -> f64 {
        self.per_second * self.window.as_secs_f64()
    }

    /// Requests per window when the vendor counts a window (N per window,
    /// or a rate without a burst): the fleet logs its sends against it. A
    /// token bucket with a burst is not a window.
    pub fn counted(&self) -> Option<u64> {
        (self.burst.get() == 1).then(|| self.requests().floor().max(1.0) as u64)
    }
}

/// How much room the fleet leaves for network jitter in each window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Margin {
    /// Derived from the spread of observed vendor latencies.
    Auto,
    /// As configured.
    Fixed(Duration),
}

/// A vendor's rate limit, for the whole fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct RateSettings {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Requests allowed at once after idling.
    pub burst: NonZeroU32,
    /// The window the vendor counts in (1 s for `per_second` limits).
    pub window: Duration,
    /// Room left for network jitter per window.
    pub margin: Margin,
    /// Requests in flight at once across the fleet (`None`: no cap).
    pub max_in_flight: Option<NonZeroU32>,
    /// Whether the fleet slows down when the vendor throttles below the limit.
    pub adaptive: bool,
    /// Longest pause a vendor's `Retry-After` (or reset time) may impose.
    pub max_pause: Duration,
    /// Endpoint groups the vendor counts separately.
    pub buckets: Vec<BucketSettings>,
}

impl RateSettings {
    /// A plain token-bucket limit with defaults for everything else (tests, tools).
    pub fn per_second(per_second: f64, burst: u32) -> Self {
        Self {
            per_second,
            burst: NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN),
            window: Duration::from_secs(1),
            margin: Margin::Auto,
            max_in_flight: None,
            adaptive: true,
            max_pause: DEFAULT_MAX_PAUSE,
            buckets: Vec::new(),
        }
    }

    /// The default bucket's limit.
    pub fn limit(&self) -> Limit {
        Limit {
            per_second: self.per_second,
            burst: self.burst,
            window: self.window,
        }
    }
}

/// An endpoint group with a limit of its own.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketSettings {
    /// The bucket's name (`saas.<app>.rate.buckets.<name>`).
    pub name: String,
    /// Path patterns: `*` matches one path segment, a trailing `/**` any rest.
    pub paths: Vec<String>,
    /// HTTP methods covered (upper case); empty means all.
    pub methods: Vec<String>,
    /// Its limit.
    pub limit: Limit,
}

impl BucketSettings {
    /// Whether a request with this method and path counts against the bucket.
    pub fn covers(&self, method: &str, path: &str) -> bool {
        (self.methods.is_empty() || self.methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
            && self.paths.iter().any(|p| path_matches(p, path))
    }
}

/// Matches a path against a pattern: `*` is one segment, a trailing `**`
/// any number of segments; other segments compare literally.
pub fn path_matches(pattern: &str, path: &str) -> bool {
    let pat: Vec<&str> = pattern.trim_matches('/').split('/').collect();
    let got: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mut i = 0;
    for (n, p) in pat.iter().enumerate() {
        if *p == "**" && n == pat.len() - 1 {
            return got.len() >= i;
        }
        match got.get(i) {
            Some(g) if *p == "*" && !g.is_empty() => {}
            Some(g) if p == g => {}
            _ => return false,
        }
        i += 1;
    }
    i == got.len()
}

/// A vendor `Retry-After` longer than this is capped (and reported).
pub const DEFAULT_MAX_PAUSE: Duration = Duration::from_secs(300);

/// Parses a duration written as `1s`, `30s`, `1m`, `250ms`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration like \"1s\", \"30s\" or \"1m\" ({e})"))
}

/// What a limit looks like once its shape is known.
struct Shape {
    per_second: Option<f64>,
    burst: Option<u32>,
    requests: Option<u32>,
    per: Option<String>,
}

fn validate_limit(
    shape: Shape,
    key: &dyn Fn(&str) -> String,
    bad: &mut dyn FnMut(String, String),
) -> Option<Limit> {
    let window_form = shape.requests.is_some() || shape.per.is_some();
    let mut ok = true;
    let (per_second, window, default_burst) = if window_form {
        if shape.per_second.is_some() {
            bad(
                key("per_second"),
                "give either per_second (and burst) or requests and per, not both".into(),
            );
            ok = false;
        }
        let requests = match shape.requests {
            Some(0) => {
                bad(key("requests"), "must be at least 1".into());
                ok = false;
                1
            }
            Some(n) => n,
            None => {
                bad(
                    key("requests"),
                    "missing: how many requests per window".into(),
                );
                ok = false;
                1
            }
        };
        let window = match shape.per.as_deref().map(parse_duration) {
            Some(Ok(w)) if !w.is_zero() => w,
            Some(Ok(_)) => {
                bad(key("per"), "must be longer than zero".into());
                ok = false;
                Duration::from_secs(1)
            }
            Some(Err(e)) => {
                bad(key("per"), e);
                ok = false;
                Duration::from_secs(1)
            }
            None => {
                bad(
                    key("per"),
                    "missing: the window, such as \"1s\" or \"30s\"".into(),
                );
                ok = false;
                Duration::from_secs(1)
            }
        };
        // A window limit allows `requests` in *any* window: paced evenly,
        // without a burst, every window holds at most that many.
        (f64::from(requests) / window.as_secs_f64(), window, 1)
    } else {
        match shape.per_second {
            Some(r) if r.is_finite() && r > 0.0 => {
                (r, Duration::from_secs(1), (r.ceil() as u32).max(1))
            }
            Some(r) => {
                bad(
                    key("per_second"),
                    format!("must be a positive number, got {r}"),
                );
                return None;
            }
            None => {
                bad(
                    key("per_second"),
                    "missing: give per_second (and burst), or requests and per".into(),
                );
                return None;
            }
        }
    };
    let burst = match shape.burst {
        None => NonZeroU32::new(default_burst),
        Some(b) => NonZeroU32::new(b),
    };
    if burst.is_none() {
        bad(key("burst"), "must be at least 1".into());
        ok = false;
    }
    ok.then(|| Limit {
        per_second,
        burst: burst.unwrap_or(NonZeroU32::MIN),
        window,
    })
}

/// Validates the `rate` table of SaaS app `name`, reporting every problem.
pub(crate) fn validate_rate(
    name: &str,
    raw: Option<RawRate>,
    bad: &mut dyn FnMut(String, String),
) -> Option<RateSettings> {
    let key = |k: &str| format!("saas.{name}.rate.{k}");
    let Some(r) = raw else {
        bad(
            format!("saas.{name}.rate"),
            "missing: every SaaS app needs a rate limit (per_second and burst, or requests and per)"
                .into(),
        );
        return None;
    };
    let mut ok = true;
    let limit = validate_limit(
        Shape {
            per_second: r.per_second,
            burst: r.burst,
            requests: r.requests,
            per: r.per.clone(),
        },
        &key,
        bad,
    );
    if r.max_in_flight == Some(0) {
        bad(
            key("max_in_flight"),
            "must be at least 1 (leave it out for no cap)".into(),
        );
        ok = false;
    }
    let margin = match r.margin.as_deref().map(str::trim) {
        None | Some("auto") => Margin::Auto,
        Some(text) => match parse_duration(text) {
            Ok(d) => Margin::Fixed(d),
            Err(e) => {
                bad(key("margin"), format!("{e}, or \"auto\""));
                ok = false;
                Margin::Auto
            }
        },
    };
    let max_pause = match r.max_pause.as_deref().map(parse_duration) {
        None => DEFAULT_MAX_PAUSE,
        Some(Ok(d)) if !d.is_zero() => d,
        Some(Ok(_)) => {
            bad(key("max_pause"), "must be longer than zero".into());
            ok = false;
            DEFAULT_MAX_PAUSE
        }
        Some(Err(e)) => {
            bad(key("max_pause"), e);
            ok = false;
            DEFAULT_MAX_PAUSE
        }
    };
    let mut buckets = Vec::new();
    for (bucket, b) in r.buckets {
        let bkey = |k: &str| format!("saas.{name}.rate.buckets.{bucket}.{k}");
        if !crate::config::is_name(&bucket) {
            bad(
                format!("saas.{name}.rate.buckets.{bucket}"),
                "bucket names use lower-case letters, digits, '_' and '-'".into(),
            );
            ok = false;
        }
        if b.paths.is_empty() {
            bad(
                bkey("paths"),
                "missing: the request paths this bucket counts, e.g. [\"/api/v1/users/*/roles\"]"
                    .into(),
            );
            ok = false;
        }
        for (i, p) in b.paths.iter().enumerate() {
            if !p.starts_with('/') {
                bad(
                    format!("{}[{i}]", bkey("paths")),
                    format!("`{p}` must start with '/'"),
                );
                ok = false;
            }
        }
        let limit = validate_limit(
            Shape {
                per_second: b.per_second,
                burst: b.burst,
                requests: b.requests,
                per: b.per,
            },
            &bkey,
            bad,
        );
        if let Some(limit) = limit {
            buckets.push(BucketSettings {
                name: bucket.clone(),
                paths: b.paths,
                methods: b.methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
                limit,
            });
        } else {
            ok = false;
        }
    }
    let limit = limit?;
    ok.then(|| RateSettings {
        per_second: limit.per_second,
        burst: limit.burst,
        window: limit.window,
        margin,
        max_in_flight: r.max_in_flight.and_then(NonZeroU32::new),
        adaptive: r.adaptive.unwrap_or(true),
        max_pause,
        buckets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: RawRate) -> Result<RateSettings, Vec<String>> {
        let mut problems = Vec::new();
        let got = validate_rate("app", Some(raw), &mut |k, r| {
            problems.push(format!("{k}: {r}"))
        });
        got.ok_or(problems)
    }

    #[test]
    fn a_window_limit_is_paced_evenly_without_a_burst() {
        let r = check(RawRate {
            requests: Some(200),
            per: Some("30s".into()),
            ..Default::default()
        })
        .unwrap();
        assert!((r.per_second - 200.0 / 30.0).abs() < 1e-9);
        assert_eq!(r.window, Duration::from_secs(30));
        assert_eq!(r.burst.get(), 1);
        assert_eq!(r.margin, Margin::Auto);
        assert!((r.limit().requests() - 200.0).abs() < 1e-9);
    }

    #[test]
    fn per_second_keeps_its_token_bucket_meaning() {
        let r = check(RawRate {
            per_second: Some(10.0),
            burst: Some(20),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            (r.per_second, r.burst.get(), r.window),
            (10.0, 20, Duration::from_secs(1))
        );
    }

    #[test]
    fn every_problem_is_named() {
        let problems = check(RawRate {
            per_second: Some(5.0),
            requests: Some(0),
            per: Some("soon".into()),
            margin: Some("lots".into()),
            buckets: BTreeMap::from([(
                "roles".to_string(),
                RawBucket {
                    requests: Some(10),
                    ..Default::default()
                },
            )]),
            ..Default::default()
        })
        .unwrap_err();
        let keys: Vec<&str> = problems
            .iter()
            .map(|p| p.split(':').next().unwrap())
            .collect();
        for k in [
            "saas.app.rate.per_second",
            "saas.app.rate.requests",
            "saas.app.rate.per",
            "saas.app.rate.margin",
            "saas.app.rate.buckets.roles.paths",
            "saas.app.rate.buckets.roles.per",
        ] {
            assert!(keys.contains(&k), "{k} missing from {problems:?}");
        }
    }

    #[test]
    fn bucket_paths_match_segments() {
        assert!(path_matches(
            "/api/v1/users/*/roles",
            "/api/v1/users/00u1/roles"
        ));
        assert!(!path_matches("/api/v1/users/*/roles", "/api/v1/users/00u1"));
        assert!(!path_matches(
            "/api/v1/users/*/roles",
            "/api/v1/users//roles"
        ));
        assert!(path_matches("/api/v1/users", "/api/v1/users/"));
        assert!(path_matches("/api/v1/**", "/api/v1/users/x/roles"));
        assert!(!path_matches("/api/v1/users", "/api/v1/users/x"));
    }
}
