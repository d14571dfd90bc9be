//! The shipped example configuration never lets the fleet exceed a vendor's
//! documented limit (VENDORS.md), counted the way the vendor counts.

use std::time::Duration;

use rolecall_common::config::{self, Limit};

/// A limit as a vendor documents it.
enum Documented {
    /// A token bucket: `rate` per second, `burst` at once (Lever).
    TokenBucket { rate: f64, burst: f64 },
    /// At most `requests` in any window of `window` (Miro, Okta, Zoom).
    Window { requests: f64, window: Duration },
}

/// The most requests a limit lets through in any window of `window`:
/// a full burst, then the sustained rate.
fn most_in(limit: &Limit, window: Duration) -> f64 {
    f64::from(limit.burst.get() - 1) + (limit.per_second * window.as_secs_f64()).ceil()
}

fn within(name: &str, limit: &Limit, documented: &Documented) {
    match documented {
        Documented::TokenBucket { rate, burst } => {
            assert!(
                limit.per_second <= *rate && f64::from(limit.burst.get()) <= *burst,
                "{name}: {limit:?} exceeds {rate}/s with bursts of {burst}"
            );
        }
        Documented::Window { requests, window } => {
            let most = most_in(limit, *window);
            assert!(
                most <= *requests,
                "{name}: {limit:?} allows {most} requests per {window:?}, the vendor {requests}"
            );
        }
    }
}

#[test]
fn the_example_configuration_stays_within_every_documented_vendor_limit() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/config/rolecall.example.toml"
    ))
    .unwrap();
    let settings = config::from_toml(&text).expect("the example is valid");
    let minute = Duration::from_secs(60);
    let mut checked = 0;
    for (name, app) in &settings.saas {
        let host = app.base_url.host_str().unwrap_or_default();
        let documented = match host {
            // VENDORS.md §2.6: 10 requests/s per key, bursts of 20.
            "api.lever.co" => Documented::TokenBucket {
                rate: 10.0,
                burst: 20.0,
            },
            // §3.6: GET /Users 200 per 30 s.
            "miro.com" | "api.miro.com" => Documented::Window {
                requests: 200.0,
                window: Duration::from_secs(30),
            },
            // §5: Users endpoints 600 per minute (plan-dependent).
            h if h.ends_with(".okta.com") => Documented::Window {
                requests: 600.0,
                window: minute,
            },
            // §8: Pro plan, "Medium" APIs, 20 per second.
            "api.zoom.us" => Documented::Window {
                requests: 20.0,
                window: Duration::from_secs(1),
            },
            // §1.7: Mosyle documents no limit.
            h if h.contains("mosyle.com") => continue,
            other => panic!("{name}: no documented limit known for {other}; add it here"),
        };
        within(name, &app.rate.limit(), &documented);
        for bucket in &app.rate.buckets {
            within(
                &format!("{name}.{}", bucket.name),
                &bucket.limit,
                &documented,
            );
        }
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} SaaS apps were checked");
}

#[test]
fn the_old_miro_example_would_have_been_caught() {
    // 6.5/s with bursts of 10 lets 205 requests through in 30 s.
    let limit = Limit {
        per_second: 6.5,
        burst: std::num::NonZeroU32::new(10).unwrap(),
        window: Duration::from_secs(1),
    };
    assert_eq!(most_in(&limit, Duration::from_secs(30)), 204.0);
    assert!(most_in(&limit, Duration::from_secs(30)) > 200.0);
}
