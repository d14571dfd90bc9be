//! Rate limits as vendors count them, over real HTTP: sliding and fixed
//! windows, per-endpoint buckets with their headers, limits changed at run
//! time, `Retry-After` per vendor, the network's latency and jitter, and the
//! statistics a benchmark reads.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{KEY, answer, header, start};
use reqwest::header::HeaderMap;
use rolecall_sim::{BucketSpec, Limit, RateLimit, SimConfig, SimHandle, StatsSnapshot, Vendor};
use serde_json::{Value, json};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn now_unix() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
}

/// One Lever lookup: status and `Retry-After`.
async fn lever(sim: &SimHandle) -> (u16, Option<String>) {
    let (status, headers, _) = answer(
        reqwest::Client::new()
            .get(format!("{}/v1/users", sim.base_url()))
            .basic_auth(KEY, None::<&str>)
            .query(&[("email", "nobody@example.com")]),
    )
    .await;
    (status, header(&headers, "retry-after").map(str::to_owned))
}

async fn okta(sim: &SimHandle, path: &str) -> (u16, HeaderMap, Value) {
    answer(
        reqwest::Client::new()
            .get(format!("{}/api/v1{path}", sim.base_url()))
            .header("Authorization", format!("SSWS {KEY}")),
    )
    .await
}

/// `X-Rate-Limit-Limit`, `-Remaining`, `-Reset`.
fn okta_quota(headers: &HeaderMap) -> (u64, u64, u64) {
    let number = |name| {
        header(headers, name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    (
        number("x-rate-limit-limit"),
        number("x-rate-limit-remaining"),
        number("x-rate-limit-reset"),
    )
}

/// Sleeps until `offset` past the next multiple of `window` on the wall
/// clock, so a burst lands inside one fixed window.
async fn just_after_boundary(window: Duration, offset: Duration) -> Duration {
    let now = now_unix().as_nanos();
    let window_ns = window.as_nanos();
    let next = (now / window_ns + 1) * window_ns;
    let wait = u64::try_from(next - now).expect("fits");
    tokio::time::sleep(Duration::from_nanos(wait) + offset).await;
    Duration::from_nanos(u64::try_from(next).expect("fits"))
}

#[tokio::test]
async fn a_sliding_window_refuses_the_n_plus_first_request_within_the_window() {
    let sim = start(SimConfig {
        limit: Some(Limit::sliding_window(3, ms(1500))),
        retry_after: Some(true),
        ..SimConfig::default()
    })
    .await;
    let started = Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(lever(&sim).await);
    }
    assert_eq!(
        statuses,
        [
            (200, None),
            (200, None),
            (200, None),
            (429, Some("2".to_owned()))
        ]
    );
    // Still within 1.5 s of the first: still refused.
    assert!(started.elapsed() < ms(1000), "too slow to judge");
    assert_eq!(lever(&sim).await.0, 429);
    // Once the first has left the window, one more gets through.
    tokio::time::sleep(ms(1500).saturating_sub(started.elapsed()) + ms(100)).await;
    assert_eq!(lever(&sim).await.0, 200);

    let stats = sim.stats();
    let bucket = &stats.buckets["default"];
    assert_eq!(bucket.limit, Some(Limit::sliding_window(3, ms(1500))));
    assert_eq!((bucket.window_ms, bucket.fixed_windows), (1500, false));
    assert_eq!(
        (bucket.requests, bucket.accepted, bucket.throttled),
        (6, 4, 2)
    );
    // The vendor never let more than 3 through in any 1.5 s; the fleet sent 5.
    assert_eq!(bucket.peak_accepted_in_window, 3);
    assert_eq!(bucket.peak_in_window, 5);
}

#[tokio::test]
async fn refused_requests_fill_the_window_when_the_vendor_counts_them() {
    let sim = start(SimConfig {
        limit: Some(Limit::SlidingWindow {
            requests: 2,
            window: ms(600),
            count_rejected: true,
        }),
        ..SimConfig::default()
    })
    .await;
    assert_eq!(lever(&sim).await.0, 200);
    assert_eq!(lever(&sim).await.0, 200);
    tokio::time::sleep(ms(300)).await;
    assert_eq!(lever(&sim).await.0, 429);
    assert_eq!(lever(&sim).await.0, 429);
    // The first two have left the window, but the two knocks still fill it.
    tokio::time::sleep(ms(350)).await;
    assert_eq!(lever(&sim).await.0, 429);
    let bucket = &sim.stats().buckets["default"];
    assert_eq!((bucket.accepted, bucket.throttled), (2, 3));
}

#[tokio::test]
async fn fixed_windows_reset_at_the_boundary_and_okta_reports_it() {
    let window = Duration::from_secs(2);
    let sim = start(SimConfig {
        vendor: Vendor::Okta,
        limit: Some(Limit::fixed_window(2, window)),
        ..SimConfig::default()
    })
    .await;
    let start = just_after_boundary(window, ms(20)).await;
    let end = (start + window).as_secs();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (status, headers, body) = okta(&sim, "/users?limit=1").await;
        let (limit, remaining, reset) = okta_quota(&headers);
        assert_eq!((limit, reset), (2, end), "{body}");
        assert!(header(&headers, "retry-after").is_none());
        seen.push((status, remaining));
    }
    assert_eq!(seen, [(200, 1), (200, 0), (429, 0)]);
    assert!(now_unix() < start + window, "too slow to judge");

    // A new window: the count starts over, and the reset moves on.
    tokio::time::sleep((start + window).saturating_sub(now_unix()) + ms(20)).await;
    let (status, headers, _) = okta(&sim, "/users?limit=1").await;
    assert_eq!(status, 200);
    assert_eq!(okta_quota(&headers), (2, 1, end + 2));

    let stats = sim.stats();
    let bucket = &stats.buckets["default"];
    assert!(bucket.fixed_windows);
    assert_eq!(bucket.window_ms, 2000);
    // Counted per aligned window, as the vendor does.
    assert_eq!(
        (bucket.peak_in_window, bucket.peak_accepted_in_window),
        (3, 2)
    );
}

#[tokio::test]
async fn okta_endpoints_draw_on_separate_buckets_and_report_their_own() {
    let minute = Duration::from_secs(60);
    let sim = start(SimConfig {
        vendor: Vendor::Okta,
        users: 20,
        buckets: vec![
            BucketSpec::new(
                "roles",
                "/api/v1/users/*/roles",
                Some(Limit::sliding_window(3, minute)),
            ),
            BucketSpec::new(
                "search",
                "/api/v1/users",
                Some(Limit::sliding_window(2, minute)),
            ),
        ],
        ..SimConfig::default()
    })
    .await;
    let user = sim.population().users[0].clone();
    let search = format!("/users?search=profile.email%20eq%20%22{}%22", user.email);
    let roles = format!("/users/{}/roles", user.id);

    let before = now_unix().as_secs();
    let mut searches = Vec::new();
    for _ in 0..3 {
        let (status, headers, body) = okta(&sim, &search).await;
        let (limit, remaining, reset) = okta_quota(&headers);
        assert_eq!(limit, 2);
        assert!((before + 59..=before + 61).contains(&reset), "{reset}");
        if status == 429 {
            assert_eq!(body["errorCode"], "E0000047");
            assert!(header(&headers, "retry-after").is_none());
        }
        searches.push((status, remaining));
    }
    assert_eq!(searches, [(200, 1), (200, 0), (429, 0)]);

    // The search bucket is spent; the roles bucket is untouched.
    let mut reads = Vec::new();
    for _ in 0..4 {
        let (status, headers, _) = okta(&sim, &roles).await;
        let (limit, remaining, _) = okta_quota(&headers);
        reads.push((status, limit, remaining));
    }
    assert_eq!(reads, [(200, 3, 2), (200, 3, 1), (200, 3, 0), (429, 3, 0)]);

    // Anything else goes to the default bucket: unlimited, Okta's nominal 600.
    let (status, headers, _) = okta(&sim, &format!("/users/{}", user.id)).await;
    assert_eq!(status, 200);
    assert_eq!(okta_quota(&headers).0, 600);

    let stats = sim.stats();
    let counts = |name: &str| {
        let b = &stats.buckets[name];
        (
            b.requests,
            b.accepted,
            b.throttled,
            b.peak_accepted_in_window,
        )
    };
    assert_eq!(counts("search"), (3, 2, 1, 2));
    assert_eq!(counts("roles"), (4, 3, 1, 3));
    assert_eq!(counts("default"), (1, 1, 0, 1));
    assert_eq!(
        stats.buckets["roles"].pattern.as_deref(),
        Some("/api/v1/users/*/roles")
    );
    assert_eq!(stats.buckets["default"].limit, None);
    assert_eq!((stats.requests, stats.received), (8, 8));

    // Each bucket's limit changes on its own, over HTTP too.
    sim.set_bucket_limit("search", None).expect("known bucket");
    assert_eq!(okta(&sim, &search).await.0, 200);
    assert_eq!(okta(&sim, &roles).await.0, 429);
    assert!(sim.set_bucket_limit("nope", None).is_err());
}

#[tokio::test]
async fn the_rate_endpoint_takes_every_scheme_per_bucket() {
    let sim = start(SimConfig {
        rate: Some(RateLimit {
            per_second: 100.0,
            burst: 100,
        }),
        buckets: vec![BucketSpec::new("one", "/v1/users/*", None)],
        ..SimConfig::default()
    })
    .await;
    let client = reqwest::Client::new();
    let url = format!("{}/_sim/rate", sim.base_url());
    let put = |body: Value, bucket: Option<&str>| {
        let mut request = client.put(&url).json(&body);
        if let Some(bucket) = bucket {
            request = request.query(&[("bucket", bucket)]);
        }
        request.send()
    };

    // The legacy shape still sets a token bucket; the answer names the scheme.
    let response = put(json!({"per_second": 5, "burst": 2}), None)
        .await
        .expect("request failed");
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("JSON");
    assert_eq!(
        answer,
        json!({"scheme": "token_bucket", "per_second": 5.0, "burst": 2})
    );
    // Older readers still understand it.
    let legacy: RateLimit = serde_json::from_value(answer).expect("a RateLimit");
    assert_eq!(legacy.burst, 2);

    // A sliding window, halved mid-run: what was counted stays counted.
    let window = json!({"scheme": "sliding_window", "requests": 4, "window_ms": 60000});
    assert_eq!(put(window, None).await.expect("sent").status(), 200);
    for _ in 0..3 {
        assert_eq!(lever(&sim).await.0, 200);
    }
    let halved = json!({"scheme": "sliding_window", "requests": 2, "window_ms": 60000});
    assert_eq!(put(halved, None).await.expect("sent").status(), 200);
    assert_eq!(lever(&sim).await.0, 429);
    assert_eq!(sim.limit(), Some(Limit::sliding_window(2, ms(60_000))));

    // Per bucket, by name; fixed windows too.
    let fixed = json!({"scheme": "fixed_window", "requests": 7, "window_ms": 30000});
    let response = put(fixed, Some("one")).await.expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(
        sim.bucket_limit("one"),
        Ok(Some(Limit::fixed_window(7, ms(30_000))))
    );
    let read: Option<Limit> = client
        .get(&url)
        .query(&[("bucket", "one")])
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");
    assert_eq!(read, Some(Limit::fixed_window(7, ms(30_000))));

    let response = put(Value::Null, Some("nope")).await.expect("sent");
    assert_eq!(response.status(), 404);
    for bad in [
        json!({"scheme": "sliding_window", "requests": 1}),
        json!({"scheme": "fixed_window", "requests": 1, "window_ms": 0}),
        json!({"scheme": "leaky_bucket"}),
    ] {
        let response = put(bad.clone(), None).await.expect("sent");
        assert!(response.status().is_client_error(), "{bad}");
        let text = response.text().await.unwrap_or_default();
        assert!(!text.is_empty(), "{bad}: the reason is given");
    }
    assert_eq!(sim.limit(), Some(Limit::sliding_window(2, ms(60_000))));
    assert_eq!(put(Value::Null, None).await.expect("sent").status(), 200);
    assert_eq!(sim.limit(), None);
}

#[tokio::test]
async fn stats_report_the_peak_in_the_buckets_own_window() {
    let sim = start(SimConfig {
        limit: Some(Limit::sliding_window(100, Duration::from_secs(10))),
        ..SimConfig::default()
    })
    .await;
    // Two bursts 1.2 s apart: never more than 4 in one second, 7 in ten.
    for _ in 0..4 {
        lever(&sim).await;
    }
    tokio::time::sleep(ms(1200)).await;
    for _ in 0..3 {
        lever(&sim).await;
    }
    let stats: StatsSnapshot = reqwest::get(format!("{}/_sim/stats", sim.base_url()))
        .await
        .expect("request failed")
        .json()
        .await
        .expect("JSON");
    assert_eq!((stats.requests, stats.received, stats.peak_1s), (7, 7, 4));
    let bucket = &stats.buckets["default"];
    assert_eq!((bucket.window_ms, bucket.peak_in_window), (10_000, 7));
    assert_eq!(bucket.peak_accepted_in_window, 7);
    assert_eq!(bucket.limit_per_second, Some(10.0));
    let (first, last) = (
        bucket.first_request_unix_ms.expect("first"),
        bucket.last_request_unix_ms.expect("last"),
    );
    assert!((1200..2500).contains(&(last - first)), "{first}..{last}");
    assert_eq!(bucket.first_accepted_unix_ms, Some(first));
    assert_eq!(stats, sim.stats());
}

#[tokio::test]
async fn retry_after_follows_the_vendor_unless_told_otherwise() {
    // Generic SCIM sends Retry-After by default; switched off, it does not.
    let tight = Some(RateLimit {
        per_second: 0.5,
        burst: 1,
    });
    let sim = start(SimConfig {
        vendor: Vendor::Scim,
        rate: tight,
        retry_after: Some(false),
        ..SimConfig::default()
    })
    .await;
    let users = |sim: &SimHandle| {
        reqwest::Client::new()
            .get(format!("{}/scim/v2/Users", sim.base_url()))
            .bearer_auth(KEY)
    };
    assert_eq!(answer(users(&sim)).await.0, 200);
    let (status, headers, _) = answer(users(&sim)).await;
    assert_eq!((status, header(&headers, "retry-after")), (429, None));

    let sim = start(SimConfig {
        vendor: Vendor::Scim,
        rate: tight,
        ..SimConfig::default()
    })
    .await;
    answer(users(&sim)).await;
    let (status, headers, _) = answer(users(&sim)).await;
    assert_eq!((status, header(&headers, "retry-after")), (429, Some("2")));

    // Okta sends none by default, but can be told to.
    let sim = start(SimConfig {
        vendor: Vendor::Okta,
        rate: tight,
        retry_after: Some(true),
        ..SimConfig::default()
    })
    .await;
    okta(&sim, "/users?limit=1").await;
    let (status, headers, _) = okta(&sim, "/users?limit=1").await;
    assert_eq!((status, header(&headers, "retry-after")), (429, Some("2")));

    assert!(!Vendor::Lever.sends_retry_after());
    assert!(!Vendor::MiroScim.sends_retry_after());
    assert!(!Vendor::Okta.sends_retry_after());
    assert!(!Vendor::Github.sends_retry_after());
    assert!(!Vendor::Zoom.sends_retry_after());
    assert!(Vendor::MosyleBusiness.sends_retry_after());
}

#[tokio::test]
async fn requests_are_counted_half_a_round_trip_after_they_are_sent() {
    let sim = start(SimConfig {
        latency: ms(600),
        ..SimConfig::default()
    })
    .await;
    let started = Instant::now();
    let base = sim.base_url();
    let call = tokio::spawn(async move {
        reqwest::Client::new()
            .get(format!("{base}/v1/users"))
            .basic_auth(KEY, None::<&str>)
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(ms(150)).await;
    let on_the_way = sim.stats();
    assert_eq!((on_the_way.received, on_the_way.requests), (1, 0));
    tokio::time::sleep(ms(300)).await;
    let answering = sim.stats();
    assert_eq!(answering.requests, 1, "counted after 300 ms");
    assert!(sim.requests().is_empty(), "not answered yet");
    let status = call.await.expect("joined").expect("answered");
    assert_eq!(status, 200);
    assert!(started.elapsed() >= ms(600), "{:?}", started.elapsed());
    assert_eq!(sim.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jitter_spreads_round_trips_and_arrivals() {
    let sim = start(SimConfig {
        latency: ms(20),
        jitter: ms(300),
        ..SimConfig::default()
    })
    .await;
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let base = sim.base_url();
        calls.spawn(async move {
            let started = Instant::now();
            let response = reqwest::Client::new()
                .get(format!("{base}/v1/users"))
                .basic_auth(KEY, None::<&str>)
                .send()
                .await
                .expect("answered");
            assert_eq!(response.status(), 200);
            started.elapsed()
        });
    }
    let took: Vec<Duration> = calls.join_all().await;
    let (fastest, slowest) = (
        took.iter().min().copied().unwrap_or_default(),
        took.iter().max().copied().unwrap_or_default(),
    );
    // Between the latency and latency + jitter (plus scheduling slack),
    // and spread out: 16 sums of two uniform draws do not bunch.
    assert!(fastest >= ms(20), "{took:?}");
    assert!(slowest <= ms(320 + 250), "{took:?}");
    assert!(slowest - fastest >= ms(60), "{took:?}");

    // Sent together, they reached the limiter at different moments.
    let log = sim.requests();
    assert_eq!(log.len(), 16);
    let spread = log[15].at_unix_ms - log[0].at_unix_ms;
    assert!(spread >= 30, "arrivals within {spread} ms");
}
